"""The ``coactive-credd`` command: argparse over the package's rooms.

Client commands (``token``, ``exec``, ``status``, ``refresh``) go through
:mod:`coactive_token` and import neither aiohttp nor cryptography, so they start fast; the
heavy rooms are imported inside the commands that need them.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from . import __version__
from .cli_common import (
    EXIT_FAILURE,
    EXIT_LOCKED,
    EXIT_USAGE,
    PROG,
    CommandError,
    profile_name,
    resolve_paths,
    say,
)

__all__ = ["PROG", "CommandError", "build_parser", "main"]


# ---- client commands (stdlib only) ---------------------------------------------------------


def cmd_token(args: argparse.Namespace) -> int:
    import coactive_token

    if args.json and args.format not in (None, "json"):
        raise CommandError(
            f"--json and --format {args.format} cannot be used together; pick one", EXIT_USAGE
        )
    fmt = "json" if args.json else args.format or "raw"
    with coactive_token.Client() as client:
        token = client.token(profile_name(args), args.min_ttl)
    print(coactive_token.format_token(token, fmt))
    return 0


def cmd_refresh(args: argparse.Namespace) -> int:
    import coactive_token

    with coactive_token.Client() as client:
        token = client.refresh(profile_name(args))
    print(
        f"profile {token.profile}: new token …{token.access_token[-4:]}, expires in {token.expires_in} s"
    )
    return 0


def cmd_exec(args: argparse.Namespace) -> int:
    import coactive_token

    from . import execrun

    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise CommandError("exec needs a command: coactive-credd exec -- CMD [ARGS...]", EXIT_USAGE)
    sock = coactive_token.default_socket_path()
    return execrun.run(sock, profile_name(args), args.min_ttl, command, args.token_file)


def _ago(stamp: str | None, now: float) -> str:
    if not stamp:
        return "-"
    from datetime import datetime

    delta = int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() - now)
    word = "in " if delta >= 0 else ""
    tail = "" if delta >= 0 else " ago"
    d = abs(delta)
    text = f"{d // 3600}h{d % 3600 // 60:02d}m" if d >= 3600 else f"{d // 60}m{d % 60:02d}s"
    return f"{word}{text}{tail}"


def cmd_status(args: argparse.Namespace) -> int:
    import json
    import time

    import coactive_token

    with coactive_token.Client() as client:
        st = client.status()
    if args.json:
        print(json.dumps(st, indent=2))
        return 0
    now = time.time()
    print(f"coactive-credd {st.get('version')} (pid {st.get('pid')}) on {st.get('socket', '?')}")
    print(
        f"vault: {'locked — run `coactive-credd unlock`' if st.get('locked') else 'unlocked'}"
        f" (key: {st.get('key_source', '?')})"
    )
    profiles = st.get("profiles", [])
    if not profiles:
        print("no profiles: run `coactive-credd login --profile NAME`")
        return 0
    rows = [("PROFILE", "AUTH", "STATE", "EXPIRES", "NEXT REFRESH", "BASE URL")]
    for p in profiles:
        rows.append(
            (
                p["name"],
                p["auth"],
                p["state"],
                _ago(p.get("expires_at"), now),
                _ago(p.get("next_refresh_at"), now),
                p["base_url"],
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    for p in profiles:
        if p.get("last_error"):
            print(f"{p['name']}: last error: {p['last_error']}")
        if p.get("proxy"):
            print(f"{p['name']}: via proxy {p.get('proxy_route') or p['proxy']}")
        if p.get("credential_warning"):
            print(f"warning: {p['credential_warning']}")
    return 0


# ---- the daemon -----------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    import asyncio

    from . import logsetup, server

    logsetup.configure(args.log_level)
    server.harden_process()
    try:
        # uvloop, when installed (`pip install coactive-credd[fast]`), answers a little faster.
        import uvloop

        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(server.run(resolve_paths(args.socket)))
    except server.StartupError as exc:
        raise CommandError(str(exc)) from None
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from . import demo

    return demo.main(duration=args.duration)


def cmd_install_service(args: argparse.Namespace) -> int:
    from . import install

    return install.install_service(args.dry_run)


def cmd_uninstall_service(args: argparse.Namespace) -> int:
    from . import install

    return install.uninstall_service(args.dry_run)


def cmd_service_status(args: argparse.Namespace) -> int:
    from . import install

    return install.service_status()


# ---- argument parsing ----------------------------------------------------------------------


def _lazy(module: str, name: str) -> Callable[[argparse.Namespace], int]:
    """A command living in another module, imported only when that command runs."""

    def run(args: argparse.Namespace) -> int:
        import importlib

        fn = getattr(importlib.import_module(f"{__package__}.{module}"), name)
        return int(fn(args))

    return run


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message}; see `{self.prog} --help`\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG, description="Keep Coactive access tokens fresh and hand them to local programs."
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )

    def add(
        name: str, fn: Callable[[argparse.Namespace], int], help: str
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(func=fn)
        return p

    def profile(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--profile", metavar="P", help="profile name (default: $COACTIVE_PROFILE or 'default')"
        )

    def min_ttl(p: argparse.ArgumentParser, help: str) -> None:
        p.add_argument("--min-ttl", type=int, default=0, metavar="SECONDS", help=help)

    p = add("login", _lazy("cli_login", "cmd_login"), "store credentials for a profile (verified with one exchange)")
    profile(p)
    p.add_argument(
        "--base-url", metavar="URL", help="Coactive API base URL (default https://api.coactive.ai)"
    )
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--personal-token-stdin",
        action="store_true",
        help="read a personal token from one line of stdin",
    )
    g.add_argument("--client-id", metavar="ID", help="system credentials: the client id")
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

    p = add("logout", _lazy("cli_login", "cmd_logout"), "remove a profile's credentials and cached token")
    profile(p)
    p.add_argument("--all", action="store_true", help="every profile")

    p = add("serve", cmd_serve, "run the daemon in the foreground (what the service units run)")
    p.add_argument(
        "--socket",
        metavar="PATH",
        help="socket path (default: $COACTIVE_CREDD_SOCKET or the per-user runtime dir)",
    )
    p.add_argument(
        "--log-level",
        default=os.environ.get("COACTIVE_CREDD_LOG_LEVEL", "info"),
        choices=["debug", "info", "warning", "error"],
        help="log verbosity (default: $COACTIVE_CREDD_LOG_LEVEL, else info)",
    )

    p = add("token", cmd_token, "print the current access token")
    profile(p)
    min_ttl(p, "needed validity; a shorter-lived token is refreshed first")
    p.add_argument(
        "--json", action="store_true", help="print the whole answer as JSON (same as --format json)"
    )
    p.add_argument(
        "--format",
        choices=["raw", "json", "header", "env"],
        default=None,
        help="raw token, JSON, an Authorization header line, or sh assignment",
    )

    p = add("refresh", cmd_refresh, "force a new token now")
    profile(p)

    p = add(
        "watch",
        _lazy("execrun", "cmd_watch"),
        "print a line each time a token is replaced or a profile's state changes (never a token)",
    )
    profile(p)
    p.add_argument("--json", action="store_true", help="one JSON event per line")

    p = add("status", cmd_status, "show every profile's state (never a secret)")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = add("audit", _lazy("cli_audit", "cmd_audit"), "which programs took tokens (uid, pid, executable)")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = add(
        "exec",
        cmd_exec,
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

    p = add("demo", cmd_demo, "a self-contained demo against a fake Coactive, about a minute long")
    p.add_argument(
        "--duration", type=float, default=60.0, metavar="SECONDS", help=argparse.SUPPRESS
    )

    dry_run = "print every file and command instead of writing or running anything"
    p = add(
        "install-service",
        cmd_install_service,
        "run the daemon as a user service (systemd or launchd): at login, restarted if it dies",
    )
    p.add_argument("--dry-run", action="store_true", help=dry_run)
    p = add(
        "uninstall-service",
        cmd_uninstall_service,
        "stop the user service and remove its files (credentials and config stay)",
    )
    p.add_argument("--dry-run", action="store_true", help=dry_run)
    add("service-status", cmd_service_status, "is the user service installed and running?")

    from . import cli_git, cli_vault

    cli_vault.add_commands(add)
    cli_git.add_commands(add)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "min_ttl", 0) < 0:
        say("--min-ttl must be 0 or more seconds")
        return EXIT_USAGE
    try:
        return int(args.func(args))
    except CommandError as exc:
        say(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        return _known_failure(exc)


# Errors the user can fix, said in one line: (module, class, exit code). Looked up in
# sys.modules, so a client command never imports a heavy room just to recognise its errors.
_EXPECTED = (
    ("coactive_token", "CredddError", None),  # carries its own exit code
    ("coactive_credd.vault", "VaultLocked", EXIT_LOCKED),
    ("coactive_credd.vault", "VaultError", EXIT_FAILURE),
    ("coactive_credd.config", "ConfigError", EXIT_FAILURE),
    ("coactive_credd.fsutil", "InsecurePathError", EXIT_FAILURE),
    ("coactive_credd.server", "StartupError", EXIT_FAILURE),
    ("coactive_credd.tokenfile", "TokenFileError", EXIT_FAILURE),
    ("coactive_credd.service", "ActivationError", EXIT_FAILURE),
)


def _known_failure(exc: Exception) -> int:
    """Turn the rooms' errors into one line and an exit code; anything else is a bug."""
    for module, name, code in _EXPECTED:
        cls = getattr(sys.modules.get(module), name, None)
        if cls is not None and isinstance(exc, cls):
            say(str(exc))
            return int(getattr(exc, "exit_code", EXIT_FAILURE)) if code is None else code
    raise exc


if __name__ == "__main__":
    sys.exit(main())
