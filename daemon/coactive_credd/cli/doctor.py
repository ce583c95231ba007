"""``coactive-credd doctor [--json]``: what is wrong here, and the command that fixes each.

Checks, in order: the files and their modes, the socket and its owner, the user service, the
daemon answering, every profile's token, each personal token's age (:mod:`credage`), the
clock (against Coactive's ``Date``), DNS and TLS reachability of each profile's Coactive
(through the proxy the daemon would use: :mod:`proxy`, shown without its password), and
git's credential helper. Every network step is bounded (``NET_TIMEOUT`` seconds) and the
profiles are probed in parallel, so the whole run takes seconds even with Coactive down.

Each finding is ``{"check", "status": "ok"|"note"|"problem", "message", "fix"}``; exit 1
when any is a problem. Never prints a secret (it reads no vault).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from coactive_credd.cli import doctor_net
from coactive_credd.cli.common import PROBE_TIMEOUT, resolve_paths
from coactive_credd.cli.doctor_net import NET_TIMEOUT, Finding


def _files(found: list[Finding]) -> None:
    from coactive_credd.core import config, fsutil

    paths = resolve_paths()
    folders = list(dict.fromkeys([*paths.private_dirs, paths.socket.parent]))
    for folder in folders:
        try:
            fsutil.check_private_dir(folder)
        except FileNotFoundError:
            found.append(
                Finding("files", "note", f"{folder} does not exist yet", "coactive-credd login")
            )
            continue
        except fsutil.InsecurePathError as exc:
            found.append(Finding("files", "problem", f"{folder}: {exc.problem}", exc.fix))
            continue
        found.append(Finding("files", "ok", f"{folder} is private (0700, yours)"))
    for f in (paths.config_file, paths.vault_file, paths.key_file):
        try:
            fsutil.check_private_file(f)
        except FileNotFoundError:
            if f == paths.vault_file:
                found.append(
                    Finding(
                        "files",
                        "note",
                        f"no vault at {f}: no credentials stored yet",
                        "coactive-credd login",
                    )
                )
            continue
        except fsutil.InsecurePathError as exc:
            found.append(Finding("files", "problem", f"{f}: {exc.problem}", exc.fix))
            continue
        found.append(Finding("files", "ok", f"{f} is private (0600, yours)"))
    try:
        config.load(paths.config_file)
    except config.ConfigError as exc:
        found.append(Finding("config", "problem", str(exc), f"edit {paths.config_file}"))


def _socket(found: list[Finding]) -> tuple[str, bool]:
    """Checks the socket file; answers (path, whether a socket is there)."""
    sock = str(resolve_paths().socket)
    size = len(os.fsencode(sock))
    if size > 107:
        found.append(
            Finding(
                "socket",
                "problem",
                f"{sock} is {size} bytes, longer than a Unix socket path may be (107)",
                "export COACTIVE_CREDD_SOCKET=/tmp/coactive-credd-$(id -u)/credd.sock",
            )
        )
        return sock, False
    try:
        st = os.lstat(sock)
    except FileNotFoundError:
        return sock, False
    except OSError as exc:
        found.append(
            Finding("socket", "problem", f"{sock}: {exc.strerror}", f"ls -ld {Path(sock).parent}")
        )
        return sock, False
    if not stat.S_ISSOCK(st.st_mode):
        found.append(
            Finding("socket", "problem", f"{sock} is not a socket", f"mv {sock} {sock}.bak")
        )
        return sock, False
    if st.st_uid != os.getuid():
        found.append(
            Finding(
                "socket",
                "problem",
                f"{sock} belongs to uid {st.st_uid}, not you (uid {os.getuid()})",
                "set COACTIVE_CREDD_SOCKET to a path of yours (or COACTIVE_CREDD_DAEMON_UID for a sidecar)",
            )
        )
    elif stat.S_IMODE(st.st_mode) & 0o077:
        found.append(
            Finding(
                "socket",
                "problem",
                f"{sock} has mode {stat.S_IMODE(st.st_mode):04o}",
                f"chmod 600 {sock}",
            )
        )
    else:
        found.append(Finding("socket", "ok", f"{sock} is yours, mode 0600"))
    return sock, True


def _service(found: list[Finding]) -> bool:
    """The user service, when one is installed; answers whether it is."""
    from coactive_token import service_installed

    if not service_installed():
        found.append(
            Finding(
                "service",
                "note",
                "no user service installed: clients start the daemon when needed",
                "coactive-credd install-service",
            )
        )
        return False
    if sys.platform == "darwin" or not shutil.which("systemctl"):
        found.append(Finding("service", "ok", "a user service is installed"))
        return True
    try:
        state = subprocess.run(
            ["systemctl", "--user", "is-active", "coactive-credd.socket", "coactive-credd.service"],
            capture_output=True,
            text=True,
            timeout=NET_TIMEOUT,
            check=False,
        ).stdout.split()
    except (OSError, subprocess.TimeoutExpired):
        state = []
    if state[:1] == ["active"] or state[1:2] == ["active"]:
        found.append(Finding("service", "ok", f"systemd user units: {' / '.join(state)}"))
    else:
        found.append(
            Finding(
                "service",
                "problem",
                f"the user service is installed but not running ({' / '.join(state) or 'unknown'})",
                "systemctl --user start coactive-credd.socket",
            )
        )
    return True


def _daemon(found: list[Finding], sock: str, present: bool, service: bool) -> dict[str, Any] | None:
    import coactive_token
    from coactive_credd.core import pidfile

    if not present:
        if service:
            fix = "systemctl --user start coactive-credd.socket"
        else:
            fix = "coactive-credd serve  (or any `coactive-credd token`, which starts it)"
        level = "note" if coactive_token.autostart_enabled() and not service else "problem"
        found.append(Finding("daemon", level, f"no daemon is running on {sock}", fix))
        return None
    try:
        with coactive_token.Client(sock, timeout=PROBE_TIMEOUT, autostart=False) as client:
            st = client.status()
    except coactive_token.CredddError as exc:
        pid = pidfile.running_pid(sock)
        who = f" (pid {pid})" if pid else ""
        found.append(
            Finding(
                "daemon",
                "problem",
                f"the daemon{who} does not answer: {exc.message}",
                "coactive-credd stop",
            )
        )
        return None
    found.append(
        Finding("daemon", "ok", f"coactive-credd {st.get('version')} (pid {st.get('pid')}) answers")
    )
    if st.get("last_reload_error"):
        found.append(
            Finding(
                "config",
                "problem",
                f"the daemon's last reload failed: {st['last_reload_error']}",
                f"fix the file, then `kill -HUP {st.get('pid')}`",
            )
        )
    return st


def _tokens(found: list[Finding], st: dict[str, Any]) -> None:
    from coactive_credd.core.config import login_command

    if st.get("locked"):
        found.append(Finding("tokens", "problem", "the vault is locked", "coactive-credd unlock"))
        return
    for p in st.get("profiles", []):
        name, state = p["name"], p["state"]
        if state in ("valid", "refreshing"):
            found.append(
                Finding(
                    "tokens",
                    "ok",
                    f"profile {name}: {state}, served until {p.get('serve_until') or p.get('expires_at')}",
                )
            )
        elif state == "reauth_required":
            found.append(
                Finding(
                    "tokens",
                    "problem",
                    f"profile {name}: Coactive rejected its credentials ({p.get('last_error')})",
                    login_command(name, p["auth"], p.get("client_id")),
                )
            )
        else:
            found.append(
                Finding(
                    "tokens",
                    "problem",
                    f"profile {name}: {state} ({p.get('last_error') or 'no token yet'})",
                    f"coactive-credd refresh --profile {name}",
                )
            )


def _credential_age(found: list[Finding]) -> None:
    """Personal tokens near or past Coactive's 3-month limit (from config.toml: works without
    the daemon). A note from 14 days before; a problem once past."""
    from coactive_credd.core import config, credage

    try:
        profiles = config.load(resolve_paths().config_file).profiles.values()
    except config.ConfigError:
        return
    now = time.time()
    for p in profiles:
        left = credage.days_left(p, now)
        if left is None:
            continue
        text = credage.warning(p, now)
        if text is None:
            found.append(
                Finding(
                    "credential",
                    "ok",
                    f"profile {p.name}: personal token good for {int(left)} more days",
                )
            )
        else:
            message, _, fix = text.partition("; ")
            found.append(Finding("credential", "problem" if left <= 0 else "note", message, fix))


def _git(found: list[Finding]) -> None:
    from coactive_credd.core import config

    if not shutil.which("git"):
        return
    try:
        out = subprocess.run(
            ["git", "config", "--global", "--get-regexp", r"^credential\..*helper$"],
            capture_output=True,
            text=True,
            timeout=NET_TIMEOUT,
            check=False,
        ).stdout
        profiles = config.load(resolve_paths().config_file).profiles.values()
    except (OSError, subprocess.TimeoutExpired, config.ConfigError):
        return
    lines = out.splitlines()
    for url in sorted({p.base_url for p in profiles}):
        if any(
            line.startswith(f"credential.{url}.helper") and line.endswith(" coactive")
            for line in lines
        ):
            found.append(Finding("git", "ok", f"git uses the coactive helper for {url}"))
        else:
            names = sorted(p.name for p in profiles if p.base_url == url)
            found.append(
                Finding(
                    "git",
                    "note",
                    f"git is not set up for {url}",
                    f"coactive-credd setup-git --profile {names[0]}",
                )
            )


def diagnose() -> list[Finding]:
    found: list[Finding] = []
    _files(found)
    sock, present = _socket(found)
    service = _service(found)
    st = _daemon(found, sock, present, service)
    if st is not None:
        _tokens(found, st)
    _credential_age(found)
    doctor_net.network(found)
    _git(found)
    return found


def cmd_doctor(args: argparse.Namespace) -> int:
    found = diagnose()
    bad = any(f.status == "problem" for f in found)
    if args.json:
        print(json.dumps({"ok": not bad, "findings": [asdict(f) for f in found]}, indent=2))
    else:
        mark = {"ok": "ok     ", "note": "note   ", "problem": "PROBLEM"}
        for f in found:
            fix = f"\n          fix: {f.fix}" if f.fix and f.status != "ok" else ""
            print(f"{mark[f.status]}  {f.check}: {f.message}{fix}")
        print(
            "no problems found"
            if not bad
            else "problems found: run each fix above, then `coactive-credd doctor` again"
        )
    return 1 if bad else 0
