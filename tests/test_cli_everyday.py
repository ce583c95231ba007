"""The commands a person meets every day, run for real: stop (a wedged daemon too), status
with and without a daemon, refresh during an outage, token --wait, the demo under a user's
environment, and the one-line failures (broken pipe, long socket path)."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from coactive_credd.testing.fakeupstream import FakeCoactive

from .conftest import Daemon, InProc, leaked, login, run_cli, start_daemon


def one_line(text: str) -> bool:
    return len(text.strip().splitlines()) == 1 and "Traceback" not in text


@pytest.mark.heavy  # long: started first, so it does not end the run alone
def test_a_stopped_daemon_is_named_quickly_and_stop_ends_it(daemon: Daemon) -> None:
    pid = daemon.proc.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        out = run_cli("token")
        waited = time.monotonic() - t0
        assert out.returncode == 3
        assert one_line(out.stderr)
        assert f"pid {pid}" in out.stderr and "not answering" in out.stderr
        assert "coactive-credd stop" in out.stderr and "coactive-credd serve" not in out.stderr
        assert waited < 15, waited  # not the 30 s a token request may wait on Coactive
        # A wedged daemon is its own class, and `token` never starts a second daemon beside it.
        import coactive_token

        with (
            pytest.raises(coactive_token.DaemonNotAnswering),
            coactive_token.Client(str(daemon.socket), timeout=3, autostart=False) as client,
        ):
            client.token()
        started = run_cli("token", env={"COACTIVE_CREDD_AUTOSTART": "1"})
        assert started.returncode == 3 and "not answering" in started.stderr, started.stderr
        assert "starting one" not in started.stderr
        again = run_cli("serve")
        assert again.returncode == 1 and one_line(again.stderr)
        assert f"pid {pid}" in again.stderr and "coactive-credd stop" in again.stderr
        stop = run_cli("stop")
        assert stop.returncode == 0, stop.stderr
        assert f"pid {pid}" in stop.stderr
        daemon.proc.wait(10)
    finally:
        if daemon.proc.poll() is None:
            os.kill(pid, signal.SIGCONT)
    assert not daemon.socket.exists()
    nothing = run_cli("stop")
    assert nothing.returncode == 0 and "not running" in nothing.stderr


def test_refresh_during_an_outage_keeps_serving_and_says_so(
    daemon: Daemon, fake: FakeCoactive
) -> None:
    before = run_cli("token").stdout.strip()
    fake.fault = "503"
    out = run_cli("refresh")
    assert out.returncode == 0, out.stderr
    assert "still served" in out.stderr and "coactive-credd status" in out.stderr
    assert run_cli("token").stdout.strip() == before


def _read_pty(fd: int, until: bytes | None = None) -> bytes:
    """What a child wrote to the terminal ``fd`` (the master side) until ``until`` appears,
    or until it exits (EIO: no writer left)."""
    got = b""
    while until is None or until not in got:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO once the child is gone
            break
        if not chunk:
            break
        got += chunk
    return got


@pytest.mark.coactive_fault("503")  # the daemon's first login meets an outage: no token yet
async def test_token_wait_rides_out_the_backoff(inproc: InProc) -> None:
    """``token --wait`` keeps asking through the daemon's backoff and gets the token of the
    login that follows it. The backoff ends when the in-process daemon's clock is moved past
    it (both clocks), not by waiting it out; the client's stderr is a terminal, where it says
    that it waits."""
    rt = inproc.daemon.profiles["default"].rt
    assert inproc.fake.requests and inproc.fake.logins == 0  # it tried; Coactive said 503
    assert rt.token is None and rt.in_backoff(inproc.clock(), inproc.clock.boot_time())
    failed = await asyncio.to_thread(run_cli, "token")
    assert failed.returncode == 6 and one_line(failed.stderr)
    assert "--wait" in failed.stderr or "coactive-credd" in failed.stderr
    inproc.fake.fault = None
    terminal, tty = pty.openpty()
    try:
        waited = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "coactive_credd",
            "token",
            "--wait=60",
            stdout=asyncio.subprocess.PIPE,
            stderr=tty,
        )
        os.close(tty)
        try:
            told = await asyncio.wait_for(
                asyncio.to_thread(_read_pty, terminal, b"for Coactive"), 30
            )
            assert b"waiting up to 60 s for Coactive" in told, told
            # Coactive is back and the client has asked: nobody logs in inside the backoff
            assert inproc.fake.logins == 0
            assert rt.in_backoff(inproc.clock(), inproc.clock.boot_time())
            left = rt.retry_in(inproc.clock(), inproc.clock.boot_time())
            assert left is not None
            inproc.clock.jump(left + 0.1)
            await inproc.settle()
            out, _ = await asyncio.wait_for(waited.communicate(), 30)
        finally:
            if waited.returncode is None:
                waited.kill()
                await waited.wait()
        said = (told + await asyncio.to_thread(_read_pty, terminal)).decode(errors="replace")
    finally:
        os.close(terminal)
    assert waited.returncode == 0, said
    assert out.decode().strip() == inproc.fake.issued[-1]
    assert inproc.fake.logins == 1
    assert "Traceback" not in said and not leaked(said, set(inproc.fake.issued))


def test_status_exit_codes_and_refresh_all(home: Path, fake: FakeCoactive) -> None:
    login(fake, "default")
    fake.add_personal_token("cpt_second")
    proc = run_cli(
        "login",
        "--profile",
        "second",
        "--base-url",
        fake.base_url,
        "--personal-token-stdin",
        input="cpt_second\n",
    )
    assert proc.returncode == 0, proc.stderr
    d = start_daemon(home)
    try:
        ok = run_cli("status")
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert "SERVED UNTIL" in ok.stdout and "log:" in ok.stdout
        st = json.loads(run_cli("status", "--json").stdout)
        for p in st["profiles"]:
            assert p["serve_until"] < p["expires_at"]  # RFC 3339 UTC strings sort by time
            assert p["last_refresh_at"] is not None  # the login's token
        fake.revoke("cpt_second")
        refreshed = run_cli("refresh", "--all")
        assert refreshed.returncode == 5
        assert "profile default: new token" in refreshed.stdout
        assert "coactive-credd login --profile second" in refreshed.stderr
        bad = run_cli("status")
        assert bad.returncode == 5
        assert "new credentials needed: generate a new personal token" in bad.stdout
        assert "`coactive-credd login --profile second --base-url " in bad.stdout
        as_json = run_cli("status", "--json")
        assert as_json.returncode == 5
        states = {p["name"]: p["state"] for p in json.loads(as_json.stdout)["profiles"]}
        assert states == {"default": "valid", "second": "reauth_required"}
        # A reload that fails is visible, and the daemon keeps the previous state.
        (home / "config.toml").write_text("[profiles.default\n")
        os.kill(d.proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            st = json.loads(run_cli("status", "--json").stdout)
            if st.get("last_reload_error"):
                break
            time.sleep(0.1)
        assert "not valid TOML" in st["last_reload_error"]
        assert "reload FAILED" in run_cli("status").stdout
    finally:
        d.stop()
    down = run_cli("status")
    assert down.returncode == 3
    assert "config.toml" in down.stdout  # the broken config is reported, not a traceback
    (home / "config.toml").unlink()
    login(fake, "default", "--no-verify")
    down = run_cli("status", "--json")
    assert down.returncode == 3
    off = json.loads(down.stdout)
    assert off["running"] is False
    (p,) = off["profiles"]
    assert {k: p[k] for k in ("name", "auth", "base_url", "state")} == (
        {"name": "default", "auth": "personal_token", "base_url": fake.base_url, "state": None}
    )
    assert p["credential_days_left"] > 80 and p["credential_warning"] is None  # from config


def test_token_before_any_login_leaves_no_daemon_behind(home: Path) -> None:
    out = run_cli("token", env={"COACTIVE_CREDD_AUTOSTART": "1"})
    assert out.returncode == 4 and one_line(out.stderr)
    assert "coactive-credd login --profile default" in out.stderr
    assert not (home / "credd.sock").exists()
    assert not (home / "credd.sock.lock").exists()


def test_demo_owns_its_environment() -> None:
    env = {**os.environ, "COACTIVE_PROFILE": "prod", "COACTIVE_CREDD_SOCKET": "/nonexistent/s"}
    out = subprocess.run(
        [sys.executable, "-m", "coactive_credd", "demo", "--duration", "4"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    assert "unknown_profile" not in out.stdout and "HTTP 200" in out.stdout
    assert "UnknownProfile" not in out.stdout


@pytest.mark.parametrize("argv", [["status"], ["status", "--json"], ["token"], ["--help"]])
def test_a_reader_that_goes_away_gets_no_traceback(daemon: Daemon, argv: list[str]) -> None:
    read, write = os.pipe()
    os.close(read)  # like `| head -1` once it has its line
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "coactive_credd", *argv],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=30,
        )
    finally:
        os.close(write)
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr
    assert proc.stderr == ""


def test_a_socket_path_too_long_is_one_line(home: Path) -> None:
    sock = str(home / ("s" * 120))
    served = run_cli("serve", "--socket", sock)
    assert served.returncode == 1 and one_line(served.stderr), served.stderr
    assert "107" in served.stderr and "COACTIVE_CREDD_SOCKET" in served.stderr
    asked = run_cli("token", env={"COACTIVE_CREDD_SOCKET": sock})
    assert asked.returncode == 3 and one_line(asked.stderr), asked.stderr
    assert "107" in asked.stderr and "COACTIVE_CREDD_SOCKET" in asked.stderr


def test_token_env_format_exports(daemon: Daemon, fake: FakeCoactive) -> None:
    out = run_cli("token", "--format", "env")
    assert out.stdout.startswith("export COACTIVE_ACCESS_TOKEN=")
    shell = subprocess.run(
        ["sh", "-c", f"{out.stdout.strip()}; sh -c 'printf %s \"$COACTIVE_ACCESS_TOKEN\"'"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert shell.stdout == fake.issued[-1]


@pytest.mark.parametrize(
    "argv",
    [
        ["token", "--profle", "x"],
        ["status", "--jsn"],
        ["refresh", "--alll"],
    ],
)
def test_a_typo_points_to_the_subcommands_help(home: Path, argv: list[str]) -> None:
    out = run_cli(*argv)
    assert out.returncode == 2 and one_line(out.stderr)
    assert f"`coactive-credd {argv[0]} --help`" in out.stderr
    assert "did you mean" in out.stderr


def test_the_async_client_names_a_stopped_daemon_quickly(daemon: Daemon) -> None:
    import asyncio

    import coactive_token

    pid = daemon.proc.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        with pytest.raises(coactive_token.DaemonUnreachable) as err:
            asyncio.run(coactive_token.aget_token(socket_path=str(daemon.socket)))
        assert time.monotonic() - t0 < 15  # not the 30 s default timeout
    finally:
        os.kill(pid, signal.SIGCONT)
    assert f"pid {pid}" in str(err.value) and "coactive-credd stop" in str(err.value)
