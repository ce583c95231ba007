"""install-service / uninstall-service / service-status against a temporary HOME.

The unit files are checked by the real ``systemd-analyze verify --user``; systemctl and
launchctl, which cannot run here, are replaced by a recording runner.
"""

from __future__ import annotations

import io
import os
import plistlib
import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from coactive_credd.cli import install

REPO = Path(__file__).resolve().parent.parent
NEEDS_SYSTEMD_ANALYZE = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None and not os.environ.get("CI"),
    reason="systemd-analyze is not installed (CI installs Debian's systemd package)",
)


class Recorder:
    """Stands in for systemctl/launchctl: records each command, answers from a table."""

    def __init__(self, answers: dict[str, tuple[int, str]] | None = None) -> None:
        self.calls: list[list[str]] = []
        self.answers = answers or {}

    def __call__(self, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        self.calls.append(list(argv))
        joined = " ".join(argv)
        rc, text = next((answer for key, answer in self.answers.items() if key in joined), (0, ""))
        return subprocess.CompletedProcess(list(argv), rc, stdout="", stderr=text)


@pytest.fixture
def user_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty HOME with no variable that would move the product's files."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    for var in ("COACTIVE_CREDD_HOME", "COACTIVE_CREDD_SOCKET", "XDG_CONFIG_HOME", "XDG_DATA_HOME"):
        monkeypatch.delenv(var, raising=False)
    return home


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under root with its content (None for folders)."""
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


EXE = "/opt/coactive credd/venv/bin/coactive-credd"  # a space, to exercise the quoting


def units(home: Path) -> Path:
    return home / ".config" / "systemd" / "user"


# ---- the unit files ------------------------------------------------------------------------


def test_shipped_files_are_what_install_writes() -> None:
    rendered = install.render_systemd_units(
        install.SHIPPED_EXECUTABLE, install.Layout.from_env({"HOME": "/home/you"})
    )
    for name, text in rendered.items():
        assert (REPO / "systemd" / name).read_text() == text, f"systemd/{name} is stale"
    plist = install.render_plist(
        install.SHIPPED_EXECUTABLE, install.Layout.from_env({"HOME": "/Users/you"})
    )
    shipped = (REPO / "launchd" / f"{install.LAUNCHD_LABEL}.plist").read_bytes()
    assert shipped == install.plist_bytes(plist)


def analyze(unit_dir: Path, env_home: Path, runtime: Path) -> subprocess.CompletedProcess[str]:
    runtime.mkdir(exist_ok=True, mode=0o700)
    return subprocess.run(
        [
            "systemd-analyze",
            "verify",
            "--user",
            str(unit_dir / install.SOCKET_UNIT),
            str(unit_dir / install.SERVICE_UNIT),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "HOME": str(env_home), "XDG_RUNTIME_DIR": str(runtime)},
        timeout=60,
    )


@NEEDS_SYSTEMD_ANALYZE
@pytest.mark.parametrize(
    "env",
    [
        {},
        # Everything moved, in paths with a space and a '%' that must be escaped.
        {"COACTIVE_CREDD_HOME": "{tmp}/my creds %h"},
        {
            "XDG_CONFIG_HOME": "{tmp}/cfg",
            "XDG_DATA_HOME": "{tmp}/data dir",
            "COACTIVE_CREDD_SOCKET": "{tmp}/s/credd.sock",
        },
    ],
    ids=["default", "credd-home", "xdg-and-socket"],
)
def test_units_pass_systemd_analyze_verify(tmp_path: Path, env: dict[str, str]) -> None:
    exe = shutil.which("coactive-credd")
    assert exe, "the package must be installed (pip install -e .)"
    environ = {"HOME": str(tmp_path / "home")} | {k: v.format(tmp=tmp_path) for k, v in env.items()}
    rendered = install.render_systemd_units(exe, install.Layout.from_env(environ))
    unit_dir = tmp_path / "units"
    unit_dir.mkdir()
    for name, text in rendered.items():
        (unit_dir / name).write_text(text)
    result = analyze(unit_dir, tmp_path / "home", tmp_path / "run")
    assert result.returncode == 0, result.stderr
    assert result.stdout + result.stderr == "", "systemd-analyze warned"


@NEEDS_SYSTEMD_ANALYZE
def test_verify_would_catch_a_broken_unit(tmp_path: Path) -> None:
    """The check above is not vacuous: a missing executable and a typo both fail it."""
    rendered = install.render_systemd_units(
        "/nonexistent/coactive-credd", install.Layout.from_env({"HOME": str(tmp_path)})
    )
    unit_dir = tmp_path / "units"
    unit_dir.mkdir()
    for name, text in rendered.items():
        (unit_dir / name).write_text(text.replace("UMask=", "UMsak="))
    result = analyze(unit_dir, tmp_path, tmp_path / "run")
    assert result.returncode != 0
    assert "not executable" in result.stderr and "UMsak" in result.stderr


def test_service_unit_contents() -> None:
    layout = install.Layout.from_env({"HOME": "/home/u"})
    service = install.render_systemd_units(EXE, layout)[install.SERVICE_UNIT]
    socket_unit = install.render_systemd_units(EXE, layout)[install.SOCKET_UNIT]
    lines = set(service.splitlines())
    assert f'ExecStart="{EXE}" serve' in lines
    for line in (
        "Type=notify",
        "NotifyAccess=main",
        "Restart=on-failure",
        "UMask=0077",
        "NoNewPrivileges=yes",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "ProtectSystem=strict",
        "ReadWritePaths=%h/.config/coactive-credd %h/.local/share/coactive-credd "
        "-%t/coactive-credd",
    ):
        assert line in lines, line
    assert "ListenStream=%t/coactive-credd/credd.sock" in socket_unit.splitlines()
    assert "SocketMode=0600" in socket_unit and "DirectoryMode=0700" in socket_unit


def test_moved_files_are_passed_to_the_service() -> None:
    layout = install.Layout.from_env({"HOME": "/home/u", "COACTIVE_CREDD_HOME": "/srv/creds"})
    rendered = install.render_systemd_units(EXE, layout)
    assert "ListenStream=/srv/creds/credd.sock" in rendered[install.SOCKET_UNIT]
    service = rendered[install.SERVICE_UNIT]
    assert "Environment=COACTIVE_CREDD_HOME=/srv/creds" in service
    assert "ReadWritePaths=/srv/creds\n" in service


def test_plist_has_what_launchd_needs() -> None:
    plist = plistlib.loads((REPO / "launchd" / "ai.coactive.credd.plist").read_bytes())
    assert plist["Label"] == "ai.coactive.credd"
    assert plist["ProgramArguments"][1:] == ["serve"]
    assert Path(plist["ProgramArguments"][0]).is_absolute()
    listeners = plist["Sockets"]["Listeners"]
    assert listeners["SockPathMode"] == 0o600 == 384
    assert listeners["SockPathName"].endswith(
        "/Library/Caches/TemporaryItems/coactive-credd/credd.sock"
    )
    assert plist["RunAtLoad"] is True
    assert plist["KeepAlive"] == {"SuccessfulExit": False}
    assert plist["ProcessType"] == "Background"
    for key in ("StandardOutPath", "StandardErrorPath"):
        assert "/Library/Logs/" in plist[key]


# ---- install / uninstall with systemd ------------------------------------------------------


def test_dry_run_prints_every_file_and_command_and_changes_nothing(user_home: Path) -> None:
    before = tree(user_home)
    rec = Recorder()
    out = io.StringIO()
    assert (
        install.install_service(True, manager="systemd", runner=rec, executable=EXE, out=out) == 0
    )
    text = out.getvalue()
    assert rec.calls == []
    assert tree(user_home) == before
    for name in (install.SOCKET_UNIT, install.SERVICE_UNIT):
        assert f"write {units(user_home) / name}" in text
    assert f'ExecStart="{EXE}" serve' in text  # the content, not only the name
    assert "run: systemctl --user daemon-reload" in text
    assert (
        f"run: systemctl --user enable --now {install.SOCKET_UNIT} {install.SERVICE_UNIT}" in text
    )


def test_install_writes_units_enables_them_and_is_idempotent(user_home: Path) -> None:
    rec = Recorder()
    out = io.StringIO()
    assert install.install_service(manager="systemd", runner=rec, executable=EXE, out=out) == 0
    service = units(user_home) / install.SERVICE_UNIT
    assert f'ExecStart="{EXE}" serve' in service.read_text()
    assert (service.stat().st_mode & 0o777) == 0o644
    assert rec.calls == [
        ["systemctl", "--user", "daemon-reload"],
        ["systemctl", "--user", "enable", "--now", install.SOCKET_UNIT, install.SERVICE_UNIT],
    ]
    first = tree(user_home)

    rec.calls.clear()
    assert install.install_service(manager="systemd", runner=rec, executable=EXE, out=out) == 0
    assert tree(user_home) == first
    assert [
        "systemctl",
        "--user",
        "stop",
        install.SERVICE_UNIT,
        install.SOCKET_UNIT,
    ] not in rec.calls
    assert rec.calls[-1][:4] == ["systemctl", "--user", "enable", "--now"]

    # A new executable (an upgrade into another venv) is written and restarted.
    rec.calls.clear()
    assert (
        install.install_service(
            manager="systemd", runner=rec, executable="/new/bin/coactive-credd", out=out
        )
        == 0
    )
    assert "ExecStart=/new/bin/coactive-credd serve" in service.read_text()
    assert rec.calls[0] == [
        "systemctl",
        "--user",
        "stop",
        install.SERVICE_UNIT,
        install.SOCKET_UNIT,
    ]


def test_uninstall_leaves_nothing_behind(user_home: Path, tmp_path: Path) -> None:
    before = tree(user_home)
    runtime = tmp_path / "run" / "coactive-credd"
    rec = Recorder()
    out = io.StringIO()
    install.install_service(manager="systemd", runner=rec, executable=EXE, out=out)
    runtime.mkdir(parents=True)  # what the socket unit's DirectoryMode= leaves behind
    rec.calls.clear()
    assert install.uninstall_service(manager="systemd", runner=rec, out=out) == 0
    assert rec.calls == [
        ["systemctl", "--user", "disable", "--now", install.SERVICE_UNIT, install.SOCKET_UNIT],
        ["systemctl", "--user", "daemon-reload"],
    ]
    assert tree(user_home) == before
    assert not runtime.exists()
    assert install.uninstall_service(manager="systemd", runner=rec, out=out) == 0
    assert "not installed" in out.getvalue().splitlines()[-1]


def test_uninstall_removes_only_what_install_wrote(user_home: Path) -> None:
    mine = units(user_home) / "other.service"
    mine.parent.mkdir(parents=True)
    mine.write_text("[Service]\nExecStart=/bin/true\n")
    creds = user_home / ".config" / "coactive-credd" / "config.toml"
    creds.parent.mkdir()
    creds.write_text("[profiles.default]\n")
    before = tree(user_home)
    rec = Recorder()
    install.install_service(manager="systemd", runner=rec, executable=EXE, out=io.StringIO())
    install.uninstall_service(manager="systemd", runner=rec, out=io.StringIO())
    assert tree(user_home) == before


def test_uninstall_dry_run_changes_nothing(user_home: Path) -> None:
    rec = Recorder()
    install.install_service(manager="systemd", runner=rec, executable=EXE, out=io.StringIO())
    installed = tree(user_home)
    rec.calls.clear()
    out = io.StringIO()
    assert install.uninstall_service(True, manager="systemd", runner=rec, out=out) == 0
    assert rec.calls == [] and tree(user_home) == installed
    assert f"remove {units(user_home) / install.SERVICE_UNIT}" in out.getvalue()
    assert "run: systemctl --user disable --now" in out.getvalue()


def test_a_session_without_a_user_manager_is_told_to_use_serve(
    user_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real systemctl, pointed at a runtime folder where no user manager listens (as in a
    container or an ssh session without lingering), so it can never reach a real one."""
    if shutil.which("systemctl") is None:
        pytest.skip("systemctl is not installed (CI installs Debian's systemd package)")
    (tmp_path / "run").mkdir(mode=0o700, exist_ok=True)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)
    out = io.StringIO()
    assert install.install_service(manager="systemd", executable=EXE, out=out) == 1
    assert "Failed to connect to bus" in out.getvalue()
    assert "coactive-credd serve" in out.getvalue()


