"""The ``coactive-credd`` argument parser: every command, its flags and its ``--help``.

Commands are named by ``module:function`` and imported only when they run, so
``coactive-credd token`` loads no room it does not use (and this module imports no command
module: no import cycle).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, cast

from coactive_credd import __version__
from coactive_credd.cli.common import EXIT_USAGE, PROG, CommandError


def _lazy(module: str, name: str) -> Callable[[argparse.Namespace], int]:
    """A command living in another module, imported only when that command runs."""

    def run(args: argparse.Namespace) -> int:
        import importlib

        fn = getattr(importlib.import_module(f"{__package__}.{module}"), name)
        return int(fn(args))

    return run


class _Parser(argparse.ArgumentParser):
    """One line on a usage error, pointing at this (sub)command's own --help."""

    def error(self, message: str) -> NoReturn:
        hint = _did_you_mean(self, message)
        self.exit(EXIT_USAGE, f"{self.prog}: {message}{hint}; see `{self.prog} --help`\n")


def _did_you_mean(parser: argparse.ArgumentParser, message: str) -> str:
    import difflib
    import re

    m = re.search(r"invalid choice: '([^']*)'", message) or re.search(
        r"unrecognized arguments: (\S+)", message
    )
    if m is None:
        return ""
    words: list[str] = []
    for action in parser._actions:
        words += action.option_strings
        if isinstance(action.choices, dict):
            words += list(action.choices)
    close = difflib.get_close_matches(m.group(1).split("=")[0], words, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


class _Skipped:
    """Stands in for the parser of a command that is not the one running: a command's run
    builds only its own subparser, so adding commands costs ``coactive-credd token`` nothing."""

    def add_argument(self, *args: Any, **kwargs: Any) -> None:
        pass

    def add_mutually_exclusive_group(self, **kwargs: Any) -> _Skipped:
        return self

    def set_defaults(self, **kwargs: Any) -> None:
        pass


def command_in(argv: Sequence[str]) -> str | None:
    """The command word of ``argv`` when it comes first (``coactive-credd token ...``)."""
    return argv[0] if argv and not argv[0].startswith("-") else None


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole parser; with ``only``, that command's subparser alone (others skipped),
    which is all a run of that command needs. An unknown ``only`` builds them all."""
    from coactive_credd.cli.help import HELP, epilog, main_epilog

    if only is not None and only not in HELP:
        only = None
    fmt = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog=PROG,
        description="Keep Coactive access tokens fresh and hand them to local programs.",
        epilog=main_epilog(),
        formatter_class=fmt,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )

    def add(
        name: str, fn: Callable[[argparse.Namespace], int], help: str
    ) -> argparse.ArgumentParser:
        if only is not None and name != only:
            return cast(argparse.ArgumentParser, _Skipped())
        p = sub.add_parser(
            name, help=help, description=help, epilog=epilog(name), formatter_class=fmt
        )
        p.set_defaults(func=fn)
        return p

    def profile(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--profile", metavar="P", help="profile name (default: $COACTIVE_PROFILE or 'default')"
        )

    def min_ttl(p: argparse.ArgumentParser, help: str) -> None:
        p.add_argument("--min-ttl", type=int, default=0, metavar="SECONDS", help=help)

    def socket(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--socket",
            metavar="PATH",
            help="socket path (default: $COACTIVE_CREDD_SOCKET or the per-user runtime dir)",
        )

    p = add(
        "login",
        _lazy("login", "cmd_login"),
        "store credentials for a profile (verified with one exchange)",
    )
    profile(p)
    p.add_argument(
        "--base-url",
        metavar="URL",
        help="Coactive API base URL (default: the profile's, else https://api.coactive.ai)",
    )
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--personal-token-stdin",
        action="store_true",
        help="read a personal token from one line of stdin",
    )
    g.add_argument(
        "--client-id",
        metavar="ID",
        help="system credentials: the client id (default: the profile's)",
    )
    p.add_argument(
        "--client-secret-stdin",
        action="store_true",
        help="read the client secret from one line of stdin",
    )
    p.add_argument(
        "--ca-bundle",
        metavar="PEM",
        help="trust this CA bundle for Coactive's TLS (a TLS-inspecting proxy); kept in the config",
    )
    p.add_argument(
        "--no-verify",
        action="store_true",
        help="save without checking the credentials with Coactive",
    )
    p.add_argument(
        "--proxy",
        metavar="URL",
        help="this profile's HTTP proxy (wins over HTTPS_PROXY/NO_PROXY); 'direct' for none",
    )
    p.add_argument(
        "--created",
        metavar="YYYY-MM-DD",
        help="when the personal token was generated, if before today (for the 3-month warning)",
    )

    p = add(
        "logout",
        _lazy("login", "cmd_logout"),
        "remove a profile's credentials and cached token",
    )
    profile(p)
    p.add_argument("--all", action="store_true", help="every profile")

    p = add(
        "serve",
        _lazy("main", "cmd_serve"),
        "run the daemon in the foreground (what the service units run)",
    )
    socket(p)
    p.add_argument(
        "--log-level",
        default=os.environ.get("COACTIVE_CREDD_LOG_LEVEL", "info"),
        choices=["debug", "info", "warning", "error"],
        help="log verbosity (default: $COACTIVE_CREDD_LOG_LEVEL or info)",
    )

    p = add(
        "stop",
        _lazy("daemon", "cmd_stop"),
        "end the running daemon, even one that no longer answers",
    )
    socket(p)

    p = add("token", _lazy("client", "cmd_token"), "print the current access token")
    profile(p)
    min_ttl(p, "needed validity; a shorter-lived token is refreshed first")
    p.add_argument(
        "--json", action="store_true", help="print the whole answer as JSON (same as --format json)"
    )
    p.add_argument(
        "--format",
        choices=["raw", "json", "header", "env"],
        default=None,
        help="raw token, JSON, an Authorization header line, or an sh `export` line",
    )
    p.add_argument(
        "--wait",
        nargs="?",
        type=float,
        const=60.0,
        default=None,
        metavar="SECONDS",
        help="while Coactive is unreachable and no token is valid, keep asking this long (default 60)",
    )

    p = add("refresh", _lazy("client", "cmd_refresh"), "force a new token now")
    profile(p)
    p.add_argument("--all", action="store_true", help="every profile")

    p = add(
        "watch",
        _lazy("execrun", "cmd_watch"),
        "print a line each time a token is replaced or a profile's state changes (never a token)",
    )
    profile(p)
    p.add_argument("--json", action="store_true", help="one JSON event per line")

    p = add(
        "status", _lazy("status", "cmd_status"), "show every profile's state (never a secret)"
    )
    p.add_argument(
        "--json", action="store_true", help="machine-readable output (also without a daemon)"
    )

    p = add(
        "doctor",
        _lazy("doctor", "cmd_doctor"),
        "check files, socket, service, clock and Coactive; say how to fix each problem",
    )
    p.add_argument("--json", action="store_true", help="machine-readable findings")

    p = add(
        "audit",
        _lazy("audit", "cmd_audit"),
        "which programs took tokens (uid, pid, executable)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = add(
        "exec",
        _lazy("main", "cmd_exec"),
        "run a command with COACTIVE_ACCESS_TOKEN and COACTIVE_ACCESS_TOKEN_FILE (kept fresh "
        "while it runs), COACTIVE_TOKEN_EXPIRES_AT, COACTIVE_BASE_URL, COACTIVE_CREDD_SOCKET",
    )
    profile(p)
    min_ttl(p, "needed validity for the command's run")
    p.add_argument(
        "--token-file",
        metavar="PATH",
        help="keep the current token in PATH while the command runs (default: a private temporary file)",
    )
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD [ARGS...]")

    add(
        "socket-path",
        _lazy("daemon", "cmd_socket_path"),
        "print the socket path (for curl --unix-socket); needs no daemon",
    )

    p = add("completion", cmd_completion, "print a shell completion script (bash or zsh)")
    p.add_argument("shell", choices=["bash", "zsh"])

    p = add(
        "demo",
        _lazy("main", "cmd_demo"),
        "a self-contained demo against a fake Coactive, about a minute long",
    )
    p.add_argument(
        "--duration", type=float, default=60.0, metavar="SECONDS", help=argparse.SUPPRESS
    )

    dry_run = "print every file and command instead of writing or running anything"
    p = add(
        "install-service",
        _lazy("main", "cmd_install_service"),
        "run the daemon as a user service (systemd or launchd): at login, restarted if it dies",
    )
    p.add_argument("--dry-run", action="store_true", help=dry_run)
    p = add(
        "uninstall-service",
        _lazy("main", "cmd_uninstall_service"),
        "stop the user service and remove its files (credentials and config stay)",
    )
    p.add_argument("--dry-run", action="store_true", help=dry_run)
    add(
        "service-status",
        _lazy("main", "cmd_service_status"),
        "is the user service installed and running?",
    )

    from coactive_credd.cli import git as cli_git
    from coactive_credd.cli import vault as cli_vault

    cli_vault.add_commands(add)
    cli_git.add_commands(add)

    return parser


def cmd_completion(args: argparse.Namespace) -> int:
    """The completion script, generated from this parser by shtab (an optional extra)."""
    try:
        import shtab
    except ImportError:
        raise CommandError(
            "shell completion needs the shtab package: `pip install 'coactive-credd[completion]'` "
            "(or `pipx inject coactive-credd shtab`)"
        ) from None
    print(shtab.complete(build_parser(), shell=args.shell))
    return 0
