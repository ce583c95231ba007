"""The client commands ``token`` and ``refresh``: stdlib only, so they start fast.

They go through :mod:`coactive_token` (the same client the Python shim is). A daemon is
started for them only when the config names the profile: a daemon started for a profile that
does not exist would only answer 404 and stay behind, empty.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from coactive_credd.cli.common import (
    EXIT_UNKNOWN_PROFILE,
    EXIT_USAGE,
    CommandError,
    profile_name,
    progress,
    resolve_paths,
    say,
)


def cmd_token(args: argparse.Namespace) -> int:
    import coactive_token

    if args.json and args.format not in (None, "json"):
        raise CommandError(
            f"--json and --format {args.format} cannot be used together; pick one "
            f"(`coactive-credd token --help`)",
            EXIT_USAGE,
        )
    fmt = "json" if args.json else args.format or "raw"
    name = profile_name(args)
    with coactive_token.Client(autostart=False) as client:
        token = _fetch(client, name, args.min_ttl, args.wait)
    print(coactive_token.format_token(token, fmt))
    return 0


def _fetch(client: Any, name: str, min_ttl: int, wait: float | None) -> Any:
    """The token, starting a daemon only for a profile the config names (a daemon started
    for nothing would stay behind empty), and waiting out an outage for ``wait`` seconds."""
    import time

    import coactive_token

    deadline = None if wait is None else time.monotonic() + wait
    told = False
    while True:
        try:
            try:
                return client.token(name, min_ttl)
            except coactive_token.DaemonUnreachable as exc:
                if not _may_start(client, name, exc):
                    raise
                client.autostart = True
                progress("no daemon answers; starting one")
                return client.token(name, min_ttl)
        except coactive_token.UpstreamUnavailable as exc:
            if deadline is None or time.monotonic() >= deadline:
                raise
            if not told:
                progress(f"waiting up to {wait:g} s for Coactive ({exc.message})")
                told = True
            # Asking is free: the daemon never logs in during its backoff, whoever asks.
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))


def _may_start(client: Any, name: str, exc: Exception) -> bool:
    """Whether a client may start a daemon for ``name``; exit 4 when no config names it."""
    import coactive_token

    if not coactive_token.autostart_enabled():
        return False
    if "is not answering" in str(exc):
        return False  # a daemon is there but wedged: starting another would not help
    from coactive_credd.core import config

    try:
        profiles = config.load(resolve_paths().config_file).profiles
    except config.ConfigError:
        return True  # the daemon started will say what is wrong, in its log
    if name not in profiles:
        raise CommandError(
            f"no profile named {name!r} is configured; run `coactive-credd login --profile {name}`",
            EXIT_UNKNOWN_PROFILE,
        ) from None
    return True


def cmd_refresh(args: argparse.Namespace) -> int:
    import coactive_token

    with coactive_token.Client(autostart=False) as client:
        if args.all:
            names = [p["name"] for p in client.status().get("profiles", [])]
            if not names:
                raise CommandError(
                    "no profiles to refresh; run `coactive-credd login --profile NAME`",
                    EXIT_UNKNOWN_PROFILE,
                )
        else:
            names = [profile_name(args)]
            try:
                client.request("GET", "/healthz")
            except coactive_token.DaemonUnreachable as exc:
                if not _may_start(client, names[0], exc):
                    raise
                client.autostart = True
        worst = 0
        for name in names:
            try:
                _refresh_one(client, name)
            except coactive_token.CredddError as exc:
                if not args.all:
                    raise
                say(f"profile {name}: {exc}")
                worst = max(worst, exc.exit_code)
    return worst


def _refresh_one(client: Any, name: str) -> None:
    import coactive_token

    progress(f"asking Coactive for a new token for profile {name}")
    try:
        token = client.refresh(name)
    except coactive_token.UpstreamUnavailable as exc:
        try:
            current = client.token(name)
        except coactive_token.CredddError:
            raise exc from None
        print(
            f"profile {current.profile}: no new token ({exc.message}); the current token "
            f"…{current.access_token[-4:]} is still served for {current.expires_in} s and the "
            f"daemon keeps trying; `coactive-credd status` shows the next attempt",
            file=sys.stderr,
        )
        return
    print(
        f"profile {token.profile}: new token …{token.access_token[-4:]}, expires in {token.expires_in} s"
    )
