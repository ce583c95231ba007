"""What every ``coactive-credd`` command module shares: exit codes, the one-line error, paths.

The command modules (:mod:`cli`, :mod:`cli_login`, :mod:`cli_vault`, :mod:`cli_daemon`,
:mod:`cli_status`, :mod:`cli_doctor`) import from here and never from each other's private
names, so the module graph has no cycle::

    cli ──> cli_common <── cli_login, cli_vault, cli_daemon, cli_status, cli_doctor

Stdlib only at import time: ``coactive-credd token`` must start fast.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

from coactive_credd.core.errors import (
    EXIT_FAILURE,
    EXIT_LOCKED,
    EXIT_OK,
    EXIT_REJECTED,
    EXIT_UNAVAILABLE,
    EXIT_UNKNOWN_PROFILE,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    CreddError,
)

if TYPE_CHECKING:
    import asyncio

    from coactive_credd.core.paths import Paths
    from coactive_credd.vault import Vault

PROG = "coactive-credd"
__all__ = [  # the exit codes are the error tree's (coactive_credd.core.errors), named here too
    "EXIT_FAILURE",
    "EXIT_LOCKED",
    "EXIT_OK",
    "EXIT_REJECTED",
    "EXIT_UNAVAILABLE",
    "EXIT_UNKNOWN_PROFILE",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "CommandError",
    "CreddError",
]

# A short bound for "is a daemon there and answering at all?" (seconds): a wedged daemon
# must not hold a command for the 30 s a token request may legitimately wait on Coactive.
PROBE_TIMEOUT = 3.0


class CommandError(CreddError):
    """A failure to print as one line: what is wrong, and the command that fixes it; exits
    with ``exit_code`` (default 1)."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def say(message: str) -> None:
    """One line on stderr, prefixed with the program name (never twice)."""
    text = " ".join(str(message).split())
    # The client's messages name the daemon for programs that are not this one.
    text = text.replace("the coactive-credd daemon", "the daemon")
    if not text.startswith(f"{PROG}:"):
        text = f"{PROG}: {text}"
    print(text, file=sys.stderr)


def resolve_paths(socket: str | None = None) -> Paths:
    from coactive_credd.core import paths

    return paths.resolve(socket)


def profile_name(args: Any) -> str:
    """``--profile``, else ``$COACTIVE_PROFILE``, else ``default``; exit 2 when malformed."""
    import coactive_token

    given = getattr(args, "profile", None)
    if given is not None and not given.strip():
        # `--profile "$UNSET"` must not quietly mean the default profile.
        raise CommandError(
            "--profile is empty (an unset variable?); name a profile, or leave the flag out "
            "for the default; `coactive-credd status` lists them",
            EXIT_USAGE,
        )
    name: str = given or os.environ.get("COACTIVE_PROFILE") or "default"
    try:
        return coactive_token.check_profile_name(name)
    except ValueError as exc:
        raise CommandError(
            f"{exc}; `coactive-credd status` lists the profiles", EXIT_USAGE
        ) from None


def unknown_profile_hint(args: Any) -> str:
    """For "no profile named P": the closest configured name, and where P came from when
    it was $COACTIVE_PROFILE; "" when there is nothing to add."""
    import difflib

    from coactive_credd.core import config

    given = getattr(args, "profile", None)
    name = given or os.environ.get("COACTIVE_PROFILE") or "default"
    try:
        known = list(config.load(resolve_paths().config_file).profiles)
    except (config.ConfigError, OSError):
        known = []
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    parts = []
    if not given and os.environ.get("COACTIVE_PROFILE"):
        parts.append(f"the name comes from COACTIVE_PROFILE={name}")
    if close and close[0] != name:
        parts.append(f"did you mean `--profile {close[0]}`?")
    return "; ".join(parts)


def open_vault(paths: Paths) -> Vault:
    from coactive_credd.vault import Vault

    return Vault(paths.vault_file, paths.key_file, paths.lock_file)


def notify_daemon(paths: Paths) -> bool:
    """Tell a running daemon to re-read config and vault; False if none is answering.
    A daemon that is not this user's is reported (exit 3), never told anything."""
    import coactive_token

    try:
        with coactive_token.Client(
            str(paths.socket), timeout=PROBE_TIMEOUT, autostart=False
        ) as client:
            status, _ = client.request("POST", "/v1/admin/reload")
    except coactive_token.UntrustedDaemon:
        raise
    except coactive_token.CredddError:
        return False
    return status == 200


def guard_secret_holder(paths: Paths) -> None:
    """First thing in a command that reads a credential or a passphrase: no core file and
    not dumpable (:mod:`harden`), and refuse (exit 3) when the socket's folder or the daemon
    answering on it is not this user's, before the secret is read.  A daemon of
    ``$COACTIVE_CREDD_DAEMON_UID`` is refused too: it is trusted with tokens, never with a
    passphrase or a credential (:func:`coactive_token.other_uid_may_serve`, which every
    request to the daemon passes again)."""
    import coactive_token

    from coactive_credd.core import harden

    harden.harden_process()
    coactive_token.verify_daemon(str(paths.socket), own_uid_only=True)


def admin(
    paths: Paths, path: str, body: dict[str, Any] | None = None, timeout: float = 60.0
) -> tuple[int, dict[str, Any]]:
    """One admin request to the running daemon (never starts one).

    Raises :class:`coactive_token.DaemonUnreachable` when none answers."""
    import coactive_token

    with coactive_token.Client(str(paths.socket), timeout=timeout, autostart=False) as client:
        return client.request("POST", path, body)


def error_line(answer: dict[str, Any]) -> str:
    """The daemon's ``{"error": {message, hint}}`` as one line."""
    err = answer.get("error", {})
    return f"{err.get('message', 'failed')}; {err.get('hint', '')}".rstrip("; ")


def on_terminal() -> bool:
    """Whether progress lines may go to stderr (a person watches; nothing when piped)."""
    return sys.stderr.isatty()


def progress(text: str) -> None:
    """Say what a slow step waits for, on a terminal only."""
    if on_terminal():
        print(f"{text}…", file=sys.stderr, flush=True)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A new event loop: uvloop's when it is installed (``pip install coactive-credd[fast]``;
    its C transports make each request a little cheaper), asyncio's otherwise. For ``serve``
    and for ``exec --proxy``'s listener; asyncio is imported here, not by the fast commands."""
    try:
        import uvloop
    except ImportError:
        import asyncio

        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
