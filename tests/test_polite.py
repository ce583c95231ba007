"""An unhappy Coactive and odd clocks, through the in-process daemon served as `serve` serves
it: no login Coactive asked us not to make, none that could not help, never a dead token,
and a quick recovery once Coactive answers again."""

from __future__ import annotations

import hashlib
import re
import time
from datetime import datetime

import pytest
from coactive_credd.core import engine

from .conftest import InProc, both_paths


def current(ip: InProc) -> engine.Token:
    tok = ip.daemon.profiles["default"].rt.token
    assert tok is not None
    return tok


def digest(tok: engine.Token) -> str:
    return hashlib.sha256(tok.access_token.encode()).hexdigest()


@both_paths
async def test_a_min_ttl_no_token_could_meet_is_400_without_a_login(inproc: InProc) -> None:
    logins = inproc.fake.logins
    for _ in range(10):  # `coactive-token --min-ttl 3700` ten times; tokens last 3600 s
        status, body = await inproc.get("/v1/token?min_ttl=3700")
        assert status == 400 and body["error"]["code"] == "bad_request"
        assert "3600 s" in body["error"]["message"]
    inproc.clock.jump(100)
    status, _ = await inproc.get("/v1/token?min_ttl=3571")  # more than lifetime - skew
    assert status == 400
    assert inproc.fake.logins == logins
    status, body = await inproc.get("/v1/token?min_ttl=3000")
    assert status == 200 and body["expires_in"] >= 3000


async def test_rejected_token_reports_inside_a_retry_after_window_make_no_login(
    inproc: InProc,
) -> None:
    tok = current(inproc)
    inproc.fake.fault, inproc.fake.retry_after = "429", "60"
    attempts = len(inproc.fake.requests)
    statuses = []
    for _ in range(30):  # CoactiveAuth reporting each 401 it gets
        status, body = await inproc.post(
            "/v1/token/refresh", {"rejected_token_sha256": digest(tok)}
        )
        statuses.append(status)
    assert len(inproc.fake.requests) == attempts + 1  # the first report tried; Coactive said 60 s
    assert set(statuses) == {503}
    assert "next attempt in" in body["error"]["message"]
    # a plain GET still gets the token as it is (it may still work for other calls)
    status, body = await inproc.get("/v1/token")
    assert status == 200 and body["access_token"] == tok.access_token
    # nor does the user's own refresh log in inside the window; it says so, and for how long
    # the current token is still served (it was a 200 with the old token, as if new)
    status, body = await inproc.post("/v1/token/refresh")
    assert status == 503 and "next attempt in" in body["error"]["message"]
    assert body["error"]["message"].startswith("no new token for profile 'default'")
    assert "the current token is still served for" in body["error"]["message"]
    assert len(inproc.fake.requests) == attempts + 1
    inproc.fake.fault = None
    inproc.clock.jump(61)
    status, body = await inproc.post("/v1/token/refresh", {"rejected_token_sha256": digest(tok)})
    assert status == 200 and body["access_token"] != tok.access_token
    assert len(inproc.fake.requests) == attempts + 2


async def test_a_forced_refresh_that_fails_says_the_current_token_still_serves(
    inproc: InProc,
) -> None:
    tok = current(inproc)
    inproc.clock.jump(600)
    inproc.fake.fault = "503"
    status, body = await inproc.post("/v1/token/refresh")  # `coactive-credd refresh`
    assert status == 503 and body["error"]["code"] == "upstream_unavailable"
    message = body["error"]["message"]
    assert message.startswith("no new token for profile 'default': Coactive cannot be reached")
    assert message.endswith("the current token is still served for 2970 s")  # 3600-600-30
    status, body = await inproc.get("/v1/token")  # and it is
    assert status == 200 and body["access_token"] == tok.access_token


async def test_in_reauth_required_only_the_users_refresh_tries_again(inproc: InProc) -> None:
    tok = current(inproc)
    inproc.fake.fault = "401"
    status, body = await inproc.post("/v1/token/refresh", {"rejected_token_sha256": digest(tok)})
    assert status == 424 and body["error"]["code"] == "reauth_required"
    attempts = len(inproc.fake.requests)
    for _ in range(10):
        status, _ = await inproc.post("/v1/token/refresh", {"rejected_token_sha256": digest(tok)})
        assert status == 424
    inproc.clock.jump(3600)
    await inproc.settle()
    status, _ = await inproc.get("/v1/token")
    assert status == 424
    assert len(inproc.fake.requests) == attempts  # credentials Coactive refused: not sent again
    inproc.fake.fault = None
    status, body = await inproc.post("/v1/token/refresh")  # `coactive-credd refresh`
    assert status == 200 and body["access_token"] == inproc.fake.issued[-1]
    assert len(inproc.fake.requests) == attempts + 1


