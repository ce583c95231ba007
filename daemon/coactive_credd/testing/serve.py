"""``python3 -m coactive_credd.testing.serve [serve's flags]``: ``coactive-credd serve`` with the
test-only switches of :mod:`coactive_credd.testing.hooks` applied.

The soak and kill -9 benchmarks start the daemon this way; the shipped ``serve`` reads no
``COACTIVE_CREDD_TEST_*`` variable. Exit codes and messages are ``serve``'s.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``serve``'s flags from ``argv`` (default ``sys.argv[1:]``) and serve with the
    test switches; returns the exit code ``coactive-credd serve`` would."""
    from coactive_credd.cli import main as cli
    from coactive_credd.cli.common import CommandError, say
    from coactive_credd.cli.parser import build_parser
    from coactive_credd.testing import hooks

    args = build_parser(only="serve").parse_args(["serve", *(sys.argv[1:] if argv is None else argv)])
    try:
        return cli.cmd_serve(args, prepare=hooks.prepare)
    except CommandError as exc:
        say(str(exc))
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
