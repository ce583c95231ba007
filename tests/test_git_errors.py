"""What git's user sees when the real daemon cannot hand out a token: one line on stderr
naming the problem and its fix, nothing on stdout, exit 0 (git goes on to ask the user).

These answers come from the real ``coactive-credd serve``; the stand-in daemon in
test_git_helper.py is kept for the answers a real daemon never gives (malformed ones).
"""

from __future__ import annotations

import time
from pathlib import Path

from coactive_credd.testing.fakeupstream import FakeCoactive

from .conftest import Daemon, login, run_cli, start_daemon
from .test_git_helper import helper, host_of

PASSPHRASE = "correct horse battery staple"


def ask(fake: FakeCoactive) -> tuple[str, str]:
    r = helper("get", f"protocol=http\nhost={host_of(fake)}\n\n")
    assert r.returncode == 0
    return r.stdout, r.stderr


def one_line(stderr: str) -> str:
    assert stderr.startswith("git-credential-coactive: ") and stderr.count("\n") == 1, stderr
    return stderr


def test_rejected_credentials_reach_git_as_the_login_to_run(home: Path, fake: FakeCoactive) -> None:
    fake.expires_in = 2  # a token that dies within seconds, so the rejection shows
    login(fake)
    d = start_daemon(home)
    try:
        fake.fault = "401"
        deadline = time.monotonic() + 30
        while True:
            # A token this short-lived is replaced when a caller asks, not ahead of time (no
            # background login every second): ask, so the daemon meets Coactive's 401.
            d.get("/v1/token")
            _, status = d.get("/v1/status")
            if status["profiles"][0]["state"] == "reauth_required" and status["profiles"][0][
                "expires_at"
            ] < time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 1)):
                break
            assert time.monotonic() < deadline, status
            time.sleep(0.1)
        out, err = ask(fake)
        assert out == ""
        line = one_line(err)
        assert (
            "profile 'default' needs new credentials: Coactive refused the login with HTTP 401"
            in line
        )
        assert "coactive-credd login --profile default" in line
    finally:
        d.stop()


def test_a_locked_vault_reaches_git_as_the_unlock_to_run(
    daemon: Daemon, fake: FakeCoactive
) -> None:
    assert run_cli("rekey", "--passphrase-stdin", input=PASSPHRASE + "\n").returncode == 0
    assert run_cli("lock").returncode == 0
    out, err = ask(fake)
    assert out == ""
    line = one_line(err)
    assert "locked" in line and "coactive-credd unlock" in line
