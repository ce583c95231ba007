"""Another user on the machine: refused on every route of the real ``coactive-credd serve``,
and unable to read the daemon's memory.

The folder and socket modes are opened up as a careless admin might, so the kernel's file
checks let the other uid connect and only the daemon's peer check stands in the way. The other
uid is real (``setpriv``), not a patched ``peer_credentials``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from coactive_credd.server import logguard, peer
from coactive_credd.testing.fakeupstream import FakeCoactive

from .conftest import Daemon, InProc, both_paths, start_daemon

NOBODY = 65534

# Every route the daemon answers, and some it does not: the check comes before routing.
ROUTES = [
    ("GET", "/healthz"),
    ("GET", "/v1/token"),
    ("GET", "/v1/token?profile=default&min_ttl=60"),
    ("GET", "/v1/credential?protocol=http&host=127.0.0.1:{port}"),
    ("GET", "/v1/status"),
    ("GET", "/v1/events"),
    ("GET", "/metrics"),
    ("GET", "/v1/audit"),
    ("POST", "/v1/token/refresh"),
    ("POST", "/v1/admin/reload"),
    ("POST", "/v1/admin/lock"),
    ("POST", "/v1/admin/unlock"),
    ("GET", "/no/such/path"),
]


def as_nobody(*argv: str, uid: int = NOBODY) -> list[str]:
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", *argv]


@pytest.fixture
def opened(home: Path, daemon: Daemon) -> Iterator[Daemon]:
    """The daemon, its folder and socket opened to everyone (root only: setpriv)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to act as another uid (CI runs as root)")
    home.chmod(0o711)
    daemon.socket.chmod(0o666)
    try:
        yield daemon
    finally:
        home.chmod(0o700)


@pytest.fixture
def opened_inproc(inproc: InProc, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The in-process daemon's socket, opened to everyone with its folders (root only:
    setpriv); no refusal logged before (the refusal line is rate-limited)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to act as another uid (CI runs as root)")
    monkeypatch.setattr(logguard, "refusals", logguard.RateLimiter())
    sock: Path = inproc.socket
    for folder in {sock.parent, Path(os.environ["COACTIVE_CREDD_HOME"])}:
        folder.chmod(0o711)
    sock.chmod(0o666)
    return sock


def curl_as_nobody(
    sock: Path, method: str, path: str, *extra: str, uid: int = NOBODY
) -> tuple[int, str]:
    out = subprocess.run(
        as_nobody(
            "curl",
            "-q",
            "-s",
            "-X",
            method,
            "--unix-socket",
            str(sock),
            "-w",
            "\n%{http_code}",
            *extra,
            "http://localhost" + path,
            uid=uid,
        ),
        capture_output=True,
        text=True,
        timeout=30,
    )
    body, _, code = out.stdout.rpartition("\n")
    return int(code), body


@pytest.mark.verified_login
def test_another_uid_is_refused_on_every_route(opened: Daemon, fake: FakeCoactive) -> None:
    port = fake.base_url.rsplit(":", 1)[1]
    logins = fake.logins
    for method, route in ROUTES:
        status, body = curl_as_nobody(opened.socket, method, route.format(port=port))
        assert status == 403, (method, route, body)
        assert json.loads(body)["error"]["code"] == "forbidden", (method, route)
    # requests the fast path answers itself for the owner, and ones it hands to aiohttp
    for extra in [
        ("--http1.0",),
        ("-H", "Accept: text/plain"),
        ("-H", "Connection: close"),
        ("-H", "Content-Type: application/json", "--data", '{"passphrase": "x"}'),
    ]:
        status, body = curl_as_nobody(opened.socket, "GET", "/v1/token", *extra)
        assert status == 403 and fake.issued[-1] not in body, extra
    log = opened.log_text()
    # one line, not one per refusal: the refusal line is rate-limited like the others
    assert log.count(f"refused a request from uid {NOBODY} (pid ") == 1, log
    # nothing happened on its behalf: no login, no lock, no reload
    assert fake.logins == logins
    assert "vault locked" not in log and "reloaded" not in log
    assert opened.get("/healthz") == (200, "ok")  # and the owner is still served


