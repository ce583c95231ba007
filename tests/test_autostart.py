"""Autostart: a shim that finds no daemon starts ``coactive-credd serve`` and goes on.

Every CLI runs for real (sh under dash, the Python shim, ``coactive-credd token``, Node, Go)
with no daemon on the socket, in a temporary HOME with no user service installed. Daemons the
shims start are found through /proc by their command line (``serve --socket`` this test's
socket), and stopped at teardown by the pid ``/v1/status`` gives.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import coactive_token
import pytest
from coactive_credd.cli import install
from coactive_credd.testing.fakeupstream import FakeCoactive

from .conftest import call, leaked, login, start_daemon

ROOT = Path(__file__).resolve().parent.parent
SHIM = ROOT / "client_shim"
HELPER = SHIM / "sh" / "git-credential-coactive"
BIN = Path(sys.executable).parent  # where the package's coactive-credd script is installed
CLIS = ("sh", "python", "credd", "node", "go")

pytestmark = pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc")


@pytest.fixture(scope="session")
def go_cli(tmp_path_factory: pytest.TempPathFactory) -> Path | None:
    """The Go CLI, built once per session; None without Go, outside CI only (CI installs Go,
    and a run that quietly left the Go client out of these races would prove less)."""
    go = shutil.which("go")
    if go is None:
        if os.environ.get("CI"):
            pytest.fail("Go is not installed; .ci/setup installs golang-go")
        return None
    out = tmp_path_factory.mktemp("go") / "coactive-token"
    subprocess.run(
        [go, "build", "-o", str(out), "./cmd/coactive-token"],
        cwd=SHIM / "go",
        check=True,
        timeout=110,
        env={**os.environ, "CGO_ENABLED": "0"},
    )
    return out


def argv(cli: str, go_cli: Path | None) -> list[str]:
    if cli == "sh":
        return [shutil.which("dash") or "sh", str(SHIM / "sh" / "coactive-token")]
    if cli == "python":
        return [sys.executable, str(SHIM / "python" / "coactive_token.py")]
    if cli == "credd":
        return [sys.executable, "-m", "coactive_credd", "token"]
    if cli == "node":
        return ["node", str(SHIM / "node" / "bin" / "coactive-token.js")]
    if go_cli is None:
        pytest.skip("Go is not installed")
    return [str(go_cli)]


def daemons(home: Path) -> list[int]:
    """Live ``coactive-credd serve`` processes serving a socket under ``home``.

    By the command line, which the shims give ``--socket``: the daemon makes itself
    non-dumpable, so only root could read its environment.
    """
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            args = Path(entry.path, "cmdline").read_bytes().decode(errors="replace").split("\0")
            if "serve" not in args or not any("coactive" in a for a in args):
                continue
        except OSError:
            continue
        sockets = [b for a, b in itertools.pairwise(args) if a == "--socket"]
        if any(Path(s).is_relative_to(home) for s in sockets) and not gone(int(entry.name)):
            found.append(int(entry.name))
    return sorted(found)


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"  # exited; waits for whoever started it to collect it


def status_pid(sock: Path) -> int:
    code, body = call(sock, "GET", "/v1/status")
    assert code == 200, body
    return int(body["pid"])


def settle(home: Path, timeout: float = 15) -> list[int]:
    """The daemons left once those that lost the race have exited (they exit on their own,
    after their imports, so allow for a slow machine)."""
    deadline = time.monotonic() + timeout
    while len(found := daemons(home)) > 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


@pytest.fixture
def env(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """Autostart at its default (on) in a HOME with no user service; every daemon started in
    ``home`` is stopped at teardown, and its log checked for secrets."""
    user_home = tmp_path / "user"
    user_home.mkdir()
    monkeypatch.delenv("COACTIVE_CREDD_AUTOSTART")
    monkeypatch.delenv("COACTIVE_CREDD_COMMAND", raising=False)
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.setenv("HOME", str(user_home))
    # `coactive-credd` on PATH is the one installed beside this Python.
    monkeypatch.setenv("PATH", f"{BIN}{os.pathsep}{os.environ['PATH']}")
    yield dict(os.environ)
    stop_all(home)


def stop_all(home: Path) -> None:
    pids = set(daemons(home))
    sock = home / "credd.sock"
    with contextlib.suppress(OSError):
        pids.add(status_pid(sock))
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
    deadline = time.monotonic() + 10
    while not all(gone(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    for pid in pids:
        if not gone(pid):
            os.kill(pid, signal.SIGKILL)
    for log in home.rglob("credd.log"):
        assert not leaked(log.read_text(errors="replace")), "a credential in the daemon's log"


def run(
    cli: str, go_cli: Path | None, extra: dict[str, str] | None = None, *args: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*argv(cli, go_cli), *args],
        capture_output=True,
        text=True,
        timeout=30,  # also: a daemon holding the shim's stdout would keep this waiting
        env={**os.environ, **(extra or {})},
    )


# ---- many at once ---------------------------------------------------------------------------


def test_ten_shims_at_once_start_exactly_one_daemon(
    home: Path, fake: FakeCoactive, env: dict[str, str], go_cli: Path | None
) -> None:
    login(fake)
    assert fake.logins == 1
    token = fake.issued[-1]
    mix = ["sh", "sh", "python", "python", "credd", "credd", "node", "node"]
    mix += ["go", "go"] if go_cli is not None else ["sh", "python"]
    runs = []
    for i, cli in enumerate(mix):
        extra = {}
        if i % 2:  # half find the command through COACTIVE_CREDD_COMMAND, half on PATH
            extra["COACTIVE_CREDD_COMMAND"] = str(BIN / "coactive-credd")
        runs.append(
            subprocess.Popen(
                argv(cli, go_cli),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env={**env, **extra},
            )
        )
    for cli, p in zip(mix, runs, strict=True):
        out, err = p.communicate(timeout=30)
        assert (p.returncode, out, err) == (0, token + "\n", ""), cli
    pid = status_pid(home / "credd.sock")
    assert settle(home) == [pid]
    log = (home / "credd.log").read_text()
    assert log.count(" serving ") == 1, log
    assert "already running" in log, "no two shims raced: the test did not test the race"
    assert fake.logins == 1


# ---- off, or owned by a service manager --------------------------------------------------------


@pytest.mark.parametrize("cli", CLIS)
def test_off_fails_fast_and_starts_nothing(
    cli: str, home: Path, env: dict[str, str], go_cli: Path | None
) -> None:
    started = time.monotonic()
    proc = run(cli, go_cli, {"COACTIVE_CREDD_AUTOSTART": "0"})
    # It does not wait for a daemon: a start waits up to 10 s. (A fresh python3 took 2.5 s to
    # answer once in CI, with the suite's six workers on two cores: the bound is the machine's.)
    assert time.monotonic() - started < 5.0
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout == "" and "coactive-credd serve" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (home / "credd.sock").exists() and not (home / "credd.log").exists()
    assert daemons(home) == []


def service_files(user_home: Path, xdg: Path | None) -> dict[str, Path]:
    """Where `coactive-credd install-service` writes each unit, by its own code."""
    environ = {"HOME": str(user_home), **({"XDG_CONFIG_HOME": str(xdg)} if xdg else {})}
    layout = install.Layout.from_env(environ)
    exe = str(BIN / "coactive-credd")
    files = [*install.systemd_target(exe, layout).files, *install.launchd_target(exe, layout).files]
    return {p.name: p for p in files}


@pytest.mark.parametrize(
    ("unit", "xdg"),
    [
        ("coactive-credd.socket", False),
        ("coactive-credd.service", False),
        ("coactive-credd.service", True),
        ("ai.coactive.credd.plist", False),
    ],
)
def test_an_installed_service_turns_the_default_off(
    unit: str,
    xdg: bool,
    home: Path,
    env: dict[str, str],
    go_cli: Path | None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    user_home = Path(env["HOME"])
    if xdg:
        monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    path = service_files(user_home, tmp_path / "xdg" if xdg else None)[unit]
    assert path.is_relative_to(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text("")
    for cli in CLIS:
        if cli == "go" and go_cli is None:
            continue
        proc = run(cli, go_cli)
        assert proc.returncode == 3, (cli, proc.stderr)
        if cli in ("python", "credd"):  # the service's own start command, not `serve`
            want = "launchctl kickstart" if unit.endswith(".plist") else "systemctl --user start"
            assert want in proc.stderr, (cli, proc.stderr)
        else:
            assert "coactive-credd serve" in proc.stderr or "systemctl" in proc.stderr
    assert daemons(home) == [] and not (home / "credd.log").exists()
    # Asked for explicitly, it starts one even so.
    proc = run("python", go_cli, {"COACTIVE_CREDD_AUTOSTART": "1"})
    assert proc.returncode == 4, proc.stderr  # no profile yet: the daemon that started says so
    assert len(daemons(home)) == 1


# ---- what a start looks like -------------------------------------------------------------------


@pytest.mark.parametrize("cli", CLIS)
def test_a_start_makes_a_private_folder_and_log_and_prints_only_the_token(
    cli: str,
    home: Path,
    fake: FakeCoactive,
    env: dict[str, str],
    go_cli: Path | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    login(fake)
    sock = home / "run" / "sub" / "credd.sock"  # neither folder exists yet
    monkeypatch.setenv("COACTIVE_CREDD_SOCKET", str(sock))
    proc = run(cli, go_cli)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, fake.issued[-1] + "\n", "")
    for folder in (home / "run", sock.parent):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    log = sock.parent / "credd.log"
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert " serving " in log.read_text()
    pid = status_pid(sock)
    assert daemons(home) == [pid]
    # Detached: its own session, not the shim's; stdin from /dev/null, output to the log.
    assert os.getsid(pid) == pid
    if os.geteuid() == 0:  # the daemon is non-dumpable: only root may see its fds (CI is root)
        fds = [os.readlink(f"/proc/{pid}/fd/{n}") for n in (0, 1, 2)]
        assert fds == ["/dev/null", str(log), str(log)]
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while not gone(pid) and time.monotonic() < deadline:
        time.sleep(0.02)


@pytest.mark.parametrize("cli", CLIS)
def test_a_stale_socket_is_replaced_by_a_started_daemon(
    cli: str, home: Path, fake: FakeCoactive, env: dict[str, str], go_cli: Path | None
) -> None:
    login(fake)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(home / "credd.sock"))  # left by a daemon that died: connecting is refused
    stale.close()
    proc = run(cli, go_cli)
    assert (proc.returncode, proc.stdout) == (0, fake.issued[-1] + "\n"), proc.stderr
    assert daemons(home) == [status_pid(home / "credd.sock")]


@pytest.mark.parametrize("cli", CLIS)
def test_a_daemon_that_cannot_start_fails_fast_naming_the_log(
    cli: str, home: Path, env: dict[str, str], go_cli: Path | None
) -> None:
    config = home / "config.toml"
    config.write_text("this is not toml = [\n")
    config.chmod(0o600)
    started = time.monotonic()
    proc = run(cli, go_cli)
    assert time.monotonic() - started < 8  # it did not wait out the whole 10 s
    assert proc.returncode == 3 and proc.stdout == ""
    line = proc.stderr.strip()
    assert len(line.splitlines()) == 1
    assert "coactive-credd serve" in line and str(home / "credd.log") in line
    assert "not valid TOML" in (home / "credd.log").read_text()
    assert daemons(home) == []


def test_a_command_that_is_not_there_is_named(
    home: Path, env: dict[str, str], go_cli: Path | None
) -> None:
    # A configured profile: `coactive-credd token` starts no daemon for a profile it lacks.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "coactive_credd",
            "login",
            "--base-url",
            "http://127.0.0.1:9",
            "--personal-token-stdin",
            "--no-verify",
        ],
        input="cpt_unused\n",
        capture_output=True,
        text=True,
        env={**env, "COACTIVE_CREDD_AUTOSTART": "0"},
        check=True,
    )
    for cli in CLIS:
        if cli == "go" and go_cli is None:
            continue
        proc = run(cli, go_cli, {"COACTIVE_CREDD_COMMAND": str(home / "no-such-credd")})
        assert proc.returncode == 3, (cli, proc.stderr)
        assert "no-such-credd" in proc.stderr and "COACTIVE_CREDD_COMMAND" in proc.stderr, cli
    assert daemons(home) == []


def test_a_daemon_that_answers_errors_is_not_restarted(
    home: Path, fake: FakeCoactive, env: dict[str, str], go_cli: Path | None
) -> None:
    login(fake)
    d = start_daemon(home)
    try:
        for cli in CLIS:
            if cli == "go" and go_cli is None:
                continue
            proc = run(cli, go_cli, None, "--profile", "nope")
            assert proc.returncode == 4, (cli, proc.stderr)
        assert daemons(home) == []  # none started by a shim (those pass --socket)
        assert not (home / "credd.log").exists()
        assert status_pid(d.socket) == d.proc.pid
    finally:
        d.stop()


def test_status_and_login_never_start_one(
    home: Path, fake: FakeCoactive, env: dict[str, str]
) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "coactive_credd", "status"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 3 and "coactive-credd serve" in proc.stderr
    proc = login(fake)
    assert "start the daemon with `coactive-credd serve`" in proc.stderr  # the fixing command
    assert daemons(home) == [] and not (home / "credd.log").exists()


# ---- in a long-running Python program ----------------------------------------------------------


def test_the_library_starts_one_and_collects_it_when_it_ends(
    home: Path, fake: FakeCoactive, env: dict[str, str]
) -> None:
    login(fake)
    assert coactive_token.get_token() == fake.issued[-1]
    pid = status_pid(home / "credd.sock")
    assert daemons(home) == [pid]
    os.kill(pid, signal.SIGTERM)
    # This process started it: its reaper thread collects it, leaving no zombie behind.
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not Path(f"/proc/{pid}").exists()


async def test_the_async_api_starts_one(
    home: Path, fake: FakeCoactive, env: dict[str, str]
) -> None:
    login(fake)
    assert await coactive_token.aget_token() == fake.issued[-1]
    assert daemons(home) == [status_pid(home / "credd.sock")]


def test_the_client_started_off_does_not_start(home: Path, env: dict[str, str]) -> None:
    with (
        pytest.raises(coactive_token.DaemonUnreachable),
        coactive_token.Client(autostart=False) as c,
    ):
        c.token()
    assert daemons(home) == []


# ---- git ----------------------------------------------------------------------------------------


def git_get(fake: FakeCoactive, extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    host = fake.base_url.split("://", 1)[1]
    return subprocess.run(
        ["dash", str(HELPER), "get"],
        input=f"protocol=http\nhost={host}\n\n",
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **extra},
    )


def test_the_git_helper_starts_one_like_the_other_shims(
    home: Path, fake: FakeCoactive, env: dict[str, str]
) -> None:
    login(fake)
    r = git_get(fake, {})
    assert r.returncode == 0 and r.stderr == "", r
    assert f"password={fake.issued[-1]}\n" in r.stdout
    assert daemons(home) == [status_pid(home / "credd.sock")]


def test_the_git_helper_starts_none_for_another_host(
    home: Path, fake: FakeCoactive, env: dict[str, str]
) -> None:
    login(fake)
    r = subprocess.run(
        ["dash", str(HELPER), "get"],
        input="protocol=https\nhost=github.com\n\n",
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    assert daemons(home) == [] and not (home / "credd.log").exists()


def test_where_the_git_helper_may_not_start_one_it_says_how(
    home: Path, fake: FakeCoactive, env: dict[str, str]
) -> None:
    login(fake)
    r = git_get(fake, {"COACTIVE_CREDD_AUTOSTART": "0"})
    assert (r.returncode, r.stdout) == (0, "")
    assert r.stderr.count("\n") == 1 and "start it with: coactive-credd serve" in r.stderr
    units = Path(env["HOME"]) / ".config" / "systemd" / "user"
    units.mkdir(parents=True)
    (units / "coactive-credd.socket").write_text("[Socket]\n")
    r = git_get(fake, {})
    assert (r.returncode, r.stdout) == (0, "")
    assert r.stderr.count("\n") == 1
    assert "systemctl --user start coactive-credd.socket" in r.stderr
    r = git_get(fake, {"COACTIVE_CREDD_AUTOSTART": "nope"})
    assert r.stderr.count("\n") == 1 and "COACTIVE_CREDD_AUTOSTART=nope" in r.stderr
    assert daemons(home) == []


def test_a_failed_start_shows_the_daemons_last_line(
    home: Path, fake: FakeCoactive, env: dict[str, str]
) -> None:
    login(fake)
    with (home / "config.toml").open("a") as f:
        f.write("\n[deamon]\nskew = 10\n")
    r = git_get(fake, {})
    assert (r.returncode, r.stdout) == (0, "")
    assert r.stderr.count("\n") == 1, r.stderr
    assert "starting it failed" in r.stderr and "did you mean `daemon`?" in r.stderr
    assert daemons(home) == []


@pytest.mark.parametrize("cli", CLIS)
def test_a_failed_start_names_the_daemons_last_line_in_one_line(
    cli: str, home: Path, env: dict[str, str], go_cli: Path | None
) -> None:
    config = home / "config.toml"
    config.write_text("[deamon]\nskew = 10\n")  # the daemon refuses it, naming file:line
    config.chmod(0o600)
    proc = run(cli, go_cli, {"COACTIVE_CREDD_COMMAND": str(BIN / "coactive-credd")})
    assert proc.returncode == 3 and proc.stdout == "", proc.stderr
    line = proc.stderr.strip()
    assert len(line.splitlines()) == 1, line
    assert "starting it failed: " in line and "did you mean `daemon`?" in line, line
    assert f"{config}:1" in line and str(home / "credd.log") in line, line
    assert "coactive-credd: " + str(config) not in line  # the log's prefix is not repeated
    assert daemons(home) == []


@pytest.mark.parametrize("cli", [c for c in CLIS if c != "credd"])  # credd: the Python shim's
def test_a_long_last_line_is_cut_short(
    cli: str, home: Path, env: dict[str, str], go_cli: Path | None, tmp_path: Path
) -> None:
    fake_cmd = tmp_path / "fails"
    fake_cmd.write_text("#!/bin/sh\nprintf 'coactive-credd: %0300d\\033[31m\\n' 7 >&2\nexit 1\n")
    fake_cmd.chmod(0o755)
    proc = run(cli, go_cli, {"COACTIVE_CREDD_COMMAND": str(fake_cmd)})
    assert proc.returncode == 3, proc.stderr
    line = proc.stderr.strip()
    assert len(line.splitlines()) == 1 and "\033" not in line, line
    why = line.split("starting it failed: ", 1)[1]
    assert why.startswith("0" * 190) and "0" * 201 not in why, line