def test_no_service_manager_at_all(user_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(install, "detect_manager", lambda: None)
    rec = Recorder()
    before = tree(user_home)
    commands: list[Callable[[io.StringIO], int]] = [
        lambda out: install.install_service(runner=rec, executable=EXE, out=out),
        lambda out: install.uninstall_service(runner=rec, out=out),
        lambda out: install.service_status(runner=rec, out=out),
    ]
    for command in commands:
        out = io.StringIO()
        assert command(out) == 1
        assert "no service manager" in out.getvalue()
        assert "`coactive-credd serve`" in out.getvalue()
    assert rec.calls == [] and tree(user_home) == before
    # A dry run still shows what would be written.
    out = io.StringIO()
    assert install.install_service(True, runner=rec, executable=EXE, out=out) == 0
    assert "no service manager" in out.getvalue() and install.SERVICE_UNIT in out.getvalue()


def test_service_status(user_home: Path) -> None:
    out = io.StringIO()
    rec = Recorder({"status": (3, "Active: inactive (dead)")})
    assert install.service_status(manager="systemd", runner=rec, out=out) == 1
    assert "not installed" in out.getvalue() and rec.calls == []

    exe = shutil.which("coactive-credd")
    assert exe
    install.install_service(manager="systemd", runner=Recorder(), executable=exe, out=out)
    out = io.StringIO()
    assert install.service_status(manager="systemd", runner=rec, out=out) == 3
    assert rec.calls[-1][:4] == ["systemctl", "--user", "--no-pager", "status"]
    assert "inactive (dead)" in out.getvalue() and "warning" not in out.getvalue()

    # The venv it pointed to is gone: say so.
    install.install_service(manager="systemd", runner=Recorder(), executable=EXE, out=out)
    out = io.StringIO()
    install.service_status(manager="systemd", runner=rec, out=out)
    assert f"warning: {EXE} no longer exists" in out.getvalue()


# ---- install / uninstall with launchd ------------------------------------------------------


def test_launchd_install_and_uninstall(user_home: Path) -> None:
    before = tree(user_home)
    rec = Recorder({"bootout": (3, "Boot-out failed: 3: No such process")})
    out = io.StringIO()
    assert install.install_service(manager="launchd", runner=rec, executable=EXE, out=out) == 0
    plist_path = user_home / "Library/LaunchAgents/ai.coactive.credd.plist"
    plist = plistlib.loads(plist_path.read_bytes())
    assert plist["ProgramArguments"] == [EXE, "serve"]
    sock = Path(plist["Sockets"]["Listeners"]["SockPathName"])
    assert sock == user_home / "Library/Caches/TemporaryItems/coactive-credd/credd.sock"
    assert (sock.parent.stat().st_mode & 0o777) == 0o700  # launchd creates only the socket
    assert plist["StandardErrorPath"] == str(user_home / "Library/Logs/coactive-credd.log")
    gui = f"gui/{os.getuid()}"
    assert rec.calls == [
        ["launchctl", "bootout", f"{gui}/ai.coactive.credd"],
        ["launchctl", "enable", f"{gui}/ai.coactive.credd"],
        ["launchctl", "bootstrap", gui, str(plist_path)],
    ]
    installed = tree(user_home)
    assert install.install_service(manager="launchd", runner=rec, executable=EXE, out=out) == 0
    assert tree(user_home) == installed

    rec.calls.clear()
    assert install.uninstall_service(manager="launchd", runner=rec, out=out) == 0
    assert rec.calls == [["launchctl", "bootout", f"{gui}/ai.coactive.credd"]]
    assert tree(user_home) == before


def test_launchd_dry_run(user_home: Path) -> None:
    rec = Recorder()
    out = io.StringIO()
    assert (
        install.install_service(True, manager="launchd", runner=rec, executable=EXE, out=out) == 0
    )
    assert rec.calls == [] and tree(user_home) == {}
    assert "<key>Sockets</key>" in out.getvalue()
    assert "run: launchctl bootstrap gui/" in out.getvalue()


# ---- the executable ------------------------------------------------------------------------


def test_the_executable_path_keeps_symlinks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = tmp_path / "venvs" / "coactive-credd" / "bin" / "coactive-credd"
    real.parent.mkdir(parents=True)
    real.write_text("#!/bin/sh\n")
    real.chmod(0o755)
    link = tmp_path / "bin" / "coactive-credd"  # pipx's ~/.local/bin entry
    link.parent.mkdir()
    link.symlink_to(real)
    monkeypatch.setattr("sys.argv", [str(link), "install-service"])
    assert install.installed_executable() == str(link)
    # `python -m coactive_credd`: the script beside the interpreter.
    monkeypatch.setattr("sys.argv", ["/x/coactive_credd/__main__.py"])
    monkeypatch.setattr("sys.executable", str(real.parent / "python"))
    assert install.installed_executable() == str(real)


def test_cli_dry_run(user_home: Path) -> None:
    proc = subprocess.run(
        ["coactive-credd", "install-service", "--dry-run"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    # The absolute path of the coactive-credd that ran, whichever service manager is here.
    assert re.search(
        r"ExecStart=/\S*/coactive-credd serve|<string>/\S*/coactive-credd<", proc.stdout
    )
    assert tree(user_home) == {}
