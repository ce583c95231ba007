"""The conformance vectors about a daemon that misbehaves, run against every client at once
or one by one: a wedged daemon (SIGSTOP) and an impostor on the socket path
(``tests/vectors/conformance.json``, ``impostor``)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socketserver
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from coactive_credd.testing.fakeupstream import FakeCoactive

from .conftest import login
from .test_shims import (
    CLIS,
    PROGS,
    SHIM,
    VECTORS,
    SetUp,
    _need,
    cli_argv,
    go_cli,
    prepare,
    run,
    served,
)

__all__ = ["go_cli", "served"]  # fixtures, used here by name


# "success": the conformance set-up with a logged-in daemon and nothing else (no fault)
@pytest.mark.parametrize("served", ["success"], indirect=True)
def test_a_wedged_daemon_costs_every_client_a_bounded_wait(
    served: SetUp, request: pytest.FixtureRequest
) -> None:
    """SIGSTOP the daemon: each CLI gives up with exit 3 and one line within its 30 s
    timeout, the git helper prints nothing for the Coactive host and does not wait at all
    for another. All at once, so the suite waits the 30 s once."""
    go = request.getfixturevalue("go_cli")
    p = prepare(served, {"setup": {}})
    assert p.daemon is not None
    host = p.fake.base_url.split("://", 1)[1]
    helper = [_need("dash"), str(SHIM / "sh" / "git-credential-coactive"), "get"]
    jobs: dict[str, tuple[list[str], str | None]] = {
        **{shim: (cli_argv(shim, go), None) for shim in CLIS},
        "git": (helper, f"protocol=http\nhost={host}\n\n"),
        "git-other-host": (helper, "protocol=https\nhost=example.com\n\n"),
    }
    results: dict[str, tuple[subprocess.CompletedProcess[str], float]] = {}
    os.kill(p.daemon.proc.pid, signal.SIGSTOP)
    try:
        with ThreadPoolExecutor(len(jobs)) as pool:
            futures = {
                name: pool.submit(run, argv, {}, stdin) for name, (argv, stdin) in jobs.items()
            }
            for name, future in futures.items():
                results[name] = future.result()
    finally:
        os.kill(p.daemon.proc.pid, signal.SIGCONT)
    table = {
        name: (r.returncode, round(t, 1), r.stdout, r.stderr) for name, (r, t) in results.items()
    }
    for shim in CLIS:
        code, took, out, err = table[shim]
        assert code == 3 and out == "" and err.count("\n") == 1, table
        assert err.startswith(f"{PROGS[shim]}: ") and took < 45, table
    assert table["git"][:1] + table["git"][2:3] == (0, ""), table
    assert table["git"][1] < 45, table
    assert table["git-other-host"] == (0, table["git-other-host"][1], "", ""), table
    assert table["git-other-host"][1] < 5, table


IMPOSTOR = VECTORS["impostor"]
IMPOSTOR_TOKEN = "impostor-token-0123456789"


class _Impostor(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    received: list[bytes]


@pytest.fixture
def impostor(tmp_path: Path) -> Iterator[tuple[Path, list[bytes]]]:
    """A listener in a folder anyone may write to, answering every request with its own
    token; yields the socket path and the bytes it received."""
    folder = Path(tempfile.mkdtemp(prefix="cci-", dir="/tmp"))
    folder.chmod(int(IMPOSTOR["folder_mode"], 8))
    received: list[bytes] = []

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            data = self.request.recv(65536)
            received.append(data)
            body = json.dumps(
                {
                    "profile": "default",
                    "access_token": IMPOSTOR_TOKEN,
                    "token_type": "Bearer",
                    "expires_at": "2099-01-01T00:00:00Z",
                    "expires_in": 3600,
                    "password_expiry_utc": 4070908800,
                }
            ).encode()
            self.request.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )

    server = _Impostor(str(folder / "credd.sock"), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder / "credd.sock", received
    server.shutdown()
    server.server_close()
    shutil.rmtree(folder, ignore_errors=True)


def impostor_params() -> list[Any]:
    return [
        pytest.param(
            client,
            id=client,
            marks=[pytest.mark.xfail(strict=True, reason="client-side daemon check pending")]
            if client in IMPOSTOR["pending"]
            else [],
        )
        for client in (*CLIS, "git")
    ]


@pytest.mark.parametrize("client", impostor_params())
def test_an_impostor_socket_gets_nothing_from_any_client(
    client: str,
    home: Path,
    fake: FakeCoactive,
    impostor: tuple[Path, list[bytes]],
    request: pytest.FixtureRequest,
) -> None:
    sock, received = impostor
    login(fake)  # the config names the fake's origin, so the git helper would ask
    env = {"COACTIVE_CREDD_SOCKET": str(sock), "COACTIVE_CREDD_AUTOSTART": "0"}
    if client == "git":
        host = fake.base_url.split("://", 1)[1]
        argv = [_need("dash"), str(SHIM / "sh" / "git-credential-coactive"), "get"]
        proc, _ = run(argv, env, f"protocol=http\nhost={host}\n\n")
        assert (proc.returncode, proc.stdout) == (3, ""), proc
        assert str(sock.parent) in proc.stderr and proc.stderr.count("\n") == 1, proc
        for action in ("store", "erase"):  # never non-zero, and still nothing sent
            quiet, _ = run([*argv[:-1], action], env, f"protocol=http\nhost={host}\npassword=x\n\n")
            assert (quiet.returncode, quiet.stdout) == (0, ""), quiet
    else:
        go = request.getfixturevalue("go_cli") if client == "go" else None
        proc, _ = run(cli_argv(client, go), env)
        where = f"{client}: exit {proc.returncode}, out {proc.stdout!r}, err {proc.stderr!r}"
        assert proc.returncode == IMPOSTOR["expect"]["exit"] and proc.stdout == "", where
        assert proc.stderr.count("\n") == 1, where
        for needle in IMPOSTOR["expect"]["stderr_has"]:
            assert needle.format(folder=sock.parent) in proc.stderr, where
    assert IMPOSTOR_TOKEN not in proc.stdout + proc.stderr
    assert received == [], "the impostor was sent a request"