@both_paths
async def test_a_wall_clock_set_back_never_stretches_a_token(inproc: InProc) -> None:
    tok = current(inproc)
    logins = inproc.fake.logins
    inproc.clock.jump(100)
    inproc.clock.step_wall(-600)  # NTP or a user sets the clock back ten minutes
    status, body = await inproc.get("/v1/token")
    assert status == 200
    # the token lived 100 s of its 3600: never more than 3500 s left, whatever the wall says
    assert body["expires_in"] <= 3500
    await inproc.settle()  # a wall clock earlier than obtained_at: refreshed at once
    assert inproc.fake.logins == logins + 1 and current(inproc) is not tok
    status, body = await inproc.get("/v1/token")
    assert body["access_token"] == current(inproc).access_token and body["expires_in"] == 3600


@both_paths
async def test_a_suspend_the_wall_clock_missed_never_serves_a_dead_token(inproc: InProc) -> None:
    tok = current(inproc)
    inproc.clock.suspend(3590)  # slept an hour; the wall clock has not been corrected yet
    status, body = await inproc.get("/v1/token")
    assert status == 200 and body["access_token"] != tok.access_token
    assert body["expires_in"] == 3600


async def test_the_boot_clock_alone_makes_a_refresh_due(inproc: InProc) -> None:
    logins = inproc.fake.logins
    inproc.clock.suspend(2800)  # past the refresh point by the boot clock only
    await inproc.settle()
    assert inproc.fake.logins == logins + 1


async def test_an_outage_that_outlives_the_token_is_retried_at_least_every_30_s(
    inproc: InProc,
) -> None:
    rt = inproc.daemon.profiles["default"].rt
    inproc.fake.fault = "503"
    inproc.clock.jump(3600)  # the token is dead; Coactive is down for hours
    waits = []
    for _ in range(14):
        await inproc.get("/v1/token")
        await inproc.settle()
        assert rt.retry_at is not None
        waits.append(rt.retry_at - inproc.clock.now)
        inproc.clock.now = rt.retry_at
    assert rt.failures >= 14 and max(waits) <= 30
    inproc.fake.fault = None  # Coactive is back: the next caller within 30 s gets a token
    inproc.clock.jump(30)
    status, _ = await inproc.get("/v1/token")
    assert status == 200


async def test_a_one_second_lifetime_does_not_log_in_continuously(inproc: InProc) -> None:
    inproc.fake.expires_in = 1
    status, _ = await inproc.post("/v1/token/refresh")
    assert status == 200
    logins = inproc.fake.logins
    for _ in range(25):  # ten seconds in 0.4 s steps, nobody asking
        inproc.clock.jump(0.4)
        await inproc.settle()
    assert inproc.fake.logins - logins <= 1


async def test_expires_in_as_a_float_or_a_string_is_accepted(inproc: InProc) -> None:
    for value in (3600.0, "3600", "120"):
        inproc.fake.expires_in = value  # type: ignore[assignment]
        status, body = await inproc.post("/v1/token/refresh")
        assert status == 200, body
        assert body["expires_in"] == int(float(value))


async def test_gits_expiry_follows_both_clocks(inproc: InProc) -> None:
    host = inproc.fake.base_url.split("://", 1)[1]
    inproc.clock.jump(100)
    inproc.clock.step_wall(-600)
    status, body = await inproc.get(f"/v1/credential?protocol=http&host={host}")
    assert status == 200
    # 100 s of 3600 lived: served for at most 3500 - 30 s more, whatever the wall clock says
    assert body["password_expiry_utc"] <= inproc.clock.now + 3470 + 1


