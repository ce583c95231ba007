"""The systemd user units ``install-service`` writes (Linux), and the ``systemctl --user``
calls that start, stop and show them. The shipped ``systemd/`` files are this renderer's output
for ``/usr/bin/coactive-credd`` (``tests/test_install.py`` keeps them identical).
"""

from __future__ import annotations

import os
from pathlib import Path

from coactive_credd.cli.install_layout import (
    PROG,
    SERVICE_UNIT,
    SOCKET_UNIT,
    Layout,
    Step,
    Target,
    folders_below,
)


def _spec(text: str) -> str:
    """Escape systemd specifiers: a literal ``%`` in a path is ``%%`` in a unit file."""
    return text.replace("%", "%%")


def _quoted(word: str) -> str:
    """One word of a space-separated setting, quoted when it holds a space or a quote."""
    if any(c in word for c in " \t\"'\\"):
        return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return word


def _exec_word(word: str) -> str:
    """One word of an Exec*= line, where ``$`` would also expand a variable."""
    return _quoted(word.replace("$", "$$"))


def _unit_path(path: Path, home: Path) -> str:
    """``%h/...`` for paths under the home folder, so the unit reads like the shipped one."""
    try:
        return "%h/" + _spec(str(path.relative_to(home)))
    except ValueError:
        return _spec(str(path))


SOCKET_TEMPLATE = """\
# coactive-credd user unit. `coactive-credd install-service` writes it to
# ~/.config/systemd/user/ and `coactive-credd uninstall-service` removes it.
[Unit]
Description=coactive-credd socket (Coactive access tokens for local programs)

[Socket]
ListenStream={listen}
# Only this user may connect; the daemon also checks every peer's uid.
SocketMode=0600
DirectoryMode=0700
RemoveOnStop=yes

[Install]
WantedBy=sockets.target
"""

SERVICE_TEMPLATE = """\
# coactive-credd user unit. `coactive-credd install-service` writes it to
# ~/.config/systemd/user/ with the path of the installed executable, and
# `coactive-credd uninstall-service` removes it.
[Unit]
Description=coactive-credd (keeps Coactive access tokens fresh for local programs)
Requires=coactive-credd.socket
After=coactive-credd.socket

[Service]
Type=notify
NotifyAccess=main
{environment}\
# ProtectSystem=strict leaves only the ReadWritePaths= below writable, and they must exist
# when the sandbox is set up; "+" creates them outside it, before the first login has.
ExecStartPre=+/bin/mkdir -p {data_dirs}
ExecStart={exec_start} serve
# SIGHUP re-reads the config and the vault (`systemctl --user reload coactive-credd`).
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
RestartSec=2s
WatchdogSec=30s
TimeoutStopSec=15s
SyslogIdentifier=coactive-credd
UMask=0077

# Hardening, each line checked against what the daemon does (docs/SERVICE.md):
# no setuid gains, no exotic personalities, no W+X memory (CPython, cryptography and aiohttp
# run without it), only the address families it uses: its own Unix socket and HTTPS to
# Coactive.
NoNewPrivileges=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
# A user manager can build the file-system sandbox only inside a user namespace; where the
# kernel refuses one, systemd starts the daemon without these. No PrivateTmp=: the daemon
# writes nothing to /tmp, and a private /tmp would hide a COACTIVE_CREDD_HOME kept there.
PrivateUsers=yes
ProtectSystem=strict
ReadWritePaths={rw_paths}

[Install]
WantedBy=default.target
Also=coactive-credd.socket
"""


def render_systemd_units(executable: str, layout: Layout) -> dict[str, str]:
    """``{unit name: text}`` for the socket and the service."""
    home = layout.home
    if layout.socket is None:
        listen, runtime = "%t/coactive-credd/credd.sock", "%t/coactive-credd"
    else:
        # ListenStream= takes the rest of the line as the path: no quoting there.
        listen, runtime = _spec(str(layout.socket)), _unit_path(layout.socket.parent, home)
    data = [_unit_path(p, home) for p in dict.fromkeys([layout.config_dir, layout.data_dir])]
    environment = "".join(
        f"Environment={_quoted(_spec(f'{k}={v}'))}\n" for k, v in sorted(layout.environment.items())
    )
    service = SERVICE_TEMPLATE.format(
        environment=environment,
        data_dirs=" ".join(_exec_word(d) for d in data),
        exec_start=_exec_word(_spec(executable)),
        rw_paths=" ".join(
            _quoted(d) for d in [*data, *([] if runtime in data else ["-" + runtime])]
        ),
    )
    return {SOCKET_UNIT: SOCKET_TEMPLATE.format(listen=listen), SERVICE_UNIT: service}


def systemd_target(executable: str, layout: Layout) -> Target:
    env_config = layout.environment.get("XDG_CONFIG_HOME")
    base = Path(env_config) if env_config else layout.home / ".config"
    unit_dir = base / "systemd" / "user"
    units = render_systemd_units(executable, layout)
    # The socket unit's DirectoryMode= folder outlives the socket (RemoveOnStop= takes only
    # the socket itself).
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    leftovers = (Path(runtime) / PROG,) if runtime and layout.socket is None else ()
    return Target(
        "systemd",
        {unit_dir / name: text.encode() for name, text in units.items()},
        folders_below(layout.home, unit_dir),
        leftovers,
    )


def systemctl(*args: str) -> Step:
    return Step("run", argv=("systemctl", "--user", *args))


def start_steps(changed: bool) -> list[Step]:
    """After the files are written: start (or restart) the units."""
    steps: list[Step] = []
    if changed:
        # A new ExecStart= or ListenStream= takes effect only from a fresh start.
        steps.append(systemctl("stop", SERVICE_UNIT, SOCKET_UNIT))
    steps.append(systemctl("daemon-reload"))
    steps.append(systemctl("enable", "--now", SOCKET_UNIT, SERVICE_UNIT))
    return steps


def stop_steps(present: list[Path]) -> list[Step]:
    """Stop the units and remove their files (``present``)."""
    steps = [
        Step(
            "run",
            argv=("systemctl", "--user", "disable", "--now", SERVICE_UNIT, SOCKET_UNIT),
            may_fail=True,
        )
    ]
    steps += [Step("remove", p) for p in present]
    steps.append(Step("run", argv=("systemctl", "--user", "daemon-reload"), may_fail=True))
    return steps


def status_argv() -> tuple[str, ...]:
    return ("systemctl", "--user", "--no-pager", "status", SOCKET_UNIT, SERVICE_UNIT)
