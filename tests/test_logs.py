"""The daemon's log: rotated by size when it appends to a file of its own, 0600, following
stdout and stderr onto the new file; left alone on a pipe."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from coactive_credd.testing.fakeupstream import FakeCoactive

from .conftest import leaked, login, start_daemon, wait_ready


@pytest.fixture(autouse=True)
def _not_under_a_service_manager(monkeypatch: pytest.MonkeyPatch) -> None:
    # The daemon leaves a file that systemd or launchd opened for it alone; these tests run
    # it as autostart does, whatever runs the test suite.
    for name in ("INVOCATION_ID", "XPC_SERVICE_NAME", "JOURNAL_STREAM"):
        monkeypatch.delenv(name, raising=False)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_log_file_rotates_by_size_and_stays_private(home: Path, fake: FakeCoactive) -> None:
    login(fake)
    d = start_daemon(home, env={"COACTIVE_CREDD_LOG_MAX_BYTES": "1000"})
    try:
        # Each forced refresh writes a line ("new token …, expires in …"): ~50 of them pass
        # the limit a few times over.
        for _ in range(50):
            assert d.post("/v1/token/refresh")[0] == 200
        files = [d.log, *(Path(f"{d.log}.{n}") for n in (1, 2, 3))]
        assert all(f.exists() for f in files), sorted(os.listdir(home))
        assert not Path(f"{d.log}.4").exists()  # three backups, the oldest dropped
        for f in files:
            assert _mode(f) == 0o600, f
            assert f.stat().st_size <= 1000 + 200, f  # the limit, give or take a line
            assert not leaked(f.read_text(errors="replace"), set(fake.issued))
        # stdout and stderr follow the rotation: a traceback would land in the live file.
        assert os.readlink(f"/proc/{d.proc.pid}/fd/2") == str(d.log)
        assert os.readlink(f"/proc/{d.proc.pid}/fd/1") == str(d.log)
        assert "new token" in d.log_text()
    finally:
        d.stop()


def test_an_existing_log_file_is_made_private(home: Path, fake: FakeCoactive) -> None:
    login(fake)
    logf = home / "credd.log"
    logf.write_text("an older daemon's line\n")
    logf.chmod(0o644)
    with open(logf, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "coactive_credd", "serve"],
                                stdout=out, stderr=out)  # fmt: skip
    from .conftest import Daemon

    d = Daemon(socket=home / "credd.sock", log=logf, proc=proc, home=home)
    try:
        wait_ready(d)
        assert _mode(logf) == 0o600
        assert "an older daemon's line" in d.log_text()  # appended to, not truncated
    finally:
        d.stop()


def test_a_pipe_is_not_rotated_and_a_bad_level_is_one_line(home: Path, fake: FakeCoactive) -> None:
    login(fake)
    proc = subprocess.Popen(
        [sys.executable, "-m", "coactive_credd", "serve"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env={**os.environ, "COACTIVE_CREDD_LOG_MAX_BYTES": "100", "COACTIVE_CREDD_LOG_LEVEL": "loud"},
    )  # fmt: skip
    from .conftest import Daemon

    d = Daemon(socket=home / "credd.sock", log=home / "unused", proc=proc, home=home)
    try:
        d.log.write_text("")
        for _ in range(50):
            try:
                if d.get("/healthz")[0] == 200:
                    break
            except OSError:
                time.sleep(0.1)
        for _ in range(3):
            assert d.post("/v1/token/refresh")[0] == 200
    finally:
        d.stop()
    assert proc.stdout is not None
    with proc.stdout:
        out = proc.stdout.read().decode()
    assert "log level 'loud' is not one of debug, info, warning, error" in out
    assert "Traceback" not in out and out.count("new token") >= 3
    assert not list(home.glob("*.1"))


def test_a_daemon_started_by_a_client_rotates_its_credd_log(
    home: Path, fake: FakeCoactive, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real autostart: the Python shim starts `coactive-credd serve` with its output
    appended to credd.log beside the socket; that file rotates, the shim's next start of a
    daemon appends to the live one."""
    import signal

    import coactive_token

    from .conftest import call

    login(fake)
    monkeypatch.setenv("COACTIVE_CREDD_LOG_MAX_BYTES", "1000")
    monkeypatch.setenv(
        "COACTIVE_CREDD_COMMAND", str(Path(sys.executable).parent / "coactive-credd")
    )
    sock = home / "credd.sock"
    coactive_token.start_daemon(str(sock))
    _, body = call(sock, "GET", "/v1/status")
    pid = int(body["pid"])
    try:
        for _ in range(30):
            assert call(sock, "POST", "/v1/token/refresh")[0] == 200
        log = home / "credd.log"
        assert Path(f"{log}.1").exists() and _mode(Path(f"{log}.1")) == 0o600
        assert log.stat().st_size <= 1000 + 200 and _mode(log) == 0o600
        assert os.readlink(f"/proc/{pid}/fd/2") == str(log)
    finally:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            try:
                if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
                    break
            except OSError:
                break
            time.sleep(0.05)
    for f in home.glob("credd.log*"):
        assert not leaked(f.read_text(errors="replace"), set(fake.issued))
