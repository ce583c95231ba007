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
from typing import TYPE_CHECKING, Any

from coactive_credd.cli import doctor_net
from coactive_credd.cli.common import PROBE_TIMEOUT, resolve_paths
from coactive_credd.cli.doctor_net import NET_TIMEOUT, Finding

if TYPE_CHECKING:
    from coactive_credd.core.paths import Paths


_WRITABLE_FIX = "set COACTIVE_CREDD_HOME to a writable folder of yours (or remount it read-write)"


def _unwritable(folder: Path) -> str | None:
    """Why serve could not write in ``folder`` (its lock, socket, vault), or None: tried for
    real, with a file made and removed at once, since a read-only mount passes every mode
    check."""
    import errno
    import tempfile

    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".doctor-"):
            pass
    except OSError as exc:
        if exc.errno == errno.EROFS:
            return "it is on a read-only file system: serve can write no lock, socket or vault"
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return f"no room to write there ({exc.strerror}): free some space (`df -h {folder}`)"
        return f"cannot write there ({exc.strerror})"
    return None


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
        problem = _unwritable(folder)
        if problem:
            found.append(Finding("files", "problem", f"{folder}: {problem}", _WRITABLE_FIX))
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
    _vault(found, paths)


def _vault(found: list[Finding], paths: Paths) -> None:
    """Open the vault as serve does: one it cannot decrypt (a wrong or missing key, a damaged
    file) is a problem here too, with the vault's own fix, never "no problems found"."""
    import re

    from coactive_credd.cli.common import open_vault
    from coactive_credd.vault import VaultError, VaultLocked

    if not paths.vault_file.exists():
        return
    try:
        vault = open_vault(paths)
        if vault.locked:
            found.append(Finding("vault", "ok", "the vault is protected by a passphrase"))
            return
        vault.load()
    except VaultLocked:
        found.append(Finding("vault", "ok", "the vault is protected by a passphrase"))
        return
    except OSError as exc:
        found.append(
            Finding("vault", "problem", f"the daemon cannot open the vault: {exc}", _WRITABLE_FIX)
        )
        return
    except VaultError as exc:
        message = " ".join(str(exc).split())
        fix = re.findall(r"`([^`]+)`", message)
        found.append(
            Finding(
                "vault",
                "problem",
                f"the daemon cannot open the vault: {message}",
                " && ".join(fix)
                or f"coactive-credd login  # after moving {paths.vault_file} aside",
            )
        )
        return
    found.append(
        Finding("vault", "ok", f"{paths.vault_file} opens with its key ({vault.key_source})")
    )


def _key_source(found: list[Finding]) -> None:
    """Name the vault's key source (from its header: no secret is read); for the Secret
    Service, check that it answers and that the vault's item is there and unlocked."""
    from coactive_credd.core import fsutil
    from coactive_credd.vault import SOURCE_NAMES, SOURCE_SECRET_SERVICE, Vault, VaultError

    paths = resolve_paths()
    vault = Vault(paths.vault_file, paths.key_file, paths.lock_file)
    try:
        header = vault.header()
    except (VaultError, fsutil.InsecurePathError, OSError):
        return  # the files check reports it
    if header is None:
        return
    name = SOURCE_NAMES[header.source]
    if header.source != SOURCE_SECRET_SERVICE:
        found.append(Finding("vault key", "ok", f"the vault's key source is {name}"))
        return
    try:
        state = vault.secret_service.state(header.params)
    except VaultError as exc:
        found.append(
            Finding("vault key", "problem", f"the vault's key source is secret-service: {exc}")
        )
        return
    if state == "missing":
        found.append(
            Finding(
                "vault key",
                "problem",
                f"the vault's key source is secret-service, but its item is not in the Secret "
                f"Service (application=coactive-credd key-id={header.params.hex()})",
                "restore the login keyring, or set the vault aside and `coactive-credd login`",
            )
        )
    elif state == "locked":
        found.append(
            Finding(
                "vault key",
                "problem",
                "the vault's key source is secret-service, and its collection is locked",
                "unlock the login keyring (log in to the desktop); the daemon serves again by itself",
            )
        )
    else:
        found.append(
            Finding(
                "vault key",
                "ok",
                "the vault's key source is secret-service: it answers and holds the vault's item",
            )
        )


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


