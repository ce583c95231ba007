"""The token engine's timing rules, with the clock and the jitter passed in: no sleeping."""

from __future__ import annotations

import pytest
from coactive_credd.core import engine
from coactive_credd.core.engine import Action, Policy, Runtime, State, Token

P = Policy()


def tok(lifetime: float, obtained: float = 1_000_000.0) -> Token:
    return Token("t", "Bearer", obtained, obtained + lifetime)


def test_documented_lifetime_refreshes_with_a_quarter_left_minus_jitter() -> None:
    t = tok(3600)
    assert engine.refresh_at(t, P, 0.0) == t.obtained_at + 2700
    assert engine.refresh_at(t, P, 0.999) == pytest.approx(
        t.obtained_at + 2700 - 0.999 * 180, abs=1e-6
    )


@pytest.mark.parametrize(
    "lifetime", [6, 10, 20, 30, 31, 45, 60, 61, 120, 300, 900, 3600, 7200, 86400]
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


@pytest.mark.parametrize("lifetime", [1, 2, 5])
def test_tiny_lifetimes_log_in_no_more_often_than_the_floor(lifetime: float) -> None:
    t = tok(lifetime)
    for rand in (0.0, 0.5, 0.999):
        assert engine.refresh_at(t, P, rand) == t.obtained_at + P.min_refresh_interval
        assert engine.plan_refresh(t, P, rand) is None  # replaced when a caller needs one
    six = tok(6)  # refreshed ahead, but never sooner than the floor
    assert [engine.plan_refresh(six, P, r) for r in (0.0, 0.999)] == [
        six.obtained_at + 2.25,
        six.obtained_at + P.min_refresh_interval,
    ]


@pytest.mark.parametrize("lifetime", [30, 60, 120, 300, 900, 3600])
def test_every_lifetime_gets_jitter(lifetime: float) -> None:
    t = tok(lifetime)
    spread = engine.refresh_at(t, P, 0.0) - engine.refresh_at(t, P, 0.999)
    assert spread > 0
    if engine.refresh_at(t, P, 0.999) > t.obtained_at + P.min_refresh_interval:
        assert spread == pytest.approx(0.999 * lifetime * P.jitter_fraction)


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
    left = 10_000.0  # a usable token: up to five minutes
    assert engine.backoff_delay(30, P, 0.999, time_left=left) == pytest.approx(300 * 0.999)
    assert engine.backoff_delay(30, P, 0.0) == P.backoff_floor  # never a hot loop


def test_backoff_without_a_usable_token_is_at_most_30_s_unless_retry_after_says_later() -> None:
    assert engine.backoff_delay(30, P, 0.999) == pytest.approx(30 * 0.999)
    assert engine.backoff_delay(30, P, 0.999, time_left=-5) == pytest.approx(30 * 0.999)
    assert engine.backoff_delay(30, P, 0.999, retry_after=120) == 120


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


def test_a_backoff_window_is_measured_on_the_boot_clock() -> None:
    rt = Runtime()
    rt.on_success(Token("t", "Bearer", 0, 3600, 500), P, 0.0, 0)
    delay = rt.on_transient_failure("HTTP 429", P, 0.5, 100, retry_after=60, boot=600)
    assert delay == 60 and (rt.retry_at, rt.retry_boot) == (160, 660)
    # the wall clock set back 600 s, 10 s later: 50 s left, not 650
    assert rt.retry_in(-490, 610) == 50
    assert rt.in_backoff(-490, 610) and rt.next_due(-490, 610) == -440
    # set forward 600 s, 10 s later: still 50 s left, not over
    assert rt.in_backoff(710, 610)
    assert not rt.in_backoff(-400, 660)  # over when the boot clock says so
    # no boot reading: the wall clock alone, as before
    assert rt.retry_in(150, None) == 10 and rt.next_due() == 160 and rt.next_due(150) == 160
    # what callers get decided on the boot clock's window, the wall set back 600 s:
    # inside it, a due refresh is not started; after it, it is (by the wall, still inside)
    rt.refresh_at = 50.0  # due
    assert engine.decide(rt, -490, P, boot=610) is Action.SERVE
    assert engine.decide(rt, -440, P, boot=661) is Action.SERVE_AND_REFRESH
    dead = Runtime()
    dead.on_success(Token("t", "Bearer", 0, 3600, 500), P, 0.0, 0)
    dead.on_transient_failure("HTTP 503", P, 0.5, 3580, retry_after=20, boot=4080)
    assert engine.decide(dead, 3590, P, boot=4090) is Action.FAIL_UNAVAILABLE  # token dead
    assert engine.decide(dead, 3000, P, boot=4101) is Action.WAIT_FOR_REFRESH  # window over
    rt.on_new_credentials()
    assert (rt.retry_at, rt.retry_boot, rt.retry_in(0, 0)) == (None, None, None)


def test_the_serving_deadline_is_the_earlier_of_both_clocks() -> None:
    t = Token("t", "Bearer", 0, 3600, 500)  # minted at boot 500; skew 30 s
    assert engine.serve_until(t, P, 100, 600) == 3570  # the clocks agree
    assert engine.serve_until(t, P, 100, 1600) == 2570  # a suspend the wall has not seen
    assert engine.serve_until(t, P, 1100, 600) == 3570  # the wall set forward: its own count
    assert engine.serve_until(t, P, -500, 600) == 2970  # set back: the boot clock's count
    assert engine.serve_until(t, P, 100) == 3570  # no boot reading: the wall alone


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


# ---- exact values, so that a changed constant or operator shows (see docs/TESTING.md) ------


def test_the_lead_before_usable_until_is_a_quarter_of_the_usable_window_at_most_a_minute() -> None:
    # then jitter of up to 5 % of the lifetime earlier, for every lifetime (half of it here)
    short = tok(60)  # usable for 30 s (skew clamped to half): a lead of 7.5 s
    assert engine.refresh_at(short, P, 0.5) == short.obtained_at + 22.5 - 1.5
    medium = tok(300)  # usable for 270 s: the lead is capped at 60 s
    assert engine.refresh_at(medium, P, 0.5) == medium.obtained_at + 210 - 7.5


def test_backoff_is_bounded_by_any_positive_time_left() -> None:
    assert engine.backoff_delay(5, P, 0.5) == 8
    assert engine.backoff_delay(5, P, 0.5, time_left=10) == 5  # half of what is left
    assert engine.backoff_delay(5, P, 0.5, time_left=0) == 8  # none left: not bounded by it
    # near the token's death, retries still no closer than min_refresh_interval (2 s)
    assert engine.backoff_delay(5, P, 0.5, time_left=0.1) == P.min_refresh_interval
    assert engine.backoff_delay(5, P, 0.5, time_left=3.0) == P.min_refresh_interval
    assert engine.backoff_delay(1, P, 0.5, time_left=3.0) == 0.5  # jitter below it stays
    # a second left is still a usable token: backoff_cap (300 s), not the 30 s of none
    assert engine.backoff_delay(10, P, 0.05, time_left=0.5) == 2.0


def test_the_shortest_lifetime_refreshed_ahead_is_the_one_whose_lead_is_the_floor() -> None:
    """16/3 s: refreshing ahead would come exactly min_refresh_interval (2 s) after the
    mint, which is allowed; anything shorter is replaced on demand."""
    assert engine.plan_refresh(Token("t", "Bearer", 0, 16 / 3), P, 0.0) == 2.0
    assert engine.plan_refresh(Token("t", "Bearer", 0, 5.3), P, 0.0) is None


def test_failures_count_up_one_at_a_time_and_success_starts_again() -> None:
    rt = Runtime()
    rt.on_success(tok(3600, obtained=0), P, 0.5, 0)
    delays = [rt.on_transient_failure(f"HTTP 50{i}", P, 0.5, 100, None) for i in range(3)]
    assert delays == [0.5, 1.0, 2.0] and rt.failures == 3
    assert rt.last_error == "HTTP 502" and rt.retry_at == 102.0
    t2 = tok(3600, obtained=110)
    rt.on_success(t2, P, 0.5, 111)
    assert (rt.failures, rt.retry_at, rt.last_error, rt.last_refresh_at) == (0, None, None, 111)
    assert rt.token is t2 and rt.refresh_at == engine.refresh_at(t2, P, 0.5)
    assert rt.on_transient_failure("HTTP 503", P, 0.5, 200, None) == 0.5  # the first again


def test_a_failure_near_the_end_retries_before_the_token_dies_unless_told_to_wait() -> None:
    rt = Runtime()
    rt.on_success(tok(3600, obtained=0), P, 0.999, 0)
    rt.failures = 4  # the fifth failure: up to 16 s
    assert rt.on_transient_failure("HTTP 500", P, 0.999, 3560, None) == 5  # half of 10 s left
    assert rt.retry_at == 3565
    assert rt.on_transient_failure("HTTP 429", P, 0.999, 3560, 120) == 120
    assert rt.retry_at == 3680 and rt.last_error == "HTTP 429"


def test_without_a_token_no_time_left_bounds_the_backoff() -> None:
    rt = Runtime()
    rt.failures = 4
    assert rt.on_transient_failure("reset", P, 0.5, 0, None) == 8


def test_new_credentials_forget_failures_backoff_and_rejection() -> None:
    rt = Runtime()
    rt.on_success(tok(3600, obtained=0), P, 0.5, 0)
    rt.on_transient_failure("HTTP 503", P, 0.5, 10, None)
    rt.on_transient_failure("HTTP 503", P, 0.5, 11, None)
    rt.on_rejected("HTTP 401")
    assert (rt.reauth, rt.retry_at, rt.last_error) == (True, None, "HTTP 401")
    rt.on_new_credentials()
    assert (rt.failures, rt.retry_at, rt.reauth) == (0, None, False)
    assert rt.on_transient_failure("HTTP 503", P, 0.5, 12, None) == 0.5


def test_decide_honours_min_ttl_and_the_exact_end_of_a_backoff() -> None:
    rt = Runtime()
    rt.on_success(tok(3600, obtained=0), P, 0.0, 0)
    assert engine.decide(rt, 10, P, min_ttl=3591) is Action.FAIL_UNSATISFIABLE  # > 3600 - 30
    assert engine.decide(rt, 40, P, min_ttl=3561) is Action.WAIT_FOR_REFRESH
    assert engine.decide(rt, 10, P, min_ttl=3590) is Action.SERVE
    rt.retry_at = 2800.0
    assert engine.decide(rt, 2799.9, P) is Action.SERVE  # due, but in backoff
    assert engine.decide(rt, 2800.0, P) is Action.SERVE_AND_REFRESH  # the window is over
    rt.retry_at = 3600.0
    assert engine.decide(rt, 3599.9, P) is Action.FAIL_UNAVAILABLE
    assert engine.decide(rt, 3600.0, P) is Action.WAIT_FOR_REFRESH


# ---- two clocks: wall (epoch seconds) and boot (counts suspend, never steps) ----------------


def booted(lifetime: float, obtained: float = 1_000_000.0, boot: float = 500.0) -> Token:
    return Token("t", "Bearer", obtained, obtained + lifetime, boot)


def test_a_wall_clock_set_back_does_not_stretch_a_token() -> None:
    t = booted(3600)
    # 3000 s later by the boot clock, but the wall clock was set back 600 s meanwhile
    now, boot = t.obtained_at + 3000 - 600, 500.0 + 3000
    assert engine.expires_in(t, now, boot) == 600
    assert engine.servable(t, now, P, boot=boot)
    assert not engine.servable(t, now, P, min_ttl=601, boot=boot)
    # by the wall clock alone it would have 1200 s left, and be served at 3580 s of life
    assert engine.servable(t, t.obtained_at + 3580 - 600, P)
    assert not engine.servable(t, t.obtained_at + 3580 - 600, P, boot=500.0 + 3580)


def test_a_suspend_the_wall_clock_has_not_caught_up_with_ends_a_token() -> None:
    t = booted(3600)
    # the machine slept 2 hours; the wall clock is still behind, the boot clock is not
    assert not engine.servable(t, t.obtained_at + 60, P, boot=500.0 + 7200)
    rt = Runtime(token=t, refresh_at=engine.refresh_at(t, P, 0.5))
    assert engine.decide(rt, t.obtained_at + 60, P, boot=500.0 + 7200) is Action.WAIT_FOR_REFRESH
    assert engine.state(rt, t.obtained_at + 60, P, boot=500.0 + 7200) is State.EXPIRED


def test_a_wall_clock_set_forward_ends_a_token_too() -> None:
    t = booted(3600)
    assert not engine.servable(t, t.obtained_at + 7200, P, boot=500.0 + 60)


def test_a_wall_clock_earlier_than_obtained_at_makes_the_token_due_at_once() -> None:
    t = booted(3600)
    rt = Runtime(token=t, refresh_at=engine.refresh_at(t, P, 0.5))
    assert engine.decide(rt, t.obtained_at + 10, P, boot=510.0) is Action.SERVE
    now = t.obtained_at - 300  # set back five minutes, ten seconds after the mint
    assert engine.decide(rt, now, P, boot=510.0) is Action.SERVE_AND_REFRESH
    assert engine.due(t, rt.refresh_at, now, 510.0)


def test_the_boot_clock_makes_a_refresh_due_when_the_wall_clock_lags() -> None:
    t = booted(3600)
    at = engine.refresh_at(t, P, 0.0)  # 2700 s after the mint
    assert not engine.due(t, at, t.obtained_at + 100, 500.0 + 100)
    assert engine.due(t, at, t.obtained_at + 100, 500.0 + 2700)


def test_a_min_ttl_no_token_could_meet_is_refused_without_a_login() -> None:
    rt = Runtime()
    rt.on_success(tok(3600, obtained=0), P, 0.0, 0)
    assert engine.decide(rt, 10, P, min_ttl=3570) is Action.SERVE
    assert engine.decide(rt, 100, P, min_ttl=3570) is Action.WAIT_FOR_REFRESH
    assert engine.decide(rt, 100, P, min_ttl=3571) is Action.FAIL_UNSATISFIABLE
    assert engine.decide(rt, 100, P, min_ttl=3700) is Action.FAIL_UNSATISFIABLE
    assert engine.decide(Runtime(), 10, P, min_ttl=3700) is Action.WAIT_FOR_REFRESH  # none yet


def test_an_explicit_refresh_lifts_reauth_but_not_a_backoff() -> None:
    rt = Runtime()
    rt.on_success(tok(3600, obtained=0), P, 0.0, 0)
    rt.on_transient_failure("HTTP 429", P, 0.5, 100, retry_after=60)
    rt.on_explicit_refresh()
    assert rt.in_backoff(150) and not rt.in_backoff(160)
    rt.on_rejected("HTTP 401")
    rt.on_explicit_refresh()
    assert not rt.reauth


def test_without_min_ttl_a_token_is_served_to_its_last_instant_when_the_skew_is_zero() -> None:
    """``[daemon] skew = 0`` is allowed: then nothing but expires_at itself bounds serving."""
    p0 = Policy(skew=0)
    t = tok(3600)
    assert engine.servable(t, t.expires_at - 0.5, p0)
    assert not engine.servable(t, t.expires_at, p0)
    rt = Runtime()
    rt.on_success(t, p0, 0.0, t.obtained_at)
    rt.refreshing = True  # a refresh is under way: serve what there is
    assert engine.decide(rt, t.expires_at - 0.5, p0) is Action.SERVE


def test_the_boot_clock_counts_from_the_mint_not_from_zero() -> None:
    t = booted(3600)  # minted at boot 500 s
    at = engine.refresh_at(t, P, 0.0)  # 2700 s after the mint
    assert not engine.due(t, at, t.obtained_at + 100, 500.0 + 2300)  # 2300 s after: not yet


def test_a_failure_backs_off_less_than_the_time_either_clock_leaves() -> None:
    rt = Runtime()
    t = booted(3600)
    rt.on_success(t, P, 0.999, t.obtained_at)
    rt.failures = 4  # the fifth failure: up to 16 s
    # the boot clock leaves 10 s of serving (a suspend), the wall clock 3470 s: half of 10
    now, boot = t.obtained_at + 100, 500.0 + 3560
    assert rt.on_transient_failure("HTTP 500", P, 0.999, now, None, boot) == 5
    rt.failures = 4
    # the wall clock leaves 10 s (set forward), the boot clock 3470 s: half of 10 again
    now, boot = t.obtained_at + 3560, 500.0 + 100
    assert rt.on_transient_failure("HTTP 500", P, 0.999, now, None, boot) == 5


def test_due_needs_a_plan_a_token_and_a_clock_past_the_mint() -> None:
    t = booted(3600)
    assert not engine.due(t, None, t.obtained_at + 9999, 500.0 + 9999)  # nothing planned
    assert not engine.due(None, t.obtained_at + 100, t.obtained_at + 50)  # no token yet
    at = engine.refresh_at(t, P, 0.0)
    assert not engine.due(t, at, t.obtained_at, 500.0)  # at the mint itself: not set back


def test_decide_refreshes_behind_when_the_boot_clock_says_it_is_due() -> None:
    t = booted(3600)
    rt = Runtime(token=t, refresh_at=engine.refresh_at(t, P, 0.0))  # 2700 s after the mint
    # the wall clock lags (2800 s have passed by the boot clock, 100 s by the wall clock)
    assert engine.decide(rt, t.obtained_at + 100, P, boot=500.0 + 2800) is (
        Action.SERVE_AND_REFRESH
    )


def test_with_no_time_left_the_backoff_is_the_short_one_for_callers_waiting() -> None:
    # no usable token: at most unusable_backoff_cap (30 s), and no bound from time left
    assert engine.backoff_delay(10, P, 0.5, time_left=0) == 15
    assert engine.backoff_delay(10, P, 0.5) == 15
    assert engine.backoff_delay(10, P, 0.5, time_left=100) == 50