def test_the_daemon_is_not_dumpable(home: Path, fake: FakeCoactive) -> None:
    """Another process of the same uid, without CAP_SYS_PTRACE, may not look into the daemon.

    The kernel denies ``/proc/PID/exe`` to such a process exactly when the target is not
    dumpable (ptrace access mode READ, proc(5)). Both run as root with CAP_SYS_PTRACE dropped,
    so root's capability does not answer for the daemon's own hardening.
    """
    if os.geteuid() != 0:
        pytest.skip("needs root for setpriv's capability bounding set (CI runs as root)")
    no_ptrace = ["setpriv", "--bounding-set=-sys_ptrace", "--inh-caps=-sys_ptrace"]
    probe = [*no_ptrace, sys.executable, "-c", "import os, sys; os.readlink(sys.argv[1])"]
    # the probe can read a dumpable process of the same credentials: the check can fail
    sleeper = subprocess.Popen([*no_ptrace, sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        seen = subprocess.run([*probe, f"/proc/{sleeper.pid}/exe"], capture_output=True, timeout=30)
        assert seen.returncode == 0, seen.stderr
    finally:
        sleeper.kill()
        sleeper.wait()
    d = start_daemon(home, wrap=no_ptrace)
    try:
        denied = subprocess.run(
            [*probe, f"/proc/{d.proc.pid}/exe"], capture_output=True, text=True, timeout=30
        )
        assert denied.returncode != 0 and "Permission denied" in denied.stderr
    finally:
        d.stop()


@both_paths
async def test_the_in_process_daemon_refuses_another_uid_on_every_route(
    inproc: InProc, opened_inproc: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The same check on the daemon served in this process (fast path in front, or aiohttp
    alone), so mutation testing sees it; then a uid in allowed_uids: tokens yes, admin no."""
    sock = opened_inproc
    port = inproc.fake.base_url.rsplit(":", 1)[1]
    logins = inproc.fake.logins
    for method, route in ROUTES:
        status, body = await asyncio.to_thread(
            curl_as_nobody, sock, method, route.format(port=port)
        )
        assert status == 403, (method, route, body)
        assert json.loads(body) == {
            "error": {
                "code": "forbidden",
                "message": f"only the daemon's own user may use this socket, not uid {NOBODY}",
                "hint": f"connect as the user who runs coactive-credd, or list uid {NOBODY} in "
                f"the daemon's [daemon] allowed_uids (a sidecar: and set "
                f"COACTIVE_CREDD_DAEMON_UID={os.geteuid()} in the app)",
            }
        }, (method, route)
    assert inproc.fake.logins == logins and not inproc.daemon.locked
    # one line for them all (rate-limited), naming the uid and the pid the kernel gives
    refused = [r.getMessage() for r in caplog.records if r.getMessage().startswith("refused")]
    assert len(refused) == 1
    for line in refused:
        assert re.fullmatch(
            rf"refused a request from uid {NOBODY} \(pid [1-9][0-9]*\): "
            "not the daemon's uid nor in allowed_uids",
            line,
        ), line
    d = inproc.daemon
    d.cfg = dataclasses.replace(
        d.cfg, daemon=dataclasses.replace(d.cfg.daemon, allowed_uids=frozenset({NOBODY}))
    )
    status, body = await asyncio.to_thread(curl_as_nobody, sock, "GET", "/v1/token")
    assert status == 200 and json.loads(body)["access_token"] == inproc.fake.issued[-1]
    for route in ("/v1/admin/lock", "/v1/admin/reload", "/v1/admin/unlock"):
        status, body = await asyncio.to_thread(curl_as_nobody, sock, "POST", route)
        assert status == 403, route
        assert json.loads(body) == {
            "error": {
                "code": "forbidden",
                "message": "only the daemon's own user may lock, unlock or reload it",
                "hint": "run the command as the user who runs coactive-credd",
            }
        }, route
    assert not d.locked
    status, _ = await inproc.get("/healthz")  # and the owner is still served
    assert status == 200


@both_paths
async def test_a_uid_past_two_to_the_31st_is_read_as_the_kernel_gives_it(
    inproc: InProc, opened_inproc: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """uid_t is unsigned: a uid of 3,000,000,000 (Linux allows up to 2**32 - 2) in
    allowed_uids is served, and a refusal names it as it is, not as a negative number."""
    high = 3_000_000_000
    sock = opened_inproc
    status, _ = await asyncio.to_thread(curl_as_nobody, sock, "GET", "/v1/token", uid=high)
    assert status == 403
    refused = [r.getMessage() for r in caplog.records if r.getMessage().startswith("refused")]
    assert len(refused) == 1 and refused[0].startswith(f"refused a request from uid {high} ")
    d = inproc.daemon
    d.cfg = dataclasses.replace(
        d.cfg, daemon=dataclasses.replace(d.cfg.daemon, allowed_uids=frozenset({high}))
    )
    status, body = await asyncio.to_thread(curl_as_nobody, sock, "GET", "/v1/token", uid=high)
    assert status == 200 and json.loads(body)["access_token"] == inproc.fake.issued[-1]


def test_the_macos_peer_credentials_are_read_from_a_struct_xucred(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """macOS answers LOCAL_PEERCRED (option 1 at level SOL_LOCAL, 0) with a 76-byte struct
    xucred: cr_version, cr_uid (unsigned), cr_ngroups, 16 groups (sys/ucred.h). No Mac runs
    these tests, so a stand-in socket answers the way that kernel does."""
    monkeypatch.setattr(peer, "_SO_PEERCRED", None)  # what socket gives on macOS
    asked: list[tuple[int, int, int]] = []
    nobody = 4_294_967_294  # uid -2, macOS's nobody, as the unsigned uid_t it is

    class Sock:
        def getsockopt(self, level: int, option: int, size: int) -> bytes:
            asked.append((level, option, size))
            return struct.pack("=IIh2x16I", 0, nobody, 1, *[4_294_967_294] * 16)

    assert peer.peer_credentials(Sock()) == (nobody, None)
    assert asked == [(0, 1, 76)]
