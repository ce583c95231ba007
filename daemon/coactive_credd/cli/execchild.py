"""How ``exec`` runs its command: forked with the parent-death signal and, off a terminal, a
process group of its own; the signals sent to exec relayed to it until it ends (see
:mod:`execrun` for which, and why).

Standard library only: this runs on every ``exec``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable
from typing import cast

RELAYED = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGWINCH,
)
SI_KERNEL = 0x80  # si_code of a signal the kernel sent (a terminal's Ctrl-C, Ctrl-\)
PR_SET_PDEATHSIG = 1  # prctl(2)
DEATH_SIGNAL = signal.SIGTERM
SI_USER = 0  # si_code of a signal kill(2) sent


def _prctl() -> Callable[..., int] | None:
    """libc's ``prctl`` (Linux), loaded before any fork; None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        return cast(Callable[..., int], ctypes.CDLL(None, use_errno=True).prctl)
    except (OSError, AttributeError):
        return None


def _in_foreground() -> bool:
    """Is exec in the foreground process group of its terminal (so Ctrl-C reaches all)?"""
    try:
        return os.tcgetpgrp(0) == os.getpgrp()
    except OSError:
        return False


def spawn(command: list[str], env: dict[str, str], mask: set[int | signal.Signals]) -> int:
    """Start ``command`` (``fork`` and ``execvpe``; not ``posix_spawn``, which cannot ask for
    the parent-death signal), its pid. Called before any thread starts: between ``fork`` and
    ``exec`` the child only sets its process group, its parent-death signal, signal
    dispositions and mask (the caveats of subprocess's ``preexec_fn`` are about threads).
    PR_SET_PDEATHSIG follows the thread that forked, the main one, which lives as long as
    exec. Raises OSError (the child's, when it could not run the command)."""
    prctl = _prctl()
    own_group = not _in_foreground()
    parent = os.getpid()
    r, w = os.pipe()  # close-on-exec: a successful exec closes it, a failure writes errno
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child, measured by the tests' outcomes
        try:
            os.close(r)
            if own_group:
                os.setpgid(0, 0)
            if prctl is not None:
                prctl(PR_SET_PDEATHSIG, int(DEATH_SIGNAL), 0, 0, 0)
                if os.getppid() != parent:  # exec died before that: stop now
                    os._exit(128 + int(DEATH_SIGNAL))
            for sig in (signal.SIGPIPE, signal.SIGXFSZ):  # Python ignores them
                signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            os.execvpe(command[0], command, env)  # noqa: S606 - argv, as posix_spawnp took it
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.write(w, str(exc.errno or 0).encode())
        finally:
            os._exit(127)
    os.close(w)
    if own_group:
        with contextlib.suppress(OSError):
            os.setpgid(pid, pid)  # as the child does: whichever runs first
    err = os.read(r, 16)
    os.close(r)
    if err:
        os.waitpid(pid, 0)
        code = int(err)
        raise OSError(code, os.strerror(code))
    return pid


def wait(pid: int) -> int:
    """Relay signals to ``pid`` until it ends; its wait status."""
    waited = {*RELAYED, signal.SIGCHLD}
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return status
        info = signal.sigtimedwait(waited, 1.0)
        if info is None or info.si_signo == signal.SIGCHLD:
            continue
        if info.si_code == SI_KERNEL and info.si_signo in (signal.SIGINT, signal.SIGQUIT):
            continue  # the terminal sent it to the command's process group too
        if from_service_manager(info):
            continue  # systemd sent it to every process of the service, the command too
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, info.si_signo)


def from_service_manager(info: signal.struct_siginfo) -> bool:
    """A signal systemd sent to the main process of a service (``INVOCATION_ID`` is set for
    every service process; exec is the main one when its parent is systemd, pid 1)."""
    return (
        info.si_code == SI_USER
        and info.si_pid == 1
        and os.getppid() == 1
        and bool(os.environ.get("INVOCATION_ID"))
    )
