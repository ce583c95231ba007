"""``install-service`` / ``uninstall-service`` / ``service-status``.

Writes the systemd user units (Linux) or the LaunchAgent (macOS) with the absolute path of
the ``coactive-credd`` being run, so a venv or pipx install works, then asks the service
manager to start them. Every step is a :class:`Step`, so ``--dry-run`` prints exactly what
a real run would do. The service manager is reached through a ``runner`` function that
tests replace. Uninstall removes the files install writes (and the folders it had to create
for them, once empty), never the vault or the config.

The shipped ``systemd/`` and ``launchd/`` files are these renderers' output for
``/usr/bin/coactive-credd``; ``tests/test_install.py`` keeps the two identical.
"""

from __future__ import annotations

import os
import plistlib
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO

from coactive_credd.core import fsutil

PROG = "coactive-credd"
SOCKET_UNIT = "coactive-credd.socket"
SERVICE_UNIT = "coactive-credd.service"
LAUNCHD_LABEL = "ai.coactive.credd"
SHIPPED_EXECUTABLE = "/usr/bin/coactive-credd"

Manager = Literal["systemd", "launchd"]
Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]


def run_command(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """The real service-manager call: no shell, output captured for the report."""
    return subprocess.run(list(argv), capture_output=True, text=True, check=False, timeout=60)


def detect_manager() -> Manager | None:
    """``systemd`` when this is a systemd-booted Linux with systemctl, ``launchd`` on macOS."""
    if sys.platform == "darwin":
        return "launchd"
    # sd_booted(3): the system manager creates this folder; a container or CI usually lacks it.
    if os.path.isdir("/run/systemd/system") and shutil.which("systemctl"):
        return "systemd"
    return None


NO_MANAGER = (
    "no service manager here (neither a systemd user session nor launchd); "
    f"run the daemon in the foreground with `{PROG} serve` instead "
    "(or from your session's startup script)"
)


def installed_executable() -> str:
    """The absolute path of the ``coactive-credd`` that is running this code.

    Symlinks are kept as they are: pipx's ``~/.local/bin/coactive-credd`` and Homebrew's
    ``bin/`` links survive upgrades, while the versioned paths they point to do not.
    """
    argv0 = sys.argv[0] if sys.argv else ""
    if os.path.basename(argv0) == PROG and os.path.isfile(argv0):
        return os.path.abspath(argv0)
    # `python -m coactive_credd`: the script sits beside the interpreter in a venv or pipx.
    beside = Path(sys.executable).parent / PROG
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(PROG)
    if found:
        return os.path.abspath(found)
    raise InstallError(
        f"cannot find the installed `{PROG}` executable; install the package "
        "(pipx install coactive-credd, or pip install into a venv) and run it from there"
    )


class InstallError(Exception):
    """Something the user must fix before the service can be installed."""


# ---- what gets written ---------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """Where the daemon keeps its files, as the service unit must see them."""

    home: Path
    config_dir: Path
    data_dir: Path
    socket: Path | None  # None: the default, %t/coactive-credd/credd.sock
    environment: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, environ: dict[str, str] | os._Environ[str] | None = None) -> Layout:
        """The locations ``coactive-credd`` itself would use with this environment.

        Variables that move files (``COACTIVE_CREDD_HOME``, ``XDG_CONFIG_HOME``,
        ``XDG_DATA_HOME``) are passed on to the service, which would not see them otherwise,
        so the daemon and the commands run in a shell agree on where things are.
        """
        env = os.environ if environ is None else environ
        home = Path(env.get("HOME") or Path.home())
        passed = {
            k: env[k]
            for k in ("COACTIVE_CREDD_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME")
            if env.get(k)
        }
        sock = env.get("COACTIVE_CREDD_SOCKET") or None
        product_home = passed.get("COACTIVE_CREDD_HOME")
        if product_home:
            h = Path(product_home).expanduser().absolute()
            return cls(home, h, h, Path(sock) if sock else h / "credd.sock", passed)
        config = Path(passed.get("XDG_CONFIG_HOME") or home / ".config") / PROG
        data = Path(passed.get("XDG_DATA_HOME") or home / ".local" / "share") / PROG
        return cls(home, config, data, Path(sock) if sock else None, passed)


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