async def test_status_and_metrics_give_the_serving_deadline_of_both_clocks(
    inproc: InProc,
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    inproc.clock.suspend(1000)  # slept 1000 s; the wall clock has not been corrected yet
    status, body = await inproc.get("/v1/status")
    assert status == 200
    [p] = body["profiles"]
    until = datetime.fromisoformat(p["serve_until"].replace("Z", "+00:00")).timestamp()
    # 3600 s of life, 1000 lived by the boot clock, 30 s of skew: 2570 s left, not 3570
    assert abs(until - (inproc.clock.now + 2570)) <= 1
    status, text = await inproc.get("/metrics")
    assert status == 200
    [deadline] = [
        s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "coactive_credd_token_serving_deadline_seconds"
    ]
    assert abs(deadline - 2570) <= 1


async def test_a_wall_clock_set_back_inside_a_retry_after_window_does_not_stretch_it(
    inproc: InProc,
) -> None:
    """The window is measured on the boot clock: a wall clock stepped back 600 s does not make
    callers wait 600 s more after Coactive answers again."""
    tok = current(inproc)
    inproc.clock.jump(100)  # 3500 s left on the token
    inproc.fake.fault, inproc.fake.retry_after = "503", "5"
    status, _ = await inproc.post("/v1/token/refresh", {"rejected_token_sha256": digest(tok)})
    assert status == 503
    attempts = len(inproc.fake.requests)
    inproc.clock.step_wall(-600)
    inproc.fake.fault = None
    status, body = await inproc.get("/v1/status")
    [p] = body["profiles"]
    due = datetime.fromisoformat(p["next_refresh_at"].replace("Z", "+00:00")).timestamp()
    assert abs(due - (inproc.clock.now + 5)) <= 1  # 5 s from now, not 605
    status, body = await inproc.get("/v1/token?min_ttl=3550")  # needs a login: not yet
    assert status == 503 and "next attempt in 5 s" in body["error"]["message"]
    inproc.clock.jump(6)  # 6 s later by both clocks: the window is over
    await inproc.settle()
    assert len(inproc.fake.requests) == attempts + 1  # the scheduler tried again
    assert current(inproc) is not tok


@pytest.mark.parametrize("report", [False, True])
async def test_a_wall_clock_set_forward_does_not_cut_a_retry_after_window_short(
    inproc: InProc, report: bool
) -> None:
    """Nor does a wall clock stepped forward past the window end it: a user's refresh, or a
    rejected-token report, still makes no login until the boot clock says the window is
    over."""
    tok = current(inproc)
    inproc.fake.fault, inproc.fake.retry_after = "503", "120"
    assert (await inproc.post("/v1/token/refresh"))[0] == 503
    attempts = len(inproc.fake.requests)
    inproc.clock.step_wall(600)
    inproc.fake.fault = None
    body = {"rejected_token_sha256": digest(tok)} if report else None
    status, answer = await inproc.post("/v1/token/refresh", body)
    assert status == 503 and "next attempt in 120 s" in answer["error"]["message"]
    assert len(inproc.fake.requests) == attempts
    inproc.clock.jump(121)
    assert (await inproc.post("/v1/token/refresh", body))[0] == 200
    assert len(inproc.fake.requests) == attempts + 1 and current(inproc) is not tok


async def test_a_rejected_token_report_is_logged_once_with_the_tokens_tail(
    inproc: InProc, caplog: pytest.LogCaptureFixture
) -> None:
    """A report that replaces the token says so in one line (the token's last 4 characters,
    never more); a plain refresh, or a report of a token already replaced, says nothing of
    the kind."""
    tok = current(inproc)
    caplog.clear()
    status, _ = await inproc.post("/v1/token/refresh", {"rejected_token_sha256": digest(tok)})
    assert status == 200
    lines = [r.getMessage() for r in caplog.records if "reported rejected" in r.getMessage()]
    assert lines == [
        f"profile=default token …{tok.access_token[-4:]} reported rejected; replacing it"
    ]
    caplog.clear()
    assert (await inproc.post("/v1/token/refresh"))[0] == 200
    assert (await inproc.post("/v1/token/refresh", {"rejected_token_sha256": digest(tok)}))[
        0
    ] == 200
    assert not [r for r in caplog.records if "reported rejected" in r.getMessage()]


async def test_an_absurd_retry_after_is_a_day_and_status_still_answers(inproc: InProc) -> None:
    from coactive_credd.server.profile import rfc3339

    tok = current(inproc)
    inproc.fake.fault, inproc.fake.retry_after = "429", "99999999999999999999999"
    status, body = await inproc.post("/v1/token/refresh", {"rejected_token_sha256": digest(tok)})
    assert status == 503 and "next attempt in 86400 s" in body["error"]["message"]
    status, body = await inproc.get("/v1/status")
    assert status == 200 and body["profiles"][0]["next_refresh_at"] is not None
    assert rfc3339(1e20) is None and rfc3339(0) == "1970-01-01T00:00:00Z"


async def test_a_token_too_short_lived_to_refresh_ahead_is_logged_as_such(
    inproc: InProc, caplog: pytest.LogCaptureFixture
) -> None:
    inproc.fake.expires_in = 1
    status, _ = await inproc.post("/v1/token/refresh")
    assert status == 200
    assert "expires in 1 s, too short-lived to refresh ahead" in caplog.text
    assert "next refresh in -" not in caplog.text  # it was a negative 56-year count


@pytest.mark.parametrize("clock", ["jump", "suspend"])
async def test_a_failed_refresh_is_one_warning_saying_whether_the_token_still_serves(
    inproc: InProc, caplog: pytest.LogCaptureFixture, clock: str
) -> None:
    """Each failed attempt is one line: its number, Coactive's answer, when the next comes,
    and, while the current token is still served, that it is. A token is dead when either
    clock says so: after an hour gone by (both clocks), or after an hour's suspend that only
    the boot clock has counted yet."""
    inproc.fake.fault, inproc.fake.retry_after = "503", "5"
    caplog.clear()
    assert (await inproc.post("/v1/token/refresh"))[0] == 503
    # the token is dead; after the window the scheduler tries again
    getattr(inproc.clock, clock)(3600)
    await inproc.settle()
    lines = [r.getMessage() for r in caplog.records if "refresh failed" in r.getMessage()]
    assert [r.levelname for r in caplog.records if "refresh failed" in r.getMessage()] == [
        "WARNING",
        "WARNING",
    ]
    head = r"profile=default refresh failed \(attempt {n}\): Coactive is unavailable: HTTP 503: .*"
    assert re.fullmatch(
        head.format(n=1) + r"; retrying in 5\.0 s, still serving the current token", lines[0]
    ), lines[0]
    assert re.fullmatch(head.format(n=2) + r"; retrying in \d+\.\d s", lines[1]), lines[1]


async def test_a_bug_in_a_login_is_a_failure_retried_later_not_a_dead_daemon(
    inproc: InProc, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A login that raises something unforeseen (planted: nothing real makes it) counts as a
    failed attempt: logged with its traceback, retried after a backoff, the current token
    still served, and the daemon logs in again once the bug is gone."""
    d = inproc.daemon
    real = d.upstream.login

    async def broken(*args: object, **kwargs: object) -> object:
        raise RuntimeError("planted")

    monkeypatch.setattr(d.upstream, "login", broken)
    caplog.clear()
    status, body = await inproc.post("/v1/token/refresh")
    assert status == 503 and "(unexpected error: RuntimeError)" in body["error"]["message"]
    rt = d.profiles["default"].rt
    assert rt.failures == 1 and rt.last_error == "unexpected error: RuntimeError"
    [record] = [r for r in caplog.records if "refresh failed unexpectedly" in r.getMessage()]
    assert re.fullmatch(
        r"profile=default refresh failed unexpectedly; retrying in \d+\.\d s",
        record.getMessage(),
    )
    assert record.exc_info is not None and str(record.exc_info[1]) == "planted"
    retry_in = rt.retry_in(inproc.clock.now, inproc.clock.boot_time())
    assert retry_in is not None and 0 < retry_in <= 30
    assert (await inproc.get("/v1/token"))[0] == 200  # the current token, still good
    monkeypatch.setattr(d.upstream, "login", real)
    inproc.clock.step_wall(-600)  # a wall clock set back does not stretch the window
    inproc.clock.jump(retry_in)
    caplog.clear()
    assert (await inproc.post("/v1/token/refresh"))[0] == 200
    assert rt.failures == 0 and inproc.fake.logins == 2
    tail = inproc.fake.ledger[-1].access_token[-4:]
    # refreshed ahead at 3600 - 900 (a quarter) - 90 (half the 5 % jitter: rand is 0.5)
    assert [r.getMessage() for r in caplog.records if "new token" in r.getMessage()] == [
        f"profile=default new token …{tail}, expires in 3600 s, next refresh in 2610 s"
    ]
    status = (await inproc.get("/v1/status"))[1]["profiles"][0]
    at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(inproc.clock.now)))
    assert status["last_refresh_at"] == at
