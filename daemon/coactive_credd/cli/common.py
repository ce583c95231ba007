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

if TYPE_CHECKING:
    from coactive_credd.core.paths import Paths
    from coactive_credd.vault import Vault

PROG = "coactive-credd"
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_UNKNOWN_PROFILE = 4
EXIT_REJECTED = 5
EXIT_UNAVAILABLE = 6
EXIT_LOCKED = 7

# A short bound for "is a daemon there and answering at all?" (seconds): a wedged daemon
# must not hold a command for the 30 s a token request may legitimately wait on Coactive.
PROBE_TIMEOUT = 3.0


class CommandError(Exception):
    """A failure to print as one line: what is wrong, and the command that fixes it."""

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

    name: str = getattr(args, "profile", None) or os.environ.get("COACTIVE_PROFILE") or "default"
    try:
        return coactive_token.check_profile_name(name)
    except ValueError as exc:
        raise CommandError(
            f"{exc}; `coactive-credd status` lists the profiles", EXIT_USAGE
        ) from None


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
    answering on it is not this user's, before the secret is read."""
    import coactive_token
    from coactive_credd.core import harden

    harden.harden_process()
    coactive_token.verify_daemon(str(paths.socket))


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
