"""``coactive-credd status``: every profile's state, from the daemon or, without one, the config.

Exit codes: 0 when every profile can serve a token now (``valid`` or ``refreshing``);
7 when the vault is locked, 5 when a profile needs a new login (``reauth_required``), 6 when a
profile has no usable token for another reason, 3 when no daemon answers (the profiles the
config names are still shown, and ``--json`` still prints JSON). Never a secret.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from coactive_credd.cli.common import (
    EXIT_LOCKED,
    EXIT_REJECTED,
    EXIT_UNAVAILABLE,
    EXIT_UNREACHABLE,
    PROBE_TIMEOUT,
    resolve_paths,
    say,
)

SERVING = ("valid", "refreshing")


def exit_code(st: dict[str, Any]) -> int:
    """0 when every profile can serve; else the code of the most pressing problem."""
    states = [p.get("state") for p in st.get("profiles", [])]
    if st.get("locked") or "locked" in states:
        return EXIT_LOCKED
    if "reauth_required" in states:
        return EXIT_REJECTED
    if any(s not in SERVING for s in states):
        return EXIT_UNAVAILABLE
    return 0


def _ago(stamp: str | None, now: float) -> str:
    if not stamp:
        return "-"
    delta = int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() - now)
    word = "in " if delta >= 0 else ""
    tail = "" if delta >= 0 else " ago"
    d = abs(delta)
    text = f"{d // 3600}h{d % 3600 // 60:02d}m" if d >= 3600 else f"{d // 60}m{d % 60:02d}s"
    return f"{word}{text}{tail}"


def log_destination(pid: int | None) -> str | None:
    """Where the daemon's log goes: its stderr's file, or the journal of the user service."""
    if pid is None:
        return None
    try:
        target = os.readlink(f"/proc/{pid}/fd/2")
    except OSError:
        target = ""
    if target.startswith("/") and not target.startswith("/dev/"):
        return target
    from coactive_token import service_installed

    if service_installed():
        if sys.platform == "darwin":
            return "~/Library/Logs/coactive-credd.log (launchd)"
        return "journalctl --user -u coactive-credd"
    return target or None


def _offline(sock: str, why: str, hint: str) -> dict[str, Any]:
    """What can be said without a daemon: the profiles in the config."""
    import time

    from coactive_credd.core import config, credage

    profiles: list[dict[str, Any]] = []
    error = {"code": "unreachable", "message": why, "hint": hint}
    try:
        cfg = config.load(resolve_paths().config_file)
        now = time.time()
        profiles = [
            {
                "name": p.name,
                "auth": p.auth,
                "base_url": p.base_url,
                "state": None,
                **credage.status_fields(p, now),  # the personal token's age needs no daemon
            }
            for p in sorted(cfg.profiles.values(), key=lambda p: p.name)
        ]
    except Exception as exc:
        error["config_error"] = str(exc)
    return {"running": False, "socket": sock, "profiles": profiles, "error": error}


def cmd_status(args: argparse.Namespace) -> int:
    import coactive_token

    sock = str(resolve_paths().socket)
    try:
        with coactive_token.Client(sock, timeout=PROBE_TIMEOUT + 5, autostart=False) as client:
            st = client.status()
    except coactive_token.DaemonUnreachable as exc:
        off = _offline(sock, exc.message, exc.hint)
        if args.json:
            print(json.dumps(off, indent=2))
        else:
            _print_offline(off)
        return EXIT_UNREACHABLE
    st.setdefault("running", True)
    st["log"] = log_destination(st.get("pid"))
    code = exit_code(st)
    if args.json:
        print(json.dumps(st, indent=2))
    else:
        _print_status(st)
    return code


def _print_offline(off: dict[str, Any]) -> None:
    err = off["error"]
    say(f"{err['message']}; {err['hint']}")
    if "config_error" in err:
        print(f"config: {err['config_error']}")
    if not off["profiles"]:
        print("no profiles configured: run `coactive-credd login --profile NAME`")
        return
    print("configured profiles (no daemon to ask about their tokens):")
    rows = [("PROFILE", "AUTH", "BASE URL")]
    rows += [(p["name"], p["auth"], p["base_url"]) for p in off["profiles"]]
    _table(rows)
    for p in off["profiles"]:
        if p.get("credential_warning"):
            print(f"warning: {p['credential_warning']}")


def _table(rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def _print_status(st: dict[str, Any]) -> None:
    now = time.time()
    print(f"coactive-credd {st.get('version')} (pid {st.get('pid')}) on {st.get('socket', '?')}")
    print(
        f"vault: {'locked; run `coactive-credd unlock`' if st.get('locked') else 'unlocked'}"
        f" (key: {st.get('key_source', '?')})"
    )
    if st.get("log"):
        print(f"log: {st['log']}")
    if st.get("last_reload_error"):
        print(f"last reload FAILED (still serving the previous config): {st['last_reload_error']}")
    profiles = st.get("profiles", [])
    if not profiles:
        print("no profiles: run `coactive-credd login --profile NAME`")
        return
    # SERVED UNTIL: the last moment the daemon hands the token out (expires_at - skew).
    rows = [("PROFILE", "AUTH", "STATE", "SERVED UNTIL", "NEXT REFRESH", "BASE URL")]
    for p in profiles:
        auth = p["auth"]
        if p.get("client_id"):
            auth = f"client {p['client_id']}"
        rows.append(
            (
                p["name"],
                auth,
                p["state"],
                _ago(p.get("serve_until", p.get("expires_at")), now),
                _ago(p.get("next_refresh_at"), now),
                p["base_url"],
            )
        )
    _table(rows)
    for p in profiles:
        if p.get("last_error"):
            print(f"{p['name']}: last error: {p['last_error']}")
        if p.get("proxy"):
            print(f"{p['name']}: via proxy {p.get('proxy_route') or p['proxy']}")
        if p.get("credential_warning"):
            print(f"warning: {p['credential_warning']}")
        if p["state"] == "reauth_required":
            print(f"{p['name']}: log in again: {_login_hint(p)}")


def _login_hint(p: dict[str, Any]) -> str:
    from coactive_credd.core.config import login_command

    return login_command(p["name"], p["auth"], p.get("client_id"))
