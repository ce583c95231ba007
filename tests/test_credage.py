"""The personal token's age: recorded at login, warned about from 14 days before the limit."""

from __future__ import annotations

import datetime
import logging
from pathlib import Path

import pytest
from coactive_credd.core import config, credage

from .conftest import CLIENT_ID, CLIENT_SECRET, PERSONAL_TOKEN, InProc, run_cli

DAY = 86400


def _pc(created: str | None, auth: config.Auth = "personal_token") -> config.ProfileConfig:
    day = datetime.date.fromisoformat(created) if created else None
    return config.ProfileConfig(name="p", auth=auth, credential_created=day)


def _at(day: str) -> float:
    return datetime.datetime.fromisoformat(day + "T00:00:00+00:00").timestamp()


def test_three_calendar_months_clamped_to_the_month_end() -> None:
    assert credage.add_months(datetime.date(2026, 9, 1), 3) == datetime.date(2026, 12, 1)
    assert credage.add_months(datetime.date(2026, 11, 30), 3) == datetime.date(2027, 2, 28)
    assert credage.add_months(datetime.date(2026, 10, 15), 3) == datetime.date(2027, 1, 15)


def test_warning_starts_14_days_before_the_limit() -> None:
    pc = _pc("2026-09-01")  # limit 2026-12-01
    assert credage.warning(pc, _at("2026-11-16")) is None  # 15 days left
    text = credage.warning(pc, _at("2026-11-17"))  # 14 days left
    assert text is not None and "expires in 14 days (2026-12-01" in text
    assert "Coactive dashboard" in text and "coactive-credd login --profile p" in text
    assert "less than a day" in str(credage.warning(pc, _at("2026-12-01") - 3600))
    assert "reached Coactive's 3-month limit on 2026-12-01" in str(
        credage.warning(pc, _at("2026-12-02"))
    )
    fields = credage.status_fields(pc, _at("2026-11-20") + 3600)
    assert fields["credential_days_left"] == 10
    assert fields["credential_expires_at"] == "2026-12-01T00:00:00Z"
    assert fields["credential_created"] == "2026-09-01"


def test_system_credentials_and_unknown_days_carry_no_warning() -> None:
    late = _at("2030-01-01")
    assert credage.warning(_pc("2026-09-01", "client_credentials"), late) is None
    assert credage.warning(_pc(None), late) is None
    assert set(credage.status_fields(_pc("2026-09-01", "client_credentials"), late).values()) == {
        None
    }


def test_login_records_the_day_and_created_overrides_it(home: Path) -> None:
    def login(*extra: str, token: str = PERSONAL_TOKEN) -> str:
        proc = run_cli("login", "--base-url", "http://127.0.0.1:9", "--no-verify",
                       "--personal-token-stdin", *extra, input=token + "\n")  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        return (home / "config.toml").read_text()

    today = datetime.datetime.now(datetime.UTC).date().isoformat()
    assert f"credential_created = {today}" in login()
    assert "credential_created = 2026-09-01" in login("--created", "2026-09-01")
    # The same token stored again (a new base URL, say) keeps its day; a new token starts anew.
    assert "credential_created = 2026-09-01" in login()
    assert f"credential_created = {today}" in login(token=PERSONAL_TOKEN + "2")

    before = (home / "config.toml").read_text()
    for bad, says in (("2026-13-01", "YYYY-MM-DD"), ("2999-01-01", "in the future")):
        proc = run_cli("login", "--no-verify", "--personal-token-stdin", "--created", bad,
                       input=PERSONAL_TOKEN + "\n")  # fmt: skip
        assert proc.returncode == 2 and says in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert (home / "config.toml").read_text() == before  # nothing half-saved

    proc = run_cli("login", "--profile", "sys", "--base-url", "http://127.0.0.1:9", "--no-verify",
                   "--client-id", CLIENT_ID, "--client-secret-stdin",
                   input=CLIENT_SECRET + "\n")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert config.load(home / "config.toml").profiles["sys"].credential_created is None


async def test_daemon_warns_daily_with_the_clock_jumped(
    inproc: InProc, caplog: pytest.LogCaptureFixture
) -> None:
    d = inproc.daemon
    created = datetime.datetime.fromtimestamp(inproc.clock.now, datetime.UTC).date()
    assert d.profiles["default"].cfg.credential_created == created  # login recorded today

    def warned() -> list[str]:
        return [r.getMessage() for r in caplog.records
                if r.levelno == logging.WARNING and "personal token expires" in r.getMessage()]  # fmt: skip

    _, body = await inproc.get("/v1/status")
    assert body["profiles"][0]["credential_warning"] is None
    assert warned() == []

    # To 10 days before the limit, at midday.
    limit = credage.expires_at(created)
    inproc.clock.now = limit - 10 * DAY + (43200 - limit % DAY)
    await inproc.settle()
    assert len(warned()) == 1 and "expires in 9 days" in warned()[0]
    _, body = await inproc.get("/v1/status")
    assert body["profiles"][0]["credential_days_left"] == 9
    assert "Coactive dashboard" in body["profiles"][0]["credential_warning"]

    inproc.clock.jump(3600)  # the same day: no second line
    await inproc.settle()
    assert len(warned()) == 1
    inproc.clock.jump(DAY)  # the next day: one more
    await inproc.settle()
    assert len(warned()) == 2 and "expires in 8 days" in warned()[1]


def test_doctor_notes_a_token_near_its_limit_and_fails_one_past_it(home: Path) -> None:
    import json

    def doctor_age(created: str) -> dict[str, str]:
        proc = run_cli("login", "--base-url", "http://127.0.0.1:9", "--no-verify",
                       "--personal-token-stdin", "--created", created,
                       input=PERSONAL_TOKEN + "\n")  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        out = json.loads(run_cli("doctor", "--json").stdout)
        (finding,) = [f for f in out["findings"] if f["check"] == "credential"]
        return dict(finding)

    today = datetime.datetime.now(datetime.UTC).date()
    fresh = doctor_age(today.isoformat())
    assert fresh["status"] == "ok" and "good for" in fresh["message"]
    near = doctor_age((today - datetime.timedelta(days=85)).isoformat())
    assert near["status"] == "note" and "personal token expires in" in near["message"]
    assert "Coactive dashboard" in near["fix"]
    past = doctor_age((today - datetime.timedelta(days=100)).isoformat())
    assert past["status"] == "problem" and "reached Coactive's 3-month limit" in past["message"]


def test_status_without_a_daemon_still_warns(home: Path) -> None:
    import json

    old = datetime.datetime.now(datetime.UTC).date() - datetime.timedelta(days=85)
    proc = run_cli("login", "--base-url", "http://127.0.0.1:9", "--no-verify",
                   "--personal-token-stdin", "--created", old.isoformat(),
                   input=PERSONAL_TOKEN + "\n")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    st = run_cli("status", "--json")
    assert st.returncode == 3  # no daemon
    (p,) = json.loads(st.stdout)["profiles"]
    assert p["credential_created"] == old.isoformat() and "expires in" in p["credential_warning"]
    assert "warning: profile default: the personal token expires in" in run_cli("status").stdout
