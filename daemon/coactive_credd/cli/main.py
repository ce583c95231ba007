"""The ``coactive-credd`` command: the entry point, and the commands that run a process.

The parser is :mod:`cli_parser`; the other commands live in ``cli_*.py`` beside it and share
only :mod:`cli_common` (no module imports another's private names, so there is no cycle).
Client commands (``token``, ``exec``, ``status``, ``refresh``) go through
:mod:`coactive_token` and import neither aiohttp nor cryptography, so they start fast; the
heavy rooms are imported inside the commands that need them.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from collections.abc import Sequence

from coactive_credd.cli.common import (
    EXIT_FAILURE,
    EXIT_UNKNOWN_PROFILE,
    EXIT_USAGE,
    PROG,
    CommandError,
    CreddError,
    new_event_loop,
    profile_name,
    resolve_paths,
    say,
)

__all__ = ["PROG", "CommandError", "main"]


# ---- commands that stay here (the others live in cli_*.py) ---------------------------------


def cmd_exec(args: argparse.Namespace) -> int:
    import coactive_token

    from coactive_credd.cli import execrun

    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise CommandError("exec needs a command: coactive-credd exec -- CMD [ARGS...]", EXIT_USAGE)
    sock = coactive_token.default_socket_path()
    if getattr(args, "proxy", False):  # the placeholder and a listener instead of the token
        from coactive_credd.cli import execproxy

        if args.token_file:
            raise CommandError(
                "exec --proxy gives the command no token file: drop --token-file", EXIT_USAGE
            )
        return execproxy.run(sock, profile_name(args), args.min_ttl, command)
    return execrun.run(sock, profile_name(args), args.min_ttl, command, args.token_file)


# ---- the daemon -----------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    import asyncio

    from coactive_credd.core import harden
    from coactive_credd.server import logsetup
    from coactive_credd.server import process as server

    logsetup.configure(args.log_level)
    harden.harden_process()
    try:
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            runner.run(server.run(resolve_paths(args.socket)))
    except server.StartupError as exc:
        raise CommandError(str(exc)) from None
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from coactive_credd.cli import demo

    return demo.main(duration=args.duration)


def cmd_install_service(args: argparse.Namespace) -> int:
    from coactive_credd.cli import install

    return install.install_service(args.dry_run)


def cmd_uninstall_service(args: argparse.Namespace) -> int:
    from coactive_credd.cli import install

    return install.uninstall_service(args.dry_run)


def cmd_service_status(args: argparse.Namespace) -> int:
    from coactive_credd.cli import install

    return install.service_status()


# ---- the entry point -----------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """The command line. Every failure is one line on stderr and an exit code; never a
    traceback (an unexpected error says so in one line, and how to report it)."""
    try:
        code = _main(argv)
        sys.stdout.flush()  # here, where a closed pipe can still be caught
        return code
    except BrokenPipeError:
        # A reader that went away (`status | head -1`): nothing more to say, and nowhere to.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILURE


def _main(argv: Sequence[str] | None) -> int:
    from coactive_credd.cli.parser import build_parser, command_in

    if argv is None:
        argv = sys.argv[1:]
    parser = build_parser(only=command_in(argv))
    args, extra = parser.parse_known_args(argv)
    if extra:
        # Report it as the subcommand's own error, so the hint names its --help.
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[
            args.command
        ]
        sub.error(f"unrecognized arguments: {' '.join(extra)}")
    autostart = os.environ.get("COACTIVE_CREDD_AUTOSTART", "").strip().lower()
    if command_in(argv) in _STARTS_DAEMON and autostart not in _AUTOSTART_WORDS:
        # As COACTIVE_CREDD_DAEMON_UID: a value that means nothing is refused, not ignored.
        say(
            f"COACTIVE_CREDD_AUTOSTART={os.environ['COACTIVE_CREDD_AUTOSTART'][:40]!r} is not "
            "0 or 1; `export COACTIVE_CREDD_AUTOSTART=0` (never start a daemon) or `=1`, or "
            "`unset COACTIVE_CREDD_AUTOSTART`"
        )
        return EXIT_USAGE
    if getattr(args, "min_ttl", 0) < 0:
        say(f"--min-ttl must be 0 or more seconds; see `{PROG} {args.command} --help`")
        return EXIT_USAGE
    if getattr(args, "wait", None) is not None and args.wait < 0:
        say(f"--wait must be 0 or more seconds; see `{PROG} {args.command} --help`")
        return EXIT_USAGE
    try:
        return int(args.func(args))
    except CommandError as exc:
        say(_with_profile_hint(str(exc), exc.exit_code, args))
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        raise
    except Exception as exc:
        return _known_failure(exc, args)


# Writes that fail for want of room, whatever the file's owner and mode.
_NO_ROOM = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is used up",
    errno.EROFS: "it is on a read-only file system",
}

# The commands whose client may start a daemon, and the values of COACTIVE_CREDD_AUTOSTART
# the clients know (coactive_token.autostart_enabled; "" is unset).
_STARTS_DAEMON = frozenset({"token", "refresh", "exec", "watch"})
_AUTOSTART_WORDS = frozenset({"", "0", "1", "false", "true", "no", "yes", "off", "on"})


# The daemon's hints speak the socket protocol; on the command line the flags say it.
_PROTOCOL_WORDS = (
    ("pass ?min_ttl=SECONDS", "pass --min-ttl SECONDS"),
    ("pass ?profile=NAME", "pass --profile NAME"),
    ("a smaller min_ttl", "a smaller --min-ttl"),
    ("min_ttl=", "--min-ttl "),
    ("min_ttl must", "--min-ttl must"),
)


def _cli_words(text: str) -> str:
    for protocol, flag in _PROTOCOL_WORDS:
        text = text.replace(protocol, flag)
    return text


def _with_profile_hint(text: str, code: int, args: argparse.Namespace) -> str:
    """An unknown profile's line, with the closest configured name (and $COACTIVE_PROFILE
    when the name came from there)."""
    if code != EXIT_UNKNOWN_PROFILE or not hasattr(args, "profile"):
        return text
    from coactive_credd.cli.common import unknown_profile_hint

    hint = unknown_profile_hint(args)
    return f"{text}; {hint}" if hint else text


def _known_failure(exc: Exception, args: argparse.Namespace | None = None) -> int:
    """Turn the error tree's errors (:mod:`coactive_credd.core.errors`, and the client shim's own
    root) into one line and their exit code; anything else is a bug."""
    import coactive_token  # stdlib only, and imported already by every client command

    if isinstance(exc, CreddError | coactive_token.CredddError):
        code = exc.exit_code
        text = _cli_words(str(exc))
        say(text if args is None else _with_profile_hint(text, code, args))
        return code
    if os.environ.get("COACTIVE_CREDD_DEBUG"):
        raise exc
    if isinstance(exc, OSError) and exc.errno in _NO_ROOM:
        # A full or read-only disk is not a matter of owner and mode: name the place.
        where = exc.filename or str(resolve_paths().vault_file.parent)
        folder = where if os.path.isdir(where) else os.path.dirname(where) or "."
        if exc.errno == errno.EROFS:
            fix = (
                f"make it writable (`findmnt -T {folder}` shows the mount), or set "
                "COACTIVE_CREDD_HOME to a writable folder of yours"
            )
        else:
            fix = f"free some space there (`df -h {folder}` shows how much is left)"
        say(f"cannot write {where}: {_NO_ROOM[exc.errno]}; {fix}, then run this command again")
        return EXIT_FAILURE
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        say(
            f"{exc.strerror or exc}{where}; check that path's owner and mode (`coactive-credd "
            f"doctor` lists what is wrong), or set COACTIVE_CREDD_HOME to a folder of yours"
        )
        return EXIT_FAILURE
    # A bug: one line with where it happened (never the message: it might hold a value).
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    at = f" at {os.path.basename(tb.tb_frame.f_code.co_filename)}:{tb.tb_lineno}" if tb else ""
    say(
        f"internal error: {type(exc).__name__}{at}; please report it "
        f"(COACTIVE_CREDD_DEBUG=1 shows the traceback)"
    )
    return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