# ---- plans ---------------------------------------------------------------------------------


@dataclass
class Step:
    """One change: write a file, make a folder, remove one, or run a command."""

    kind: Literal["write", "mkdir", "remove", "rmdir", "run"]
    path: Path | None = None
    content: bytes = b""
    mode: int = 0o644
    argv: tuple[str, ...] = ()
    may_fail: bool = False  # e.g. `launchctl bootout` of a job that is not loaded

    def describe(self) -> str:
        if self.kind == "run":
            return (
                "run: " + " ".join(self.argv) + ("  (a failure is fine)" if self.may_fail else "")
            )
        if self.kind == "write":
            return f"write {self.path} (mode {self.mode:04o}):\n" + _indent(self.content)
        if self.kind == "mkdir":
            return f"create folder {self.path} (mode {self.mode:04o})"
        if self.kind == "rmdir":
            return f"remove folder {self.path} if nothing else is in it"
        return f"remove {self.path}"


def _indent(content: bytes) -> str:
    return "".join("    " + line + "\n" for line in content.decode().splitlines())


@dataclass(frozen=True)
class Target:
    """Where one service manager keeps what install writes."""

    manager: Manager
    files: dict[Path, bytes]
    folders: list[Path]  # created by install if missing (parents first), pruned by uninstall
    leftovers: tuple[Path, ...] = ()  # made by the service manager; pruned by uninstall if empty


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
        _folders(layout.home, unit_dir),
        leftovers,
    )


def launchd_target(executable: str, layout: Layout) -> Target:
    home = layout.home
    agents = home / "Library" / "LaunchAgents"
    plist = render_plist(executable, layout)
    sock_dir = Path(plist["Sockets"]["Listeners"]["SockPathName"]).parent
    return Target(
        "launchd",
        {agents / f"{LAUNCHD_LABEL}.plist": plist_bytes(plist)},
        _folders(home, agents, sock_dir),
    )


def _folders(home: Path, *needed: Path) -> list[Path]:
    """``needed`` and their ancestors below ``home``, parents first: what install may create."""
    out: list[Path] = []
    for folder in needed:
        chain = [folder, *folder.parents]
        below = chain[: chain.index(home)] if home in chain else [folder]
        out += [p for p in reversed(below) if p not in out]
    return out


def _target(manager: Manager, executable: str, layout: Layout) -> Target:
    return (systemd_target if manager == "systemd" else launchd_target)(executable, layout)


def _systemctl(*args: str) -> Step:
    return Step("run", argv=("systemctl", "--user", *args))


def _gui_domain() -> str:
    return f"gui/{os.getuid()}"


def install_plan(target: Target) -> list[Step]:
    steps: list[Step] = [
        Step("mkdir", p, mode=0o700 if p.name == PROG else 0o755)
        for p in target.folders
        if not p.is_dir()
    ]
    changed = False
    for path, content in target.files.items():
        old = path.read_bytes() if path.is_file() else None
        if old != content:
            steps.append(Step("write", path, content))
            changed = changed or old is not None
    if target.manager == "systemd":
        if changed:
            # A new ExecStart= or ListenStream= takes effect only from a fresh start.
            steps.append(_systemctl("stop", SERVICE_UNIT, SOCKET_UNIT))
        steps.append(_systemctl("daemon-reload"))
        steps.append(_systemctl("enable", "--now", SOCKET_UNIT, SERVICE_UNIT))
    else:
        plist = next(iter(target.files))
        job = f"{_gui_domain()}/{LAUNCHD_LABEL}"
        # bootstrap refuses a loaded job: unload it first, which fails harmlessly if it is not.
        steps.append(Step("run", argv=("launchctl", "bootout", job), may_fail=True))
        steps.append(Step("run", argv=("launchctl", "enable", job)))
        steps.append(Step("run", argv=("launchctl", "bootstrap", _gui_domain(), str(plist))))
    return steps


