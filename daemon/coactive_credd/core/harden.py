"""Hardening for every process that holds a secret (the daemon and the CLI commands that
read a credential or a passphrase).

Stdlib only and cheap to import, so the CLI applies it before it reads the secret. It is
what OpenSSH's ssh-agent does (``platform_disable_tracing``): no core file, and on Linux
the process is not dumpable, so neither a core nor a same-uid ``ptrace``/``/proc/PID/mem``
reader gets at the secret.
"""

from __future__ import annotations

import contextlib
import os
import sys


def disable_core_dumps() -> None:
    """``RLIMIT_CORE`` 0 (no core file, soft and hard) and, on Linux,
    ``prctl(PR_SET_DUMPABLE, 0)``; on macOS ``ptrace(PT_DENY_ATTACH)`` is not used (it
    would stop debuggers of the user's own, for no gain over the core limit). Errors are
    ignored: hardening never stops a command."""
    import resource

    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 4


def harden_process() -> None:
    """What ``serve`` does first: :func:`disable_core_dumps` and a 077 umask, so every
    file the process creates is private by default."""
    os.umask(0o077)
    disable_core_dumps()
