"""Living under a service manager: inherited sockets, readiness, journal-friendly logs.

systemd (``coactive-credd.socket`` + ``Type=notify``) and launchd (a LaunchAgent with a
``Sockets`` entry) both create the listening socket before the daemon runs and hand it over;
the daemon then serves on it and neither creates nor removes the socket file. Everything here
is stdlib: the systemd protocols are a few environment variables and one datagram each, and
launchd's ``launch_activate_socket`` is reached through ctypes on macOS only.

Nothing here raises when the daemon runs outside a service manager: no inherited sockets
gives ``[]``, no ``$NOTIFY_SOCKET`` makes :class:`Notifier` a no-op.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import socket
import stat
import sys
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

# sd_listen_fds(3): inherited descriptors start right after stdin/stdout/stderr.
SD_LISTEN_FDS_START = 3
LAUNCHD_SOCKET_NAME = "Listeners"


class ActivationError(RuntimeError):
    """The service manager handed over something the daemon cannot serve on."""


# ---- inherited sockets -------------------------------------------------------------------


def inherited_sockets() -> list[socket.socket]:
    """The listening sockets systemd or launchd passed to this process, or ``[]``.

    systemd: the ``LISTEN_PID``/``LISTEN_FDS``/``LISTEN_FDNAMES`` protocol of sd_listen_fds(3);
    the variables are removed once read, so no child process mistakes them for its own.
    launchd: ``launch_activate_socket("Listeners")``.
    Each socket must be an AF_UNIX stream socket that is already listening; anything else is a
    unit or plist mistake and raises :class:`ActivationError` rather than serving on it.
    """
    if sys.platform == "darwin":
        fds = launchd_socket_fds(LAUNCHD_SOCKET_NAME)
    else:
        fds = systemd_socket_fds()
    return [_listening_unix_socket(fd) for fd in fds]


def systemd_socket_fds(environ: dict[str, str] | os._Environ[str] | None = None) -> list[int]:
    """The descriptor numbers of sd_listen_fds(3), taking the variables out of ``environ``."""
    env = os.environ if environ is None else environ
    pid = env.pop("LISTEN_PID", None)
    count = env.pop("LISTEN_FDS", None)
    names = env.pop("LISTEN_FDNAMES", None)
    if pid is None or count is None:
        return []
    try:
        if int(pid) != os.getpid():
            # Meant for another process (a parent that passed its environment on).
            return []
        n = int(count)
    except ValueError as exc:
        raise ActivationError(f"malformed LISTEN_PID/LISTEN_FDS: {pid!r}/{count!r}") from exc
    if n < 0:
        raise ActivationError(f"malformed LISTEN_FDS: {count!r}")
    fds = list(range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + n))
    for fd in fds:
        # Like sd_listen_fds(): the descriptors are ours now, not every child's.
        os.set_inheritable(fd, False)
    if names:
        log.debug("inherited sockets %s", names.replace(":", ", "))
    return fds


# int launch_activate_socket(const char *name, int **fds, size_t *cnt), from <launch.h>.
_IntArrayPtr = ctypes.POINTER(ctypes.c_int)
# (name, &fds, &count) -> errno, and free(fds); ctypes' own types are too loose to say more.
ActivateFn = Callable[..., int]
FreeFn = Callable[[Any], None]


def _libsystem() -> tuple[ActivateFn, FreeFn]:
    lib = ctypes.CDLL("/usr/lib/libSystem.B.dylib", use_errno=True)
    activate = lib.launch_activate_socket
    activate.argtypes = [
        ctypes.c_char_p,
        ctypes.POINTER(_IntArrayPtr),
        ctypes.POINTER(ctypes.c_size_t),
    ]
    activate.restype = ctypes.c_int
    free = lib.free
    free.argtypes = [ctypes.c_void_p]
    free.restype = None
    return activate, free


def launchd_socket_fds(
    name: str, libsystem: Callable[[], tuple[ActivateFn, FreeFn]] | None = None
) -> list[int]:
    """The descriptors launchd created for the plist's ``Sockets`` entry ``name``.

    ``[]`` when this process was not started by launchd (``ESRCH``) or its job has no such
    entry (``ENOENT``), so running ``coactive-credd serve`` by hand on macOS just works.
    """
    activate, free = (libsystem or _libsystem)()
    fds = _IntArrayPtr()
    count = ctypes.c_size_t(0)
    err = activate(name.encode(), ctypes.byref(fds), ctypes.byref(count))
    if err in (errno.ESRCH, errno.ENOENT):
        return []
    if err:
        raise ActivationError(f"launch_activate_socket({name!r}) failed: {os.strerror(err)}")
    try:
        return [int(fds[i]) for i in range(count.value)]
    finally:
        free(fds)  # launchd malloc()s the array; the descriptors themselves are ours


def _listening_unix_socket(fd: int) -> socket.socket:
    try:
        mode = os.fstat(fd).st_mode
    except OSError as exc:
        raise ActivationError(f"inherited descriptor {fd} is not open: {exc}") from exc
    if not stat.S_ISSOCK(mode):
        raise ActivationError(f"inherited descriptor {fd} is not a socket")
    sock = socket.socket(fileno=fd)
    sock.set_inheritable(False)
    listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM or not listening:
        what = f"family {sock.family!r}, type {sock.type!r}, listening={bool(listening)}"
        sock.detach()  # leave the descriptor to whoever owns it; we only refuse it
        raise ActivationError(
            f"inherited descriptor {fd} is not a listening AF_UNIX stream socket ({what}); "
            "the service unit must use ListenStream= with a path"
        )
    return sock


# ---- sd_notify ---------------------------------------------------------------------------


def _notify_address(value: str) -> str | bytes:
    if value.startswith("@"):
        return b"\0" + value[1:].encode()  # abstract namespace
    if value.startswith("/"):
        return value
    raise ValueError(f"unsupported NOTIFY_SOCKET {value!r}")


def _one_line(text: str) -> str:
    # A newline would start another assignment: STATUS text must not be able to say READY=1.
    return " ".join(text.splitlines())


class Notifier:
    """sd_notify(3) without libsystemd: one datagram to ``$NOTIFY_SOCKET`` per message.

    A no-op when the daemon was not started by systemd with ``Type=notify``. Failures to
    send are logged and otherwise ignored: the service manager being gone is no reason for
    the daemon to stop serving.
    """

    def __init__(
        self,
        address: str | None,
        watchdog_usec: int | None = None,
    ) -> None:
        self._address: str | bytes | None = _notify_address(address) if address else None
        self._watchdog_usec = watchdog_usec

    @classmethod
    def from_env(cls) -> Notifier:
        """Read ``NOTIFY_SOCKET`` and ``WATCHDOG_USEC``/``WATCHDOG_PID`` (sd_watchdog_enabled)."""
        address = os.environ.get("NOTIFY_SOCKET") or None
        usec: int | None = None
        raw = os.environ.get("WATCHDOG_USEC")
        wd_pid = os.environ.get("WATCHDOG_PID")
        try:
            if raw and (not wd_pid or int(wd_pid) == os.getpid()):
                usec = int(raw) if int(raw) > 0 else None
        except ValueError:
            log.warning("ignoring malformed WATCHDOG_USEC=%r / WATCHDOG_PID=%r", raw, wd_pid)
        try:
            return cls(address, usec)
        except ValueError as exc:
            log.warning("not notifying the service manager: %s", exc)
            return cls(None)

    @property
    def enabled(self) -> bool:
        """True when there is a service manager listening."""
        return self._address is not None

    def notify(self, *assignments: str) -> None:
        """Send ``KEY=value`` lines as one message."""
        if self._address is None:
            return
        try:
            # A socket per message, as sd_notify() does: messages are rare (readiness, status
            # changes, a watchdog ping every WatchdogSec/2) and nothing stays open.
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.sendto("\n".join(assignments).encode(), self._address)
        except OSError as exc:
            log.warning("could not notify the service manager: %s", exc)

    def ready(self, status: str | None = None) -> None:
        """The daemon answers on its socket: systemd ends the start job."""
        lines = ["READY=1"]
        if status:
            lines.append("STATUS=" + _one_line(status))
        lines.append(f"MAINPID={os.getpid()}")
        self.notify(*lines)

    def status(self, text: str) -> None:
        """One line for ``systemctl --user status``."""
        self.notify("STATUS=" + _one_line(text))

    def stopping(self) -> None:
        self.notify("STOPPING=1")

    def reloading(self) -> None:
        """Reload begins; call :meth:`ready` when it is done."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def watchdog_interval(self) -> float | None:
        """Seconds between :meth:`watchdog` pings: half of ``WatchdogSec=``, as systemd advises.

        None when the unit asked for no watchdog (or there is nobody to ping).
        """
        if self._address is None or not self._watchdog_usec:
            return None
        return self._watchdog_usec / 2 / 1_000_000

    def watchdog(self) -> None:
        self.notify("WATCHDOG=1")


# ---- logging -----------------------------------------------------------------------------


def journal_logging_wanted() -> bool:
    """True when stderr is connected to the journal (``$JOURNAL_STREAM`` names stderr).

    The journal adds its own timestamps and reads a ``<N>`` syslog priority at the start of
    each line, so the daemon then logs that way instead (see ``logsetup``).
    """
    value = os.environ.get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    try:
        st = os.fstat(sys.stderr.fileno())
        return (st.st_dev, st.st_ino) == (int(dev), int(ino))
    except (ValueError, OSError, AttributeError):
        return False


__all__ = [
    "ActivationError",
    "Notifier",
    "inherited_sockets",
    "journal_logging_wanted",
    "launchd_socket_fds",
    "systemd_socket_fds",
]
