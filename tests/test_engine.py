"""The token engine's timing rules, with the clock and the jitter passed in: no sleeping."""

from __future__ import annotations

import pytest
from coactive_credd import engine
from coactive_credd.engine import Action, Policy, Runtime, State, Token

P = Policy()


def tok(lifetime: float, obtained: float = 1_000_000.0) -> Token:
    return Token("t", "Bearer", obtained, obtained + lifetime)


def test_documented_lifetime_refreshes_with_a_quarter_left_minus_jitter() -> None:
    t = tok(3600)
    assert engine.refresh_at(t, P, 0.0) == t.obtained_at + 2700
    assert engine.refresh_at(t, P, 0.999) == pytest.approx(t.obtained_at + 2700 - 0.999 * 180, abs=1e-6)


@pytest.mark.parametrize(
    "lifetime", [1, 2, 5, 10, 20, 30, 31, 45, 60, 61, 120, 300, 900, 3600, 7200, 86400]
)
@pytest.mark.parametrize("rand", [0.0, 0.5, 0.999])
def test_refresh_always_comes_before_the_token_stops_being_served(
    lifetime: float, rand: float
) -> None:
    t = tok(lifetime)
    at = engine.refresh_at(t, P, rand)
    until = engine.usable_until(t, P)
    assert t.obtained_at <= at < until
    # a lead of a quarter of the usable window (at most a minute) is always left for the login
    assert until - at >= min(P.max_lead, (until - t.obtained_at) * 0.25) - 1e-9


def test_45_second_tokens_with_the_30_second_skew_leave_no_gap() -> None:
    t = tok(45)
    assert engine.servable(t, t.obtained_at + 20, P)
    assert engine.refresh_at(t, P, 0.5) < engine.usable_until(t, P) - 5


def test_never_served_at_or_past_expires_at_minus_skew() -> None:
    t = tok(3600)
    limit = t.expires_at - 30
    assert engine.servable(t, limit - 0.001, P)
    assert not engine.servable(t, limit, P)
    assert not engine.servable(t, t.expires_at + 1, P)


def test_min_ttl_asks_for_that_much_validity() -> None:
    t = tok(3600)
    now = t.expires_at - 300
    assert engine.servable(t, now, P, min_ttl=300)
    assert not engine.servable(t, now, P, min_ttl=301)


def test_backoff_grows_capped_with_full_jitter() -> None:
    assert engine.backoff_delay(1, P, 0.999) == pytest.approx(0.999, abs=1e-9)
    assert engine.backoff_delay(4, P, 0.999) == pytest.approx(8 * 0.999, abs=1e-9)
    assert engine.backoff_delay(30, P, 0.999) == pytest.approx(300 * 0.999, abs=1e-9)
    assert engine.backoff_delay(30, P, 0.0) == P.backoff_floor  # never a hot loop


def test_backoff_is_bounded_by_the_time_left_but_honours_retry_after() -> None:
    assert engine.backoff_delay(20, P, 0.999, time_left=40) == 20
    assert engine.backoff_delay(1, P, 0.5, retry_after=7) == 7
    assert engine.backoff_delay(20, P, 0.999, time_left=40, retry_after=90) == 90


def test_decide_through_a_tokens_life() -> None:
    rt = Runtime()
    assert engine.decide(rt, 0, P) is Action.WAIT_FOR_REFRESH
    t = tok(3600, obtained=0)
    rt.on_success(t, P, 0.0, 0)
    assert engine.state(rt, 10, P) is State.VALID
    assert engine.decide(rt, 10, P) is Action.SERVE
    assert engine.decide(rt, 2700, P) is Action.SERVE_AND_REFRESH
    rt.refreshing = True
    assert engine.state(rt, 2700, P) is State.REFRESHING
    assert engine.decide(rt, 2700, P) is Action.SERVE  # one refresh at a time
    assert engine.decide(rt, 3570, P) is Action.WAIT_FOR_REFRESH
    rt.refreshing = False
    assert engine.state(rt, 3570, P) is State.EXPIRED


def test_transient_failure_backs_off_and_keeps_serving() -> None:
    rt = Runtime()
    rt.on_success(tok(3600, obtained=0), P, 0.0, 0)
    delay = rt.on_transient_failure("HTTP 503", P, 0.999, 2700, retry_after=None)
    assert rt.retry_at == 2700 + delay
    assert engine.decide(rt, 2700.5, P) is Action.SERVE  # in backoff: no new attempt
    assert rt.next_due() == rt.retry_at
    # once the token is dead, callers in backoff fail fast instead of hammering Coactive
    rt.retry_at = 3600
    assert engine.decide(rt, 3575, P) is Action.FAIL_UNAVAILABLE


def test_rejected_credentials_stop_retries_until_new_ones() -> None:
    rt = Runtime()
    rt.on_success(tok(3600, obtained=0), P, 0.0, 0)
    rt.on_rejected("HTTP 401")
    assert rt.next_due() is None
    assert engine.state(rt, 10, P) is State.REAUTH_REQUIRED
    assert engine.decide(rt, 10, P) is Action.SERVE  # the current token still works until it dies
    assert engine.decide(rt, 3590, P) is Action.FAIL_REAUTH
    rt.on_new_credentials()
    assert engine.decide(rt, 3590, P) is Action.WAIT_FOR_REFRESH


def test_locked_wins_over_every_other_state() -> None:
    rt = Runtime()
    rt.on_rejected("x")
    assert engine.state(rt, 0, P, locked=True) is State.LOCKED


def test_token_shorter_than_the_skew_is_still_usable() -> None:
    t = tok(20)
    assert engine.skew_for(t, P) == 10
    assert engine.servable(t, t.obtained_at + 5, P)
