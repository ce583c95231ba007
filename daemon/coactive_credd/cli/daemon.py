"""``coactive-credd stop`` and ``socket-path``: the daemon process as a person handles it.

``stop`` is ``git credential-cache exit``: it ends the running daemon, found by the pid it
recorded beside its socket (:mod:`pidfile`), so a daemon that is stopped (``SIGSTOP``) or
wedged and answers nothing is ended too. SIGTERM first (the daemon keeps its new tokens in
the vault on the way out), SIGKILL only if it has not gone after ``STOP_GRACE`` seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time

from coactive_credd.cli.common import CommandError, progress, resolve_paths

STOP_GRACE = 10.0  # seconds a daemon gets to flush the vault and go after SIGTERM


def _gone(pid: int, socket: str) -> bool:
    from coactive_credd.core import pidfile

    return pidfile.running_pid(socket) != pid


def _wait_gone(pid: int, socket: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if _gone(pid, socket):
            return True
        time.sleep(0.05)
    return _gone(pid, socket)


def cmd_stop(args: argparse.Namespace) -> int:
    from coactive_credd.core import pidfile

    paths = resolve_paths(args.socket)
    sock = str(paths.socket)
    pid = pidfile.running_pid(sock)
    if pid is None:
        print(f"coactive-credd is not running on {sock}; nothing to stop", file=sys.stderr)
        return 0
    try:
        os.kill(pid, signal.SIGTERM)
        os.kill(pid, signal.SIGCONT)  # a stopped daemon runs again to take the SIGTERM
    except ProcessLookupError:
        print(f"coactive-credd (pid {pid}) has already ended", file=sys.stderr)
        return 0
    except PermissionError:
        raise CommandError(
            f"pid {pid} holds {pidfile.lock_path(sock)} but is not yours; "
            f"end it as its owner (`kill {pid}`)"
        ) from None
    progress(f"waiting for coactive-credd (pid {pid}) to finish")
    how = "stopped"
    if not _wait_gone(pid, sock, STOP_GRACE):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        how = "killed (it did not end within 10 s of SIGTERM)"
        if not _wait_gone(pid, sock, 5.0):
            raise CommandError(
                f"coactive-credd (pid {pid}) does not end; see `ps -o stat,cmd -p {pid}`"
            )
    from coactive_token import service_installed

    tail = "; the user service starts it again on the next request" if service_installed() else ""
    print(f"coactive-credd (pid {pid}) {how}{tail}", file=sys.stderr)
    return 0


def cmd_socket_path(args: argparse.Namespace) -> int:
    """Print the socket path (no daemon needed): for ``curl --unix-socket``."""
    print(resolve_paths().socket)
    return 0
