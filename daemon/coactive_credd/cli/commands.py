"""Every ``coactive-credd`` command: its flags, its one-line help, and where it lives.

Commands are named by ``module:function`` and imported only when they run, so
``coactive-credd token`` loads no room it does not use (and this module imports no command
module: no import cycle). :func:`parser.build_parser` adds them in the order of
:data:`BUILDERS`, which is the order ``--help`` lists them.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable


def _lazy(module: str, name: str) -> Callable[[argparse.Namespace], int]:
    """A command living in another module, imported only when that command runs."""

    def run(args: argparse.Namespace) -> int:
        import importlib

        fn = getattr(importlib.import_module(f"{__package__}.{module}"), name)
        return int(fn(args))

    return run


Add = Callable[[str, Callable[[argparse.Namespace], int], str], argparse.ArgumentParser]


def _profile(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--profile", metavar="P", help="profile name (default: $COACTIVE_PROFILE or 'default')"
    )


def _min_ttl(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("--min-ttl", type=int, default=0, metavar="SECONDS", help=help)


def _socket(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--socket",
        metavar="PATH",
        help="socket path (default: $COACTIVE_CREDD_SOCKET or the per-user runtime dir)",
    )


def _add_login(add: Add) -> None:
    p = add(
        "login",
        _lazy("login", "cmd_login"),
        "store credentials for a profile (verified with one exchange)",
    )
    _profile(p)
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
        "--credential-command",
        metavar="CMD",
        help="take the credential from this program's first line of output at each login "
        "(e.g. 'pass show coactive/token'; split like a shell, run without one)",
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


def _add_logout(add: Add) -> None:
    p = add(
        "logout",
        _lazy("login", "cmd_logout"),
        "remove a profile's credentials and cached token",
    )
    _profile(p)
    p.add_argument("--all", action="store_true", help="every profile")


def _add_daemon(add: Add) -> None:
    """serve and stop."""
    p = add(
        "serve",
        _lazy("main", "cmd_serve"),
        "run the daemon in the foreground (what the service units run)",
    )
    _socket(p)
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
    _socket(p)


def _add_token(add: Add) -> None:
    """token, refresh and watch: the client's commands."""
    p = add("token", _lazy("client", "cmd_token"), "print the current access token")
    _profile(p)
    _min_ttl(p, "needed validity; a shorter-lived token is refreshed first")
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
    _profile(p)
    p.add_argument("--all", action="store_true", help="every profile")

    p = add(
        "watch",
        _lazy("watch", "cmd_watch"),
        "print a line each time a token is replaced or a profile's state changes (never a token)",
    )
    _profile(p)
    p.add_argument("--json", action="store_true", help="one JSON event per line")


def _add_inspect(add: Add) -> None:
    """status, doctor and audit: commands that look and never change anything."""
    p = add("status", _lazy("status", "cmd_status"), "show every profile's state (never a secret)")
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


def _add_exec(add: Add) -> None:
    p = add(
        "exec",
        _lazy("main", "cmd_exec"),
        "run a command with COACTIVE_ACCESS_TOKEN and COACTIVE_ACCESS_TOKEN_FILE (kept fresh "
        "while it runs), COACTIVE_TOKEN_EXPIRES_AT, COACTIVE_BASE_URL, COACTIVE_CREDD_SOCKET",
    )
    _profile(p)
    _min_ttl(p, "needed validity for the command's run")
    p.add_argument(
        "--token-file",
        metavar="PATH",
        help="keep the current token in PATH while the command runs (default: a private temporary file)",
    )
    p.add_argument(
        "--proxy",
        action="store_true",
        help="give the command no token: COACTIVE_BASE_URL is a local listener that adds it, "
        "COACTIVE_ACCESS_TOKEN a placeholder only that listener accepts",
    )
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD [ARGS...]")


def _add_extras(add: Add) -> None:
    """socket-path, completion and demo."""
    add(
        "socket-path",
        _lazy("daemon", "cmd_socket_path"),
        "print the socket path (for curl --unix-socket); needs no daemon",
    )

    p = add(
        "completion",
        _lazy("parser", "cmd_completion"),
        "print a shell completion script (bash or zsh)",
    )
    p.add_argument("shell", nargs="?", choices=["bash", "zsh"])
    # What the scripts call for `--profile <TAB>`: the configured names, one a line.
    p.add_argument("--list-profiles", action="store_true", help=argparse.SUPPRESS)

    p = add(
        "demo",
        _lazy("main", "cmd_demo"),
        "a self-contained demo against a fake Coactive, about a minute long",
    )
    p.add_argument(
        "--duration", type=float, default=60.0, metavar="SECONDS", help=argparse.SUPPRESS
    )


def _add_service(add: Add) -> None:
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


def _add_others(add: Add) -> None:
    """The commands whose flags live beside them: the vault's and setup-git."""
    from coactive_credd.cli import git as cli_git
    from coactive_credd.cli import vault as cli_vault

    cli_vault.add_commands(add)
    cli_git.add_commands(add)


# In the order `--help` lists them.
BUILDERS: tuple[Callable[[Add], None], ...] = (
    _add_login,
    _add_logout,
    _add_daemon,
    _add_token,
    _add_inspect,
    _add_exec,
    _add_extras,
    _add_service,
    _add_others,
)
