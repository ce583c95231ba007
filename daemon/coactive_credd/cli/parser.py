"""The ``coactive-credd`` argument parser: its one-line usage errors, the building of only
the subparser a run needs, ``completion`` and the shell scripts' generation.

Each command's flags are declared in :mod:`commands`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, cast

from coactive_credd import __version__
from coactive_credd.cli.commands import BUILDERS
from coactive_credd.cli.common import EXIT_USAGE, PROG, CommandError, resolve_paths


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

    for build in BUILDERS:
        build(add)
    return parser


def cmd_completion(args: argparse.Namespace) -> int:
    """The completion script shipped in :mod:`cli_completions` (generated from this parser by
    shtab when the package was made), or with ``--list-profiles`` the configured profile
    names, one a line (nothing when the config cannot be read: a completion never fails)."""
    if args.list_profiles:
        from coactive_credd.core import config

        try:
            names = config.load(resolve_paths().config_file).profiles
        except (config.ConfigError, OSError):
            return 0
        for name in sorted(names):
            print(name)
        return 0
    if args.shell is None:
        raise CommandError(
            f"name the shell: `{PROG} completion bash` or `{PROG} completion zsh`", EXIT_USAGE
        )
    from coactive_credd.cli.completions import SCRIPTS

    sys.stdout.write(SCRIPTS[args.shell])
    return 0


# `--profile <TAB>`: a shell function asks `coactive-credd completion --list-profiles`.
_PROFILES_FN = "_coactive_credd_profiles"
PROFILE_COMPLETE = {
    "bash": _PROFILES_FN,
    "zsh": _PROFILES_FN,
    "preamble": {
        "bash": (
            "# $1: the word being completed; the configured profile names\n"
            f"{_PROFILES_FN}() {{\n"
            f'  compgen -W "$({PROG} completion --list-profiles 2>/dev/null)" -- "$1"\n'
            "}\n"
        ),
        "zsh": (
            "# the configured profile names\n"
            f"{_PROFILES_FN}() {{\n"
            "  local -a profiles\n"
            f'  profiles=(${{(f)"$({PROG} completion --list-profiles 2>/dev/null)"}})\n'
            "  compadd -a profiles\n"
            "}\n"
        ),
    },
}


def generate_completion(shell: str) -> str:
    """What shtab makes of this parser for ``shell`` (bash or zsh), ``--profile`` completing
    the configured names. Needs shtab (the ``test`` extra): run by ``tools/completions.py``,
    which writes :mod:`cli_completions`, and by the test that keeps that file current."""
    import shtab

    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                for a in sub._actions:
                    if "--profile" in a.option_strings:
                        a.complete = PROFILE_COMPLETE
    return str(shtab.complete(parser, shell=shell)).rstrip("\n") + "\n"
