"""``python3 -m coactive_credd.testing.serve [--socket PATH] [--log-level LEVEL]``: the daemon,
served as ``coactive-credd serve`` serves it, with the test-only switches of
:mod:`coactive_credd.testing.hooks` applied.

The soak and kill -9 benchmarks start the daemon this way; the shipped ``serve`` reads no
``COACTIVE_CREDD_TEST_*`` variable. Exits 0 after SIGTERM, 1 with one line when it cannot
start (as ``serve`` does).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from coactive_credd.core import harden, paths
from coactive_credd.server import logsetup, process
from coactive_credd.testing import hooks


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGTERM with the switches the environment sets; returns the exit code."""
    ap = argparse.ArgumentParser(prog="python3 -m coactive_credd.testing.serve")
    ap.add_argument("--socket")
    ap.add_argument("--log-level", default="info")
    args = ap.parse_args(argv)
    logsetup.configure(args.log_level)
    harden.harden_process()
    try:
        asyncio.run(process.run(paths.resolve(args.socket), prepare=hooks.prepare))
    except process.StartupError as exc:
        print(f"coactive-credd: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
