"""The LaunchAgent ``install-service`` writes (macOS), and the ``launchctl`` calls that load,
unload and show it. The shipped ``launchd/`` file is this renderer's output for
``/usr/bin/coactive-credd`` (``tests/test_install.py`` keeps them identical).
"""

from __future__ import annotations

import os
import plistlib
from pathlib import Path
from typing import Any

from coactive_credd.cli.install_layout import LAUNCHD_LABEL, Layout, Step, Target, folders_below


def macos_socket_path(home: Path) -> Path:
    """docs/ARCHITECTURE.md's macOS default socket."""
    return home / "Library/Caches/TemporaryItems/coactive-credd/credd.sock"


def render_plist(executable: str, layout: Layout) -> dict[str, Any]:
    """The LaunchAgent, as plistlib data."""
    home = layout.home
    sock = layout.socket or macos_socket_path(home)
    log = str(home / "Library/Logs/coactive-credd.log")
    plist: dict[str, Any] = {
        "Label": LAUNCHD_LABEL,
        "ProgramArguments": [executable, "serve"],
        "Sockets": {
            "Listeners": {
                "SockPathName": str(sock),
                "SockPathMode": 0o600,  # 384; plists have no octal
            }
        },
        "RunAtLoad": True,
        # Like Restart=on-failure: a crash is restarted, a deliberate stop is not.
        "KeepAlive": {"SuccessfulExit": False},
        "ProcessType": "Background",
        "StandardOutPath": log,
        "StandardErrorPath": log,
    }
    if layout.environment:
        plist["EnvironmentVariables"] = dict(sorted(layout.environment.items()))
    return plist


def plist_bytes(plist: dict[str, Any]) -> bytes:
    header = (
        b"<!-- coactive-credd LaunchAgent. `coactive-credd install-service` writes it to\n"
        b"     ~/Library/LaunchAgents/ with your paths; `coactive-credd uninstall-service`"
        b" removes it. -->\n"
    )
    body = plistlib.dumps(plist, sort_keys=False)
    first, _, rest = body.partition(b"\n")  # the XML declaration must stay first
    return first + b"\n" + header + rest


def launchd_target(executable: str, layout: Layout) -> Target:
    home = layout.home
    agents = home / "Library" / "LaunchAgents"
    plist = render_plist(executable, layout)
    sock_dir = Path(plist["Sockets"]["Listeners"]["SockPathName"]).parent
    return Target(
        "launchd",
        {agents / f"{LAUNCHD_LABEL}.plist": plist_bytes(plist)},
        folders_below(home, agents, sock_dir),
    )


def gui_domain() -> str:
    return f"gui/{os.getuid()}"


def start_steps(plist: Path) -> list[Step]:
    """After the plist is written: load the job."""
    job = f"{gui_domain()}/{LAUNCHD_LABEL}"
    # bootstrap refuses a loaded job: unload it first, which fails harmlessly if it is not.
    return [
        Step("run", argv=("launchctl", "bootout", job), may_fail=True),
        Step("run", argv=("launchctl", "enable", job)),
        Step("run", argv=("launchctl", "bootstrap", gui_domain(), str(plist))),
    ]


def stop_steps(present: list[Path]) -> list[Step]:
    """Unload the job and remove its plist (``present``)."""
    job = f"{gui_domain()}/{LAUNCHD_LABEL}"
    return [
        Step("run", argv=("launchctl", "bootout", job), may_fail=True),
        *[Step("remove", p) for p in present],
    ]


def status_argv() -> tuple[str, ...]:
    return ("launchctl", "print", f"{gui_domain()}/{LAUNCHD_LABEL}")
