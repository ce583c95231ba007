"""``coactive-credd watch``: a line per token rotation or state change, following a daemon
that restarts.
"""

from __future__ import annotations

import argparse
import json
import time

import coactive_token

from coactive_credd.cli.execkeeper import RECONNECT

# Seconds `watch` waits for a restarted daemon before it exits 3: a service manager restarts
# one within a few (RestartSec=2s; a socket unit at once).
WATCH_GIVE_UP = 15.0


def cmd_watch(args: argparse.Namespace) -> int:
    """``coactive-credd watch``: one line per token rotation or state change, for a person
    (``--json``: the event objects, one per line, for a script). A daemon that restarts is
    followed again, as ``exec`` does (its first events repeat each profile's state). Exit 3
    when the daemon cannot be reached at the start, or stays away ``WATCH_GIVE_UP`` s."""
    profile = args.profile and coactive_token.check_profile_name(args.profile)
    sock = coactive_token.default_socket_path()
    followed = False
    while True:
        try:
            for ev in coactive_token.watch(profile, socket_path=sock):
                followed = True
                _print_event(ev, args.json)
        except coactive_token.DaemonUnreachable:
            if not followed:
                raise
        if not _back(sock, WATCH_GIVE_UP):
            raise coactive_token.DaemonUnreachable(
                f"coactive-credd on {sock} closed the event stream and did not come back "
                f"within {WATCH_GIVE_UP:g} s",
                hint="start it again: coactive-credd serve",
                code="unreachable",
            )


def _back(sock: str, within: float) -> bool:
    """Whether a daemon answers on ``sock`` again within ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        time.sleep(RECONNECT / 4)
        try:
            with coactive_token.Client(sock, timeout=2, autostart=False) as client:
                if client.request("GET", "/healthz")[0] == 200:
                    return True
        except coactive_token.UntrustedDaemon:
            raise
        except coactive_token.CredddError:
            pass
    return False


def _print_event(ev: dict[str, object], as_json: bool) -> None:
    if as_json:
        print(json.dumps(ev, separators=(",", ":")), flush=True)
        return
    sha = ev.get("token_sha256")
    line = " ".join(
        [
            time.strftime("%H:%M:%S"),
            str(ev.get("profile")),
            str(ev.get("state")),
            f"expires {ev['expires_at']}" if ev.get("expires_at") else "",
            f"token sha256:{str(sha)[:12]}" if sha else "no token",
        ]
    )
    print(" ".join(line.split()), flush=True)
