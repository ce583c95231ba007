"""service.py against real sockets: sd_notify datagrams, inherited descriptors, launchd's call.

launchd cannot run on Linux, so its path is driven through a ctypes stand-in for
``launch_activate_socket`` that hands over real sockets in a malloc()ed array, exactly as
libSystem does; everything else is the real protocol.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from coactive_credd.server import service

# ---- sd_notify -----------------------------------------------------------------------------


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A datagram socket standing in for systemd's, bound where $NOTIFY_SOCKET says."""
    path = tmp_path / "notify"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(path))
    s.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    for var in ("WATCHDOG_USEC", "WATCHDOG_PID"):
        monkeypatch.delenv(var, raising=False)
    yield s
    s.close()


def received(s: socket.socket) -> dict[str, str]:
    lines = s.recv(4096).decode().split("\n")
    return dict(line.split("=", 1) for line in lines)


def test_ready_status_stopping_reach_the_notify_socket(notify_socket: socket.socket) -> None:
    n = service.Notifier.from_env()
    assert n.enabled
    n.ready("2 profiles, next refresh in 41 min")
    assert received(notify_socket) == {
        "READY": "1",
        "STATUS": "2 profiles, next refresh in 41 min",
        "MAINPID": str(os.getpid()),
    }
    n.status("1 profile, refreshing")
    assert received(notify_socket) == {"STATUS": "1 profile, refreshing"}
    n.watchdog()
    assert received(notify_socket) == {"WATCHDOG": "1"}
    n.stopping()
    assert received(notify_socket) == {"STOPPING": "1"}


def test_reloading_carries_the_monotonic_clock(notify_socket: socket.socket) -> None:
    n = service.Notifier.from_env()
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    n.reloading()
    msg = received(notify_socket)
    assert msg["RELOADING"] == "1"
    assert before <= int(msg["MONOTONIC_USEC"]) <= before + 5_000_000
    n.ready()
    assert received(notify_socket)["READY"] == "1"


def test_a_status_text_cannot_inject_other_assignments(notify_socket: socket.socket) -> None:
    service.Notifier.from_env().status("vault locked\nREADY=1")
    assert received(notify_socket) == {"STATUS": "vault locked READY=1"}


def test_abstract_namespace_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"coactive-credd-test-{os.getpid()}"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind("\0" + name)
    s.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    try:
        service.Notifier.from_env().ready()
        assert received(s)["READY"] == "1"
    finally:
        s.close()


def test_without_notify_socket_everything_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    n = service.Notifier.from_env()
    assert not n.enabled
    assert n.watchdog_interval() is None
    n.ready("x")
    n.status("x")
    n.watchdog()
    n.stopping()


def test_a_vanished_service_manager_does_not_stop_the_daemon(
    notify_socket: socket.socket, caplog: pytest.LogCaptureFixture
) -> None:
    n = service.Notifier.from_env()
    notify_socket.close()
    Path(os.environ["NOTIFY_SOCKET"]).unlink()
    n.status("still serving")  # must not raise
    assert "could not notify" in caplog.text


@pytest.mark.parametrize(
    ("usec", "pid", "interval"),
    [
        ("30000000", None, 15.0),  # WatchdogSec=30s: ping every 15 s
        ("1000000", "self", 0.5),
        ("1000000", "1", None),  # meant for another process
        ("0", None, None),
        ("soon", None, None),
        (None, None, None),
    ],
)
def test_watchdog_interval_is_half_the_timeout(
    notify_socket: socket.socket,
    monkeypatch: pytest.MonkeyPatch,
    usec: str | None,
    pid: str | None,
    interval: float | None,
) -> None:
    if usec is not None:
        monkeypatch.setenv("WATCHDOG_USEC", usec)
    if pid is not None:
        monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()) if pid == "self" else pid)
    assert service.Notifier.from_env().watchdog_interval() == interval


