"""What ``login`` is given: the credential (a line of stdin, or typed without echo on a
terminal, checked for the usual paste mistakes), the kind of credentials, and the
``--created`` day.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from typing import TYPE_CHECKING

from coactive_credd.cli.common import (
    EXIT_USAGE,
    CommandError,
)

if TYPE_CHECKING:
    from coactive_credd.cli.login_writer import Writer
    from coactive_credd.core.config import ProfileConfig


def read_secret(
    prompt: str, from_stdin: bool, flag: str, again: str = "coactive-credd login"
) -> str:
    """One credential: a line of stdin, or typed on the terminal without echo. ``again`` is
    the login command for this profile (``--profile``, ``--base-url``), which every hint
    repeats so following it logs the same profile in at the same place."""
    if sys.stdin.isatty():
        # Also with the -stdin flag: a forgotten `< file` must not leave a pasted token on
        # the screen, so a terminal is always read without echo, with a prompt.
        import getpass

        try:
            secret = getpass.getpass(prompt)
        except EOFError:
            print(file=sys.stderr)  # the prompt's line ends here, not in the message
            raise CommandError(
                f"no credential given (end of input); run `{again}` and paste it, or pipe it "
                f'in: `echo "$SECRET" | {again} {flag}`',
                EXIT_USAGE,
            ) from None
    elif from_stdin:
        secret = sys.stdin.readline().rstrip("\r\n")
    else:
        raise CommandError(
            f"no credential given and standard input is not a terminal; pipe it in: "
            f'`echo "$SECRET" | {again} {flag}`',
            EXIT_USAGE,
        )
    secret = secret.strip()
    if not secret:
        raise CommandError(
            f"the credential is empty; pass the personal token or client secret (`{again} {flag}`)",
            EXIT_USAGE,
        )
    if secret.lower().startswith("bearer "):
        raise CommandError(
            "that is an Authorization header (`Bearer ...`), not the credential; pass the "
            f"token alone, without `Bearer `: `{again} {flag}`",
            EXIT_USAGE,
        )
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in secret):
        raise CommandError(
            f"the credential contains spaces or control characters; check what you pasted "
            f"and run `{again} {flag}` again",
            EXIT_USAGE,
        )
    return secret


def auth_for(
    args: argparse.Namespace, old: ProfileConfig | None, writer: Writer, name: str
) -> tuple[str, str | None]:
    """(auth, client id): what the flags say, else what the profile already has."""
    if args.client_id is not None:
        if not args.client_id.strip():
            raise CommandError("--client-id is empty; give the system client's id", EXIT_USAGE)
        return "client_credentials", args.client_id.strip()
    if args.personal_token_stdin:
        return "personal_token", None
    if old is not None and old.auth == "client_credentials":
        client_id = writer.client_id(name) or old.client_id
        if client_id:
            return "client_credentials", client_id
        raise CommandError(
            f"profile {name!r} uses system credentials but no client id is stored; run "
            f"`coactive-credd login --profile {name} --client-id ID --client-secret-stdin`",
            EXIT_USAGE,
        )
    if args.client_secret_stdin:
        raise CommandError(
            f"--client-secret-stdin needs the client id: "
            f"`coactive-credd login --profile {name} --client-id ID --client-secret-stdin`",
            EXIT_USAGE,
        )
    return "personal_token", None


def created_day(args: argparse.Namespace, auth: str) -> datetime.date | None:
    """The ``--created`` day, checked; None when not given."""
    from coactive_credd.core import credage

    if args.created is None:
        return None
    if auth != "personal_token":
        raise CommandError(
            "--created is for personal tokens; system credentials do not expire", EXIT_USAGE
        )
    try:
        return credage.parse_created(args.created, time.time())
    except ValueError as exc:
        raise CommandError(str(exc), EXIT_USAGE) from None
