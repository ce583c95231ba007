"""Every CLI command that holds a secret can be made to dump core, and gives nothing away.

``login`` (waiting on Coactive), ``unlock`` and ``rekey`` (waiting on the daemon with the
passphrase in memory) are caught while they wait and sent SIGQUIT with the core limit raised,
as a user's ``ulimit -c unlimited`` would. Where the kernel writes core files into the
working folder (``core_pattern`` a plain name, as on this CI), no core may appear; on every
machine the process's own limits must say 0 and the kernel must refuse another process of
the same uid a look into its memory (``/proc/PID/mem``, checked when not run as root: the
process is not dumpable). Before the CLI hardened itself, each of these wrote a core holding
the secret.
"""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import PERSONAL_TOKEN, run_cli

CORE_PATTERN = Path("/proc/sys/kernel/core_pattern")


def _core_in_cwd() -> bool:
    """Whether core files land in the dumping process's working folder (a plain name)."""
    try:
        pattern = CORE_PATTERN.read_text().strip()
    except OSError:
        return False
    return bool(pattern) and not pattern.startswith("|") and "/" not in pattern


class Hanging:
    """A listener that accepts, reads what comes, and never answers."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.got = threading.Event()
        self.data = b""
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            conn.settimeout(0.5)
            try:
                chunk = conn.recv(65536)
            except OSError:
                continue
            if chunk:
                self.data += chunk
                self.got.set()

    def close(self) -> None:
        for c in self.conns:
            c.close()
        self.sock.close()


@pytest.fixture
def hanging_coactive() -> Iterator[tuple[str, Hanging]]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    h = Hanging(s)
    yield f"http://127.0.0.1:{s.getsockname()[1]}", h
    h.close()


def _unlimited_core() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))


def _caught_waiting(args: list[str], stdin: str, listener: Hanging, cwd: Path) -> int:
    proc = subprocess.Popen(
        [sys.executable, "-m", "coactive_credd", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=cwd,
        preexec_fn=_unlimited_core,
    )
    assert proc.stdin is not None
    proc.stdin.write(stdin.encode())
    proc.stdin.close()
    try:
        assert listener.got.wait(60), "the command never reached the point where it waits"
        time.sleep(0.2)
        _assert_not_dumpable(proc.pid)
        proc.send_signal(signal.SIGQUIT)
        return proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _assert_not_dumpable(pid: int) -> None:
    limits = Path(f"/proc/{pid}/limits").read_text()
    core = next(line for line in limits.splitlines() if line.startswith("Max core file size"))
    assert core.split()[4:6] == ["0", "0"], core
    if os.geteuid() != 0:  # root may read any process's memory; another uid may not
        with pytest.raises(PermissionError):
            Path(f"/proc/{pid}/mem").open("rb").close()


def _assert_no_secret_core(cwd: Path, secrets: list[str]) -> None:
    cores = [p for p in cwd.iterdir() if p.name.startswith("core")]
    if _core_in_cwd():
        found = [s for c in cores for s in secrets if s.encode() in c.read_bytes()]
        assert not cores, f"core written ({len(cores)} file(s)); secrets in it: {found}"


def test_login_waiting_on_coactive_dumps_no_core(
    home: Path, tmp_path: Path, hanging_coactive: tuple[str, Hanging]
) -> None:
    url, listener = hanging_coactive
    rc = _caught_waiting(
        ["login", "--base-url", url, "--personal-token-stdin"],
        PERSONAL_TOKEN + "\n",
        listener,
        tmp_path,
    )
    assert rc == -signal.SIGQUIT
    _assert_no_secret_core(tmp_path, [PERSONAL_TOKEN])


def test_unlock_and_rekey_waiting_on_the_daemon_dump_no_core(home: Path, tmp_path: Path) -> None:
    assert (
        run_cli(
            "login",
            "--base-url",
            "http://127.0.0.1:9",
            "--no-verify",
            "--personal-token-stdin",
            input=PERSONAL_TOKEN + "\n",
        ).returncode
        == 0
    )
    assert run_cli("rekey", "--passphrase-stdin", input="first-pass-phrase\n").returncode == 0
    for args, stdin, secrets in [
        (["unlock", "--passphrase-stdin"], "first-pass-phrase\n", ["first-pass-phrase"]),
        (
            ["rekey", "--passphrase-stdin"],
            "first-pass-phrase\nsecond-pass-phrase\n",
            ["first-pass-phrase", "second-pass-phrase", PERSONAL_TOKEN],
        ),
    ]:
        sock = home / "credd.sock"
        sock.unlink(missing_ok=True)
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(sock))
        s.listen(8)
        listener = Hanging(s)
        try:
            workdir = tmp_path / args[0]
            workdir.mkdir()
            rc = _caught_waiting(args, stdin, listener, workdir)
            assert rc == -signal.SIGQUIT, args
            _assert_no_secret_core(workdir, secrets)
        finally:
            listener.close()
        if args[0] == "rekey":  # it finished the vault before it waited: put it back
            sock.unlink(missing_ok=True)
