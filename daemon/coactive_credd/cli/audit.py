"""``coactive-credd audit``: which programs took tokens from the running daemon.

Client side only (stdlib and :mod:`coactive_token`): the daemon keeps the table (see
:mod:`audit`); this prints it. Exit 0 with the table; 3 when no daemon answers.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime


def _when(t: object, now: float) -> str:
    if not isinstance(t, int | float):
        return "-"
    ago = max(0, int(now - t))
    stamp = datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{stamp} ({ago // 60}m{ago % 60:02d}s ago)" if ago < 3600 else stamp


def cmd_audit(args: argparse.Namespace) -> int:
    import coactive_token
    from coactive_credd.cli.common import CommandError

    with coactive_token.Client() as client:
        status, body = client.request("GET", "/v1/audit")
    if status != 200:
        error = body.get("error")
        said = error.get("message", status) if isinstance(error, dict) else status
        raise CommandError(
            f"the daemon did not answer the audit: {said}; "
            "is it older than this command? restart it (`coactive-credd stop`)"
        )
    if args.json:
        print(json.dumps(body, indent=2))
        return 0
    clients = body.get("clients", [])
    if not clients:
        print("no client has connected since the daemon started")
        return 0
    now = time.time()
    rows = [("UID", "PID", "EXECUTABLE", "CONN", "TOKENS", "PROFILES", "FIRST SEEN", "LAST SEEN")]
    for c in clients:
        profiles = ",".join(f"{n}:{k}" for n, k in c.get("profiles", {}).items()) or "-"
        rows.append(
            (
                str(c.get("uid")),
                str(c.get("pid")),
                str(c.get("exe")),
                str(c.get("connections")),
                str(c.get("tokens")),
                profiles,
                _when(c.get("first_seen"), now),
                _when(c.get("last_seen"), now),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return 0
