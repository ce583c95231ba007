"""The running daemon's pid, findable without the daemon answering.

The daemon holds an exclusive ``flock`` on ``<socket>.lock`` for as long as it serves (the
lock that keeps two daemons from starting at once) and writes its pid into that file. So a
pid is believed only while its lock is held: a daemon killed with ``-9`` leaves a stale
number behind, but no lock, and is reported as not running. A daemon that is stopped
(``SIGSTOP``) or wedged still holds its lock, so ``coactive-credd stop`` finds it.

Stdlib only: the CLI's client commands import it on their failure paths.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path


def lock_path(socket: Path | str) -> Path:
    """``<socket>.lock``: the daemon's startup lock, holding its pid."""
    return Path(f"{socket}.lock")


def record(fd: int) -> None:
    """Write this process's pid into the lock file ``fd`` (which it holds)."""
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)


def claim(socket: Path | str) -> int | None:
    """Take the lock and record this pid when nobody holds it (a socket-activated daemon,
    which needs no startup lock); the open fd, or None. Never raises."""
    try:
        fd = os.open(
            lock_path(socket), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
        )
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        record(fd)
    except OSError:
        os.close(fd)
        return None
    return fd


def running_pid(socket: Path | str) -> int | None:
    """The pid of the daemon serving ``socket``, or None when no daemon holds its lock.

    Raises nothing: an unreadable or foreign file is "not known" (None)."""
    try:
        fd = os.open(lock_path(socket), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            pass  # held: a daemon is there
        except OSError:
            return None
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None  # nobody holds it: the number in it, if any, is stale
        if os.fstat(fd).st_uid != os.getuid():
            return None
        raw = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    finally:
        os.close(fd)
    if not raw.isdigit():
        return None
    pid = int(raw)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, 0)
        return pid
    return None


def describe(socket: Path | str) -> str:
    """`` (pid N)`` for messages, or nothing when the pid is not known."""
    pid = running_pid(socket)
    return f" (pid {pid})" if pid else ""
