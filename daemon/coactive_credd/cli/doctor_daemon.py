"""doctor's checks of the daemon: the socket and its owner, the user service, the daemon
answering (or the socket file a dead one left), and every profile's token as it reports it.

Each check appends :class:`~coactive_credd.cli.doctor_net.Finding` s to ``found``.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

from coactive_credd.cli.common import PROBE_TIMEOUT, resolve_paths
from coactive_credd.cli.doctor_net import NET_TIMEOUT, Finding


def check_socket(found: list[Finding]) -> tuple[str, bool]:
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


def check_service(found: list[Finding]) -> bool:
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


def check_daemon(
    found: list[Finding], sock: str, present: bool, service: bool
) -> dict[str, Any] | None:
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


def check_tokens(found: list[Finding], st: dict[str, Any]) -> None:
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