def uninstall_plan(target: Target) -> list[Step]:
    present = [p for p in target.files if p.is_file()]
    if not present:
        return []
    steps: list[Step] = []
    if target.manager == "systemd":
        steps.append(
            Step(
                "run",
                argv=("systemctl", "--user", "disable", "--now", SERVICE_UNIT, SOCKET_UNIT),
                may_fail=True,
            )
        )
        steps += [Step("remove", p) for p in present]
        steps.append(Step("run", argv=("systemctl", "--user", "daemon-reload"), may_fail=True))
    else:
        job = f"{_gui_domain()}/{LAUNCHD_LABEL}"
        steps.append(Step("run", argv=("launchctl", "bootout", job), may_fail=True))
        steps += [Step("remove", p) for p in present]
    # Folders install created, innermost first; only removed when nothing else is in them
    # (launchd may leave its socket behind in the socket folder: that one is ours too).
    for folder in [*reversed(target.folders), *target.leftovers]:
        if folder.is_dir():
            steps.append(Step("rmdir", folder))
    return steps


def _execute(steps: list[Step], runner: Runner, out: TextIO, err: TextIO) -> int:
    for step in steps:
        if step.kind == "mkdir":
            assert step.path is not None
            step.path.mkdir(mode=step.mode, parents=True, exist_ok=True)
            print(f"created {step.path}", file=out)
        elif step.kind == "write":
            assert step.path is not None
            fsutil.atomic_write(step.path, step.content, step.mode)
            print(f"wrote {step.path}", file=out)
        elif step.kind == "remove":
            assert step.path is not None
            step.path.unlink(missing_ok=True)
            print(f"removed {step.path}", file=out)
        elif step.kind == "rmdir":
            assert step.path is not None
            _remove_if_empty(step.path, out)
        else:
            result = runner(step.argv)
            command = " ".join(step.argv)
            if result.returncode == 0:
                print(f"ran {command}", file=out)
                continue
            detail = (result.stderr or result.stdout or "").strip()
            if step.may_fail:
                print(f"ran {command} (it said {detail or result.returncode!r}; fine)", file=out)
                continue
            print(f"`{command}` failed: {detail}", file=err)
            if "bus" in detail.lower() or "XDG_RUNTIME_DIR" in detail:
                print(f"this session has no systemd user manager; {NO_MANAGER}", file=err)
            return 1
    return 0


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        try:
            s.connect(str(path))
        except OSError:
            return False
    return True


def _remove_if_empty(folder: Path, out: TextIO) -> None:
    # launchd may leave the socket it listened on behind; a socket someone still answers on
    # (a daemon started by hand) stays.
    sock = folder / "credd.sock"
    if sock.is_socket() and not _answers(sock):
        sock.unlink()
    try:
        folder.rmdir()
        print(f"removed {folder}", file=out)
    except OSError:
        pass  # not empty: something else lives there, so it stays


# ---- the commands ----------------------------------------------------------------------------


def _streams(out: TextIO | None) -> tuple[TextIO, TextIO]:
    """Progress to ``out`` (stdout), failures to stderr; a caller's ``out`` gets both."""
    return (out, out) if out is not None else (sys.stdout, sys.stderr)


def _choose(manager: Manager | None, dry_run: bool, err: TextIO) -> Manager | None:
    if manager is not None:
        return manager
    found = detect_manager()
    if found is None and dry_run:
        print(f"note: {NO_MANAGER}; showing what a systemd install would do", file=err)
        return "systemd"
    if found is None:
        print(NO_MANAGER, file=err)
    return found


