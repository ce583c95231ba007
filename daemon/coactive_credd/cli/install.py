"""``install-service`` / ``uninstall-service`` / ``service-status``.

Writes the systemd user units (Linux) or the LaunchAgent (macOS) with the absolute path of
the ``coactive-credd`` being run, so a venv or pipx install works, then asks the service
manager to start them. Every step is a :class:`Step`, so ``--dry-run`` prints exactly what
a real run would do. The service manager is reached through a ``runner`` function that
tests replace. Uninstall removes the files install writes (and the folders it had to create
for them, once empty), never the vault or the config.

The shipped ``systemd/`` and ``launchd/`` files are these renderers' output for
``/usr/bin/coactive-credd``; ``tests/test_install.py`` keeps the two identical. What is written lives in
:mod:`install_layout`, :mod:`install_systemd` and :mod:`install_launchd`.
"""

from __future__ import annotations

import os
import plistlib
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

from coactive_credd.cli import install_launchd, install_systemd
from coactive_credd.cli.install_launchd import launchd_target as launchd_target
from coactive_credd.cli.install_launchd import plist_bytes as plist_bytes
from coactive_credd.cli.install_launchd import render_plist as render_plist
from coactive_credd.cli.install_layout import LAUNCHD_LABEL as LAUNCHD_LABEL
from coactive_credd.cli.install_layout import PROG as PROG
from coactive_credd.cli.install_layout import SERVICE_UNIT as SERVICE_UNIT
from coactive_credd.cli.install_layout import SHIPPED_EXECUTABLE as SHIPPED_EXECUTABLE
from coactive_credd.cli.install_layout import SOCKET_UNIT as SOCKET_UNIT
from coactive_credd.cli.install_layout import InstallError as InstallError
from coactive_credd.cli.install_layout import Layout as Layout
from coactive_credd.cli.install_layout import Manager as Manager
from coactive_credd.cli.install_layout import Step as Step
from coactive_credd.cli.install_layout import Target as Target
from coactive_credd.cli.install_systemd import render_systemd_units as render_systemd_units
from coactive_credd.cli.install_systemd import systemd_target as systemd_target
from coactive_credd.core import fsutil

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


def _target(manager: Manager, executable: str, layout: Layout) -> Target:
    return (systemd_target if manager == "systemd" else launchd_target)(executable, layout)


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
        steps += install_systemd.start_steps(changed)
    else:
        steps += install_launchd.start_steps(next(iter(target.files)))
    return steps


def uninstall_plan(target: Target) -> list[Step]:
    present = [p for p in target.files if p.is_file()]
    if not present:
        return []
    steps = (
        install_systemd.stop_steps(present)
        if target.manager == "systemd"
        else install_launchd.stop_steps(present)
    )
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
    result = runner(
        install_systemd.status_argv() if chosen == "systemd" else install_launchd.status_argv()
    )
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