def test_an_unsupported_notify_address_disables_notification(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")
    assert not service.Notifier.from_env().enabled


# ---- systemd's LISTEN_FDS --------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import json, os, socket, sys
    from coactive_credd.server import service
    try:
        socks = service.inherited_sockets()
    except service.ActivationError as exc:
        print(json.dumps({"error": str(exc)}), flush=True)
        sys.exit(0)
    report = {
        "n": len(socks),
        "family": [s.family == socket.AF_UNIX for s in socks],
        "inheritable": [s.get_inheritable() for s in socks],
        "env": [v for v in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES") if v in os.environ],
    }
    print(json.dumps(report), flush=True)
    for s in socks:
        conn, _ = s.accept()
        conn.sendall(b"served on the inherited socket")
        conn.close()
    """
)


LAUNCH = textwrap.dedent(
    """
    import os, sys
    fd, listen_pid, child = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    os.dup2(fd, 3)  # systemd passes the sockets from descriptor 3 on
    os.close(fd)
    os.environ.update(
        LISTEN_PID=str(os.getpid()) if listen_pid == "self" else listen_pid,
        LISTEN_FDS="1",
        LISTEN_FDNAMES="coactive-credd.socket",
    )
    os.execv(sys.executable, [sys.executable, "-c", child])  # same pid, as after systemd's fork
    """
)


def run_activated(sock: socket.socket, listen_pid: str = "self") -> subprocess.Popen[str]:
    """Start CHILD with ``sock`` as descriptor 3 and the LISTEN_* variables systemd would set."""
    fd = sock.fileno()
    return subprocess.Popen(
        [sys.executable, "-c", LAUNCH, str(fd), listen_pid, CHILD],
        pass_fds=(fd,),
        stdout=subprocess.PIPE,
        text=True,
    )


def test_systemd_socket_is_taken_validated_and_served_on(tmp_path: Path) -> None:
    path = tmp_path / "credd.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(8)
    proc = run_activated(listener)
    listener.close()  # the child owns it now, as with systemd
    try:
        assert proc.stdout is not None
        report = json.loads(proc.stdout.readline())
        assert report == {"n": 1, "family": [True], "inheritable": [False], "env": []}
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.settimeout(10)
        c.connect(str(path))
        assert c.recv(100) == b"served on the inherited socket"
        c.close()
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_listen_fds_for_another_process_are_ignored(tmp_path: Path) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(tmp_path / "s"))
    listener.listen(1)
    proc = run_activated(listener, listen_pid="1")
    listener.close()
    out, _ = proc.communicate(timeout=20)
    assert json.loads(out) == {"n": 0, "family": [], "inheritable": [], "env": []}


@pytest.mark.parametrize("kind", ["datagram", "not listening"])
def test_a_socket_that_cannot_serve_is_refused(tmp_path: Path, kind: str) -> None:
    if kind == "datagram":
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.bind(str(tmp_path / "s"))
    else:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    proc = run_activated(s)
    s.close()
    out, _ = proc.communicate(timeout=20)
    assert "not a listening AF_UNIX stream socket" in json.loads(out)["error"]


def test_no_listen_variables_means_no_sockets(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        monkeypatch.delenv(var, raising=False)
    assert service.inherited_sockets() == []


def test_malformed_listen_variables_are_an_error() -> None:
    env = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "two"}
    with pytest.raises(service.ActivationError, match="LISTEN_FDS"):
        service.systemd_socket_fds(env)
    assert env == {}


# ---- launchd's launch_activate_socket ------------------------------------------------------

libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
ACTIVATE = ctypes.CFUNCTYPE(
    ctypes.c_int,
    ctypes.c_char_p,
    ctypes.POINTER(ctypes.POINTER(ctypes.c_int)),
    ctypes.POINTER(ctypes.c_size_t),
)


class FakeLibSystem:
    """launch_activate_socket as libSystem implements it: a malloc()ed array of descriptors."""

    def __init__(self, fds: list[int], result: int = 0) -> None:
        self.fds = fds
        self.result = result
        self.names: list[bytes] = []
        self.freed: list[int] = []
        self.allocated: list[int] = []
        self.activate = ACTIVATE(self._activate)

    def _activate(
        self,
        name: bytes,
        out: ctypes._Pointer[ctypes._Pointer[ctypes.c_int]],
        count: ctypes._Pointer[ctypes.c_size_t],
    ) -> int:
        self.names.append(name)
        if self.result:
            return self.result
        size = ctypes.sizeof(ctypes.c_int) * len(self.fds)
        buf = libc.malloc(size)
        self.allocated.append(buf)
        arr = (ctypes.c_int * len(self.fds)).from_address(buf)
        for i, fd in enumerate(self.fds):
            arr[i] = fd
        out[0] = ctypes.cast(buf, ctypes.POINTER(ctypes.c_int))
        count[0] = len(self.fds)
        return 0

    def free(self, ptr: Any) -> None:
        address = ctypes.cast(ptr, ctypes.c_void_p).value
        assert address is not None
        self.freed.append(address)
        libc.free(address)

    def __call__(self) -> tuple[service.ActivateFn, service.FreeFn]:
        return self.activate, self.free


def test_launchd_sockets_are_taken_and_the_array_freed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    listeners = []
    for i in range(2):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(str(tmp_path / f"s{i}"))
        s.listen(1)
        listeners.append(s)
    fake = FakeLibSystem([s.detach() for s in listeners])
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setattr(service, "_libsystem", fake)
    socks = service.inherited_sockets()
    try:
        assert fake.names == [b"Listeners"]
        assert [s.fileno() for s in socks] == fake.fds
        assert fake.freed == fake.allocated  # the array, once; the descriptors stay open
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.connect(str(tmp_path / "s1"))
        conn, _ = socks[1].accept()
        conn.close()
        c.close()
    finally:
        for s in socks:
            s.close()


@pytest.mark.parametrize("err", [errno.ESRCH, errno.ENOENT])
def test_not_started_by_launchd_means_no_sockets(err: int) -> None:
    fake = FakeLibSystem([], result=err)
    assert service.launchd_socket_fds("Listeners", fake) == []
    assert fake.freed == []


def test_other_launchd_errors_are_reported() -> None:
    fake = FakeLibSystem([], result=errno.EALREADY)
    with pytest.raises(service.ActivationError, match="launch_activate_socket"):
        service.launchd_socket_fds("Listeners", fake)


# ---- journal -------------------------------------------------------------------------------


@pytest.mark.parametrize("match", [True, False])
def test_journal_logging_is_wanted_only_when_stderr_is_the_journal(
    tmp_path: Path, match: bool
) -> None:
    err = tmp_path / "stderr"
    err.touch()
    st = os.stat(err)
    stream = f"{st.st_dev}:{st.st_ino}" if match else f"{st.st_dev}:{st.st_ino + 1}"
    with open(err, "w") as f:
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                "from coactive_credd import service as s;print(s.journal_logging_wanted())",
            ],
            env={**os.environ, "JOURNAL_STREAM": stream},
            stderr=f,
            capture_output=False,
            stdout=subprocess.PIPE,
            text=True,
            check=True,
        )
    assert out.stdout.strip() == str(match)


def test_no_journal_stream_no_journal_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    assert service.journal_logging_wanted() is False