def install_service(
    dry_run: bool = False,
    *,
    manager: Manager | None = None,
    runner: Runner = run_command,
    executable: str | None = None,
    layout: Layout | None = None,
    out: TextIO | None = None,
) -> int:
    """Write the service files and start the service; 0 on success, 1 otherwise."""
    out, err = _streams(out)
    chosen = _choose(manager, dry_run, err)
    if chosen is None:
        return 1
    try:
        exe = executable or installed_executable()
    except InstallError as exc:
        print(exc, file=err)
        return 1
    target = _target(chosen, exe, layout or Layout.from_env())
    steps = install_plan(target)
    if dry_run:
        print(f"dry run: would install the {chosen} service for {exe}", file=out)
        for step in steps:
            print(step.describe(), file=out)
        return 0
    rc = _execute(steps, runner, out, err)
    if rc == 0:
        print(
            f"coactive-credd runs as a {chosen} service; check it with `{PROG} service-status`",
            file=out,
        )
    return rc


def uninstall_service(
    dry_run: bool = False,
    *,
    manager: Manager | None = None,
    runner: Runner = run_command,
    layout: Layout | None = None,
    out: TextIO | None = None,
) -> int:
    """Stop the service and remove what install wrote; credentials and config stay."""
    out, err = _streams(out)
    chosen = _choose(manager, dry_run, err)
    if chosen is None:
        return 1
    # The executable only shapes file contents, which uninstall does not compare.
    target = _target(chosen, SHIPPED_EXECUTABLE, layout or Layout.from_env())
    steps = uninstall_plan(target)
    if not steps:
        print("the service is not installed; nothing to remove", file=out)
        return 0
    if dry_run:
        print(f"dry run: would remove the {chosen} service", file=out)
        for step in steps:
            print(step.describe(), file=out)
        return 0
    rc = _execute(steps, runner, out, err)
    if rc == 0:
        print("service removed; your credentials and config are untouched", file=out)
    return rc


def service_status(
    *,
    manager: Manager | None = None,
    runner: Runner = run_command,
    layout: Layout | None = None,
    out: TextIO | None = None,
) -> int:
    """Say whether the service is installed and what the service manager reports.

    0 when installed and running; 1 when not installed or no service manager; otherwise the
    service manager's own code (``systemctl status`` answers 3 for a stopped unit).
    """
    out, err = _streams(out)
    chosen = _choose(manager, False, err)
    if chosen is None:
        return 1
    target = _target(chosen, SHIPPED_EXECUTABLE, layout or Layout.from_env())
    installed = [p for p in target.files if p.is_file()]
    if not installed:
        print(f"the {chosen} service is not installed; run `{PROG} install-service`", file=out)
        return 1
    for path in installed:
        print(f"installed: {path}", file=out)
        exe = _executable_in(path)
        if exe and not os.access(exe, os.X_OK):
            print(
                f"warning: {exe} no longer exists; run `{PROG} install-service` again "
                "from the coactive-credd you use now",
                file=out,
            )
    if chosen == "systemd":
        argv: tuple[str, ...] = (
            "systemctl",
            "--user",
            "--no-pager",
            "status",
            SOCKET_UNIT,
            SERVICE_UNIT,
        )
    else:
        argv = ("launchctl", "print", f"{_gui_domain()}/{LAUNCHD_LABEL}")
    result = runner(argv)
    text = (result.stdout or "") + (result.stderr or "")
    if text.strip():
        print(text.rstrip("\n"), file=out)
    return result.returncode


def _executable_in(path: Path) -> str | None:
    """The program a unit file or plist starts."""
    data = path.read_bytes()
    if path.suffix == ".plist":
        try:
            args = plistlib.loads(data).get("ProgramArguments") or []
        except Exception:
            return None
        return str(args[0]) if args else None
    for line in data.decode(errors="replace").splitlines():
        if line.startswith("ExecStart="):
            word = line.removeprefix("ExecStart=").split(" serve")[0].strip('"')
            return word.replace("%%", "%").replace("$$", "$")
    return None