def _nobody_listens(sock: str) -> bool:
    """Whether connecting to ``sock`` is refused (a socket file with no listener)."""
    import socket as socketlib

    with socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM) as s:
        s.settimeout(PROBE_TIMEOUT)
        try:
            s.connect(sock)
        except ConnectionRefusedError:
            return True
        except OSError:
            return False
    return False


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
        if pid is None and _nobody_listens(sock):
            # Left by a daemon that failed to start or died: no process to stop (`stop` says
            # so too); the next serve, or a client's start, replaces it.
            fix = (
                "systemctl --user restart coactive-credd.socket"
                if service
                else "coactive-credd serve"
            )
            found.append(
                Finding(
                    "daemon",
                    "problem",
                    f"no daemon is running; {sock} is a socket file nobody listens on (left "
                    "by a daemon that failed to start or died; serve replaces it)",
                    fix,
                )
            )
            return None
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
    from coactive_credd.core.config import reauth_fix

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
                    reauth_fix(name, p["auth"], p.get("client_id"), p.get("base_url")),
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


def _git_config(pattern: str) -> list[str]:
    return subprocess.run(
        ["git", "config", "--global", "--get-regexp", pattern],
        capture_output=True,
        text=True,
        timeout=NET_TIMEOUT,
        check=False,
    ).stdout.splitlines()


def _git(found: list[Finding]) -> None:
    """For each Coactive origin: is git set up for it, and which profile it gets, as the
    helper picks it (git's username from setup-git, else $COACTIVE_PROFILE, else default)."""
    from coactive_credd.cli.git import origin_url
    from coactive_credd.core import config, gitcred

    if not shutil.which("git"):
        return
    try:
        helpers = _git_config(r"^credential\..*\.helper$")
        usernames = _git_config(r"^credential\..*\.username$")
        profiles = config.load(resolve_paths().config_file).profiles.values()
    except (OSError, subprocess.TimeoutExpired, config.ConfigError):
        return
    origins: dict[str, list[str]] = {}
    for p in profiles:
        origin = gitcred.base_url_origin(p.base_url)
        if origin is not None:
            origins.setdefault(origin_url(origin), []).append(p.name)
    for url, names in sorted(origins.items()):
        names.sort()
        key = f"credential.{url}"
        if not any(line == f"{key}.helper coactive" for line in helpers):
            found.append(
                Finding(
                    "git",
                    "note",
                    f"git is not set up for {url}",
                    f"coactive-credd setup-git --profile {names[0]}",
                )
            )
            continue
        pinned = [
            line.split(" ", 1)[1] for line in usernames if line.startswith(f"{key}.username ")
        ]
        username = pinned[-1] if pinned else None
        chosen = gitcred.choose(names, username, os.environ.get("COACTIVE_PROFILE"))
        why = (
            f"{key}.username = {username}"
            if username
            else "COACTIVE_PROFILE"
            if chosen and chosen == os.environ.get("COACTIVE_PROFILE")
            else "no username set"
        )
        if chosen is None:
            found.append(
                Finding(
                    "git",
                    "problem",
                    f"git asks coactive-credd for {url}, but no profile answers ({why}; "
                    f"profiles there: {', '.join(names)})",
                    f"coactive-credd setup-git --profile {names[0]}",
                )
            )
        else:
            found.append(Finding("git", "ok", f"git gets profile {chosen!r} for {url} ({why})"))


def diagnose() -> list[Finding]:
    found: list[Finding] = []
    _files(found)
    _key_source(found)
    sock, present = _socket(found)
    service = _service(found)
    st = _daemon(found, sock, present, service)
    if st is not None:
        _tokens(found, st)
    _credential_age(found)
    doctor_net.network(found, st)
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
