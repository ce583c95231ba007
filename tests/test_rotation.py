"""A credential rotation never takes away a valid token (SPEC "Containers and long-running
programs"): through a real daemon reading a Secret laid out as the kubelet lays it out, the
current token and its token file stay while the new credential logs in slowly, while
Coactive is down, and when Coactive rejects it; a credential file that is briefly empty or
missing changes nothing."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from coactive_credd.testing.fakeupstream import FakeCoactive, credential_id

from .conftest import PERSONAL_TOKEN, Daemon, start_daemon
from .test_credfile import ROTATED, Secret, wait_for, write_config


def _pod(home: Path, fake: FakeCoactive, secret: Secret) -> tuple[Daemon, Path]:
    token_file = home / "run" / "token"
    write_config(
        home,
        f'[profiles.default]\nbase_url = "{fake.base_url}"\ncredential_file = "{secret.path}"\n'
        f'token_file = "{token_file}"\n',
    )
    d = start_daemon(home)
    wait_for(token_file.exists, what="the first token file")
    return d, token_file


def _watch(d: Daemon, token_file: Path, seconds: float, old: str) -> list[str]:
    """Ask for the token and read the file for ``seconds``; what went wrong, if anything."""
    wrong: list[str] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        t0 = time.monotonic()
        status, body = d.get("/v1/token")
        took = time.monotonic() - t0
        if status != 200:
            wrong.append(f"/v1/token answered {status} {body}")
        elif took > 0.5:
            wrong.append(f"/v1/token took {took:.1f} s")
        if not token_file.exists():
            wrong.append("the token file was gone")
        elif token_file.read_text() not in (
            old,
            body.get("access_token") if status == 200 else old,
        ):
            wrong.append("the token file held neither the old nor the served token")
        time.sleep(0.05)
    return wrong


def test_a_slow_login_with_the_new_secret_keeps_the_old_token_served(
    home: Path, fake: FakeCoactive
) -> None:
    secret = Secret(home / "secret")
    secret.put(PERSONAL_TOKEN)
    d, token_file = _pod(home, fake, secret)
    try:
        old = token_file.read_text()
        fake.add_personal_token(ROTATED)
        fake.delay = 2.0
        secret.put(ROTATED)
        wrong = _watch(d, token_file, 3.0, old)
        assert not wrong, wrong[:3]
        wait_for(
            lambda: fake.ledger and fake.ledger[-1].credential == credential_id(ROTATED),
            what="the login with the new Secret",
        )
        wait_for(lambda: token_file.read_text() == fake.issued[-1], what="the new token's file")
        assert d.get("/v1/token")[1]["access_token"] == fake.issued[-1]
    finally:
        d.stop()


@pytest.mark.heavy  # long: started first, so it does not end the run alone
def test_coactive_down_during_a_rotation_still_serves_the_old_token(
    home: Path, fake: FakeCoactive
) -> None:
    secret = Secret(home / "secret")
    secret.put(PERSONAL_TOKEN)
    d, token_file = _pod(home, fake, secret)
    try:
        old = token_file.read_text()
        fake.add_personal_token(ROTATED)
        fake.fault = "503"
        secret.put(ROTATED)
        wait_for(lambda: "credential file(s) changed" in d.log_text(), what="the rotation")
        wrong = _watch(d, token_file, 3.0, old)
        assert not wrong, wrong[:3]
        assert d.get("/v1/token")[1]["access_token"] == old
        fake.fault = None  # Coactive is back: the new credential's token replaces the old
        wait_for(
            lambda: token_file.read_text() != old and token_file.read_text() == fake.issued[-1],
            timeout=20,
            what="the new credential's token",
        )
        assert fake.ledger[-1].credential == credential_id(ROTATED)
    finally:
        d.stop()


def test_a_rejected_new_secret_is_reauth_required_but_the_old_token_stays_served(
    home: Path, fake: FakeCoactive
) -> None:
    secret = Secret(home / "secret")
    secret.put(PERSONAL_TOKEN)
    d, token_file = _pod(home, fake, secret)
    try:
        old = token_file.read_text()
        secret.put(ROTATED)  # Coactive does not know it
        wait_for(
            lambda: d.get("/v1/status")[1]["profiles"][0]["state"] == "reauth_required",
            what="the new Secret's rejection",
        )
        status, body = d.get("/v1/token")
        assert status == 200 and body["access_token"] == old
        assert token_file.read_text() == old
        assert d.proc.poll() is None
    finally:
        d.stop()


def test_a_briefly_empty_or_missing_credential_file_changes_nothing(
    home: Path, fake: FakeCoactive
) -> None:
    plain = home / "secret"  # a file its writer rewrites in place (not atomically)
    plain.write_text(PERSONAL_TOKEN + "\n")
    plain.chmod(0o600)
    token_file = home / "run" / "token"
    write_config(
        home,
        f'[profiles.default]\nbase_url = "{fake.base_url}"\ncredential_file = "{plain}"\n'
        f'token_file = "{token_file}"\n',
    )
    d = start_daemon(home)
    try:
        wait_for(token_file.exists, what="the first token file")
        old = token_file.read_text()
        logins = fake.logins
        for gap in ("empty", "missing"):
            if gap == "empty":
                plain.write_text("")
            else:
                plain.unlink()
            wrong = _watch(d, token_file, 2.5, old)  # the 2 s poll sees the gap
            assert not wrong, (gap, wrong[:3])
            st = d.get("/v1/status")[1]["profiles"][0]
            assert st["state"] == "valid", (gap, st)
            plain.write_text(PERSONAL_TOKEN + "\n")
            plain.chmod(0o600)
        time.sleep(2.5)
        assert d.get("/v1/token")[1]["access_token"] == old
        assert fake.logins == logins, "the same credential back needs no new login"
    finally:
        d.stop()
