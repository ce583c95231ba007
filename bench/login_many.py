"""Log in many profiles through the real ``coactive-credd login`` code, in one process.

A thousand ``coactive-credd login`` processes would spend minutes starting Python; this runs
the same command function once per profile. Before each login it asks the fake Coactive for a
different token lifetime, so the profiles' refreshes are spread out instead of falling due
together.

    COACTIVE_CREDD_HOME=H python bench/login_many.py --count 1000 --base-url URL \\
        --lifetimes 120:240 < personal-token
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import urllib.request


def set_lifetime(opener: urllib.request.OpenerDirector, base_url: str, seconds: int) -> None:
    # Only the loopback fake: main() refuses any other URL.
    req = urllib.request.Request(  # noqa: S310
        base_url + "/_fake/control",
        data=json.dumps({"expires_in": seconds}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with opener.open(req, timeout=10) as resp:
        resp.read()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--base-url", required=True, help="the fake Coactive, on loopback")
    parser.add_argument("--prefix", default="p")
    parser.add_argument("--lifetimes", default="3600:3600", metavar="MIN:MAX")
    args = parser.parse_args()
    if not args.base_url.startswith(("http://127.", "http://localhost", "http://[::1]")):
        parser.error("--base-url must be the fake Coactive on loopback (http://127.0.0.1:PORT)")
    lo, hi = (int(x) for x in args.lifetimes.split(":"))
    token = sys.stdin.readline().strip()

    from coactive_credd.cli.main import main as cli_main

    # Straight to the loopback fake, whatever proxy the environment names.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    real_stdin = sys.stdin
    try:
        for i in range(args.count):
            set_lifetime(opener, args.base_url, lo + (hi - lo) * i // max(1, args.count - 1))
            sys.stdin = io.StringIO(token + "\n")
            name = f"{args.prefix}{i:04d}"
            argv = ["login", "--profile", name, "--base-url", args.base_url]
            with contextlib.redirect_stdout(io.StringIO()):
                rc = cli_main([*argv, "--personal-token-stdin"])
            if rc:
                print(f"login of profile {name} exited {rc}", file=sys.stderr)
                return rc
    finally:
        sys.stdin = real_stdin
    return 0


if __name__ == "__main__":
    sys.exit(main())
