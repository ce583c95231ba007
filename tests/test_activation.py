"""The real daemon under a service manager's protocols.

- socket activation with ``systemd-socket-activate`` (systemd's own tool): the daemon serves
  on the socket it inherits and leaves the socket file alone;
- ``Type=notify``: a datagram socket standing in for systemd's receives READY=1 only once the
  daemon listens, STATUS= lines, STOPPING=1 on SIGTERM, WATCHDOG=1 at the requested rate;
- the service unit's seccomp hardening (MemoryDenyWriteExecute=, RestrictAddressFamilies=),
  rebuilt with libseccomp exactly as systemd installs it, around a daemon that logs in.
"""

from __future__ import annotations

import ctypes.util
import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from coactive_credd.testing.fakeupstream import FakeCoactive

from .conftest import (
    PERSONAL_TOKEN,
    Daemon,
    call,
    leaked,
    login,
    run_cli,
    start_daemon,
    wait_ready,
)

STATUS_LINE = re.compile(r"^\d+ profile\(s\)(, next refresh in \d+ min)?$")


class NotifySocket:
    """What systemd listens on for sd_notify messages: a bound datagram socket."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))

    def next(self, timeout: float = 15) -> dict[str, str]:
        self.sock.settimeout(timeout)
        data = self.sock.recv(4096).decode()
        return dict(line.split("=", 1) for line in data.split("\n") if line)

    def wait_for(
        self, key: str, timeout: float = 15
    ) -> tuple[dict[str, str], list[dict[str, str]]]:
        """The first message with ``key``, and every message before it."""
        deadline = time.monotonic() + timeout
        before: list[dict[str, str]] = []
        while True:
            msg = self.next(max(0.01, deadline - time.monotonic()))
            if key in msg:
                return msg, before
            before.append(msg)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifySocket]:
    n = NotifySocket(tmp_path / "notify")
    yield n
    n.close()


def scan_log(text: str, fake: FakeCoactive) -> None:
    assert not leaked(text, set(fake.issued)), "a secret appeared in the daemon log"


# ---- socket activation -----------------------------------------------------------------------


@pytest.mark.skipif(
    shutil.which("systemd-socket-activate") is None and not os.environ.get("CI"),
    reason="systemd-socket-activate is not installed (CI installs Debian's systemd package)",
)
def test_socket_activation_serves_on_the_inherited_socket(
    home: Path, fake: FakeCoactive, notify: NotifySocket, tmp_path: Path
) -> None:
    login(fake)
    sock = home / "credd.sock"
    log = tmp_path / "daemon.log"
    with open(log, "wb") as out:
        # systemd-socket-activate binds and listens, then on the first connection execs the
        # daemon in its own pid with LISTEN_FDS=1, as a .socket unit would.
        proc = subprocess.Popen(
            [
                "systemd-socket-activate",
                "-l",
                str(sock),
                "--fdname=coactive-credd.socket",
                "-E",
                f"COACTIVE_CREDD_HOME={home}",
                "-E",
                f"NOTIFY_SOCKET={notify.path}",
                "-E",
                f"PYTHONPATH={os.pathsep.join(sys.path)}",
                sys.executable,
                "-m",
                "coactive_credd",
                "serve",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 10
        while not sock.exists():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.01)
        inode = sock.stat().st_ino

        started = time.monotonic()
        while True:
            # The file appears at bind(); until the activator's listen(), a connect is refused.
            try:
                status, body = call(sock, "GET", "/v1/token?profile=default")
                break
            except ConnectionRefusedError:
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.01)
        first_token = time.monotonic() - started
        assert status == 200, body
        assert body["access_token"] in fake.issued
        ready, _ = notify.wait_for("READY")
        assert ready["MAINPID"] == str(proc.pid)  # the daemon took over the activator's pid
        assert STATUS_LINE.match(ready["STATUS"]), ready
        print(f"\nactivation to first token: {first_token * 1000:.0f} ms; STATUS={ready['STATUS']}")
        assert first_token < 10

        proc.send_signal(signal.SIGTERM)
        stopping, _ = notify.wait_for("STOPPING")
        assert stopping == {"STOPPING": "1"}
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    scan_log(text, fake)
    assert "inherited socket" in text
    # The socket belongs to whoever created it: still there, the very same file.
    assert sock.is_socket() and sock.stat().st_ino == inode
    # Beside it, only the pid file `coactive-credd stop` reads, and no longer held: a daemon
    # that has exited is never reported as running.
    from coactive_credd.core import pidfile

    assert pidfile.running_pid(sock) is None


# ---- readiness, status, stopping, watchdog ---------------------------------------------------


def test_ready_comes_once_the_daemon_can_answer(
    home: Path, fake: FakeCoactive, notify: NotifySocket
) -> None:
    """READY=1 (with MAINPID and a STATUS line) is sent only once the socket listens and the
    server answers; a READY sent while still loading would find nothing listening."""
    login(fake)
    d = start_daemon(home, env={"NOTIFY_SOCKET": str(notify.path)}, wait=False)
    try:
        ready, _ = notify.wait_for("READY")
        # Freeze the daemon the moment READY arrives: the kernel accepts a connection only on
        # a socket that is already bound and listening, whatever the process does next.
        os.kill(d.proc.pid, signal.SIGSTOP)
        try:
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            probe.settimeout(2)
            probe.connect(str(d.socket))
            probe.close()
        finally:
            os.kill(d.proc.pid, signal.SIGCONT)
        assert d.get("/healthz") == (200, "ok")
        assert ready["READY"] == "1" and ready["MAINPID"] == str(d.proc.pid)
        assert STATUS_LINE.match(ready["STATUS"]), ready
        assert ready["STATUS"].startswith("1 profile")

        d.proc.terminate()
        stopping, _ = notify.wait_for("STOPPING")
        assert stopping == {"STOPPING": "1"}
        assert d.proc.wait(15) == 0
    finally:
        d.stop()
        scan_log(d.log_text(), fake)


def test_status_follows_a_refresh(home: Path, fake: FakeCoactive, notify: NotifySocket) -> None:
    login(fake)
    d = start_daemon(home, env={"NOTIFY_SOCKET": str(notify.path)}, wait=False)
    try:
        notify.wait_for("READY")
        assert d.post("/v1/token/refresh?profile=default")[0] == 200
        msg, _ = notify.wait_for("STATUS")
        assert STATUS_LINE.match(msg["STATUS"]), msg
    finally:
        d.stop()
        scan_log(d.log_text(), fake)


def test_watchdog_pings_at_half_the_timeout(
    home: Path, fake: FakeCoactive, notify: NotifySocket
) -> None:
    login(fake)
    # WatchdogSec=0.4s: systemd wants a ping at least every 0.4 s; the daemon sends one every 0.2 s.
    d = start_daemon(
        home, env={"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "400000"}, wait=False
    )
    try:
        notify.wait_for("READY")
        pings: list[float] = []
        deadline = time.monotonic() + 1.2
        while time.monotonic() < deadline:
            try:
                msg = notify.next(timeout=max(0.01, deadline - time.monotonic()))
            except TimeoutError:
                break
            if msg.get("WATCHDOG") == "1":
                pings.append(time.monotonic())
        assert 4 <= len(pings) <= 9, pings
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        assert max(gaps) < 0.4, gaps  # never late enough for systemd to kill it
    finally:
        d.stop()
        scan_log(d.log_text(), fake)


def test_no_watchdog_pings_when_meant_for_another_process(
    home: Path, fake: FakeCoactive, notify: NotifySocket
) -> None:
    login(fake)
    env = {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"}
    d = start_daemon(home, env=env, wait=False)
    try:
        notify.wait_for("READY")
        with pytest.raises(TimeoutError):
            while True:
                assert "WATCHDOG" not in notify.next(timeout=0.5)
    finally:
        d.stop()
        scan_log(d.log_text(), fake)


# ---- the unit's seccomp hardening, for real ---------------------------------------------------

LIBSECCOMP = ctypes.util.find_library("seccomp")

# Installs the filters systemd builds for MemoryDenyWriteExecute=yes and
# RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 (src/shared/seccomp-util.c), then execs.
SANDBOX = textwrap.dedent(
    """
    import ctypes, errno, os, socket, sys

    class Cmp(ctypes.Structure):
        _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                    ("a", ctypes.c_uint64), ("b", ctypes.c_uint64)]

    lib = ctypes.CDLL(sys.argv[1])
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(Cmp)]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    ctx = lib.seccomp_init(0x7FFF0000)  # SCMP_ACT_ALLOW
    EQ, GE, MASKED_EQ = 4, 5, 7

    def deny(name, err, arg, op, a, b=0):
        nr = lib.seccomp_syscall_resolve_name(name.encode())
        rule = Cmp(arg, op, a, b)
        assert lib.seccomp_rule_add_array(ctx, 0x00050000 | err, nr, 1, ctypes.byref(rule)) == 0

    W, X, SHM_EXEC = 0x2, 0x4, 0o100000
    deny("mmap", errno.EPERM, 2, MASKED_EQ, W | X, W | X)
    deny("mprotect", errno.EPERM, 2, MASKED_EQ, X, X)
    deny("pkey_mprotect", errno.EPERM, 2, MASKED_EQ, X, X)
    deny("shmat", errno.EPERM, 2, MASKED_EQ, SHM_EXEC, SHM_EXEC)
    allowed = {socket.AF_UNIX, socket.AF_INET, socket.AF_INET6}
    for family in range(46):  # AF_MAX
        if family not in allowed:
            deny("socket", errno.EAFNOSUPPORT, 0, EQ, family)
    deny("socket", errno.EAFNOSUPPORT, 0, GE, 46)
    assert lib.seccomp_load(ctx) == 0  # sets no_new_privs too, as NoNewPrivileges=yes
    os.execv(sys.argv[2], sys.argv[2:])
    """
)


def sandboxed(*argv: str) -> list[str]:
    assert LIBSECCOMP
    return [sys.executable, "-c", SANDBOX, LIBSECCOMP, *argv]


@pytest.mark.skipif(LIBSECCOMP is None, reason="libseccomp is not installed")
def test_the_sandbox_is_real() -> None:
    """The filter above does refuse what the unit forbids (so the next test means something)."""
    probe = textwrap.dedent(
        """
        import mmap, socket
        for what, fn in [
            ("wx", lambda: mmap.mmap(-1, 4096, prot=7)),
            ("netlink", lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW)),
            ("packet", lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW)),
        ]:
            try:
                fn()
                print(what, "allowed")
            except OSError as exc:
                print(what, "refused", exc.errno)
        """
    )
    out = subprocess.run(
        sandboxed(sys.executable, "-c", probe), capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:3] == ["wx refused 1", "netlink refused 97", "packet refused 97"]


@pytest.mark.skipif(LIBSECCOMP is None, reason="libseccomp is not installed")
def test_the_daemon_runs_under_the_units_seccomp_hardening(home: Path, fake: FakeCoactive) -> None:
    # `localhost`, not 127.0.0.1: name resolution (glibc asks netlink, which the filter
    # refuses, about local addresses) must work inside the sandbox too.
    url = fake.base_url.replace("127.0.0.1", "localhost")
    proc = run_cli(
        "login", "--base-url", url, "--personal-token-stdin", input=PERSONAL_TOKEN + "\n"
    )
    assert proc.returncode == 0, proc.stderr
    logins = len(fake.issued)
    sock = home / "credd.sock"
    log = home / "sandboxed.log"
    with open(log, "wb") as out:
        daemon = subprocess.Popen(
            sandboxed(sys.executable, "-m", "coactive_credd", "serve"),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        d = Daemon(socket=sock, log=log, proc=daemon, home=home)
        wait_ready(d)
        status = Path(f"/proc/{daemon.pid}/status").read_text()
        assert re.search(r"^Seccomp:\s+2$", status, re.M), "the daemon is not filtered"
        assert re.search(r"^NoNewPrivs:\s+1$", status, re.M)
        code, body = d.post("/v1/token/refresh?profile=default")
        assert code == 200, body
        assert len(fake.issued) == logins + 1  # a real login to Coactive, from inside
        assert body["access_token"] == fake.issued[-1]
    finally:
        daemon.terminate()
        assert daemon.wait(15) == 0
        scan_log(log.read_text(), fake)
