"""Token states and the refresh schedule: pure decisions, no I/O.

Every function takes ``now`` (wall-clock epoch seconds), where it matters ``boot`` (seconds
on a clock that counts suspend and never steps: Linux ``CLOCK_BOOTTIME``, see :mod:`clocks`)
and, where chance plays a part, a number drawn from ``[0, 1)``, so tests jump either clock and
pin the jitter instead of sleeping.

Two clocks: a token records both readings when it is minted, and is served only while both
say it is usable. A wall clock set forward ends it early (harmless); a wall clock set back, or
a suspend the wall clock has not caught up with, is caught by the boot clock. A wall clock
earlier than the token's ``obtained_at`` makes it due for a refresh at once, so the next
token is minted on the clock as it now reads. ``boot=None`` judges on the wall clock alone.

A token's life, for the documented 3600 s lifetime and the default 30 s skew::

    obtained            refresh_at (~2700 s, minus jitter)    usable_until    expires_at
       |---------- FRESH ----------|--------- STALE ------------|---- dead ----|
                                     refresh in the background,  callers wait
                                     keep serving                for a new one

``usable_until = expires_at - skew``: a token is never served at or past it. The refresh point
is clamped so that even short lifetimes leave a lead before ``usable_until``, and the skew is
clamped to half the lifetime so a token shorter than the skew is still usable.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class State(enum.StrEnum):
    VALID = "valid"
    REFRESHING = "refreshing"
    EXPIRED = "expired"
    REAUTH_REQUIRED = "reauth_required"
    LOCKED = "locked"
    NO_TOKEN = "no_token"  # noqa: S105 - a state name, not a secret


class Action(enum.Enum):
    SERVE = "serve"
    SERVE_AND_REFRESH = "serve_and_refresh"  # advisory window: answer now, refresh behind
    WAIT_FOR_REFRESH = "wait_for_refresh"  # mandatory: no usable token, the caller waits
    FAIL_REAUTH = "fail_reauth"
    FAIL_UNAVAILABLE = "fail_unavailable"  # in backoff with no usable token
    FAIL_UNSATISFIABLE = "fail_unsatisfiable"  # min_ttl beyond any token Coactive issues


@dataclass(frozen=True)
class Policy:
    skew: float = 30.0
    refresh_fraction: float = 0.25  # refresh when this share of the lifetime is left
    jitter_fraction: float = 0.05  # refresh up to this share of the lifetime earlier, at random
    max_lead: float = 60.0  # at most this much lead before usable_until is ever required
    backoff_base: float = 1.0
    backoff_cap: float = 300.0
    unusable_backoff_cap: float = 30.0  # while no usable token exists (Retry-After may say later)
    backoff_floor: float = 0.1
    min_refresh_interval: float = 2.0  # background logins at most this often, however short-lived
    wallclock_check: float = (
        30.0  # timers never sleep longer than this without re-reading the clock
    )


@dataclass(frozen=True)
class Token:
    """An access token; ``obtained_at``/``expires_at`` are wall-clock epoch seconds,
    ``obtained_boot`` the boot clock's reading (seconds) when it was minted, if known."""

    access_token: str
    token_type: str
    obtained_at: float
    expires_at: float
    obtained_boot: float | None = None

    @property
    def lifetime(self) -> float:
        return max(0.0, self.expires_at - self.obtained_at)


def expires_in(token: Token, now: float, boot: float | None = None) -> float:
    """Seconds of validity left: the smaller of the wall clock's and the boot clock's count."""
    left = token.expires_at - now
    if boot is not None and token.obtained_boot is not None:
        left = min(left, token.lifetime - (boot - token.obtained_boot))
    return left


def skew_for(token: Token, policy: Policy) -> float:
    """The skew applied to ``token``: the configured one, but never more than half its life."""
    return min(policy.skew, token.lifetime / 2)


def usable_until(token: Token, policy: Policy) -> float:
    return token.expires_at - skew_for(token, policy)


def servable(
    token: Token, now: float, policy: Policy, min_ttl: float = 0, boot: float | None = None
) -> bool:
    """May ``token`` be handed to a caller who needs ``min_ttl`` seconds of validity at ``now``
    (and ``boot``)? Only while both clocks say it is short of ``expires_at - skew``."""
    left = expires_in(token, now, boot)
    return left > skew_for(token, policy) and left >= min_ttl


def serve_until(token: Token, policy: Policy, now: float, boot: float | None = None) -> float:
    """The wall-clock moment (epoch seconds) the token stops being served, by both clocks."""
    return now + min(
        usable_until(token, policy) - now, expires_in(token, now, boot) - skew_for(token, policy)
    )


def unsatisfiable(token: Token | None, policy: Policy, min_ttl: float) -> bool:
    """Whether no token like the last one Coactive issued could give ``min_ttl`` seconds:
    more than its lifetime minus the skew. Such a request is refused without a login."""
    return token is not None and min_ttl > token.lifetime - skew_for(token, policy)


def refresh_at(token: Token, policy: Policy, rand: float) -> float:
    """When to start refreshing ``token`` in the background (wall-clock epoch seconds).

    Nominally when ``refresh_fraction`` of its lifetime is left, but with a lead of a quarter
    of the usable window (at most ``max_lead``) before ``usable_until`` so a short-lived token
    is replaced before anyone has to wait; then up to ``jitter_fraction`` of the lifetime
    earlier, at random, for every lifetime, so profiles and daemons do not refresh in step.
    Never sooner than ``min_refresh_interval`` after it was obtained: a token that lives a
    second does not make a login a second while nobody asks (a caller then waits for one).
    """
    life = token.lifetime
    until = usable_until(token, policy)
    lead = min(policy.max_lead, (until - token.obtained_at) * 0.25)
    base = min(token.expires_at - life * policy.refresh_fraction, until - lead)
    at = base - rand * life * policy.jitter_fraction
    return max(token.obtained_at + policy.min_refresh_interval, at)


def plan_refresh(token: Token, policy: Policy, rand: float) -> float | None:
    """:func:`refresh_at`, or None for a token so short-lived that refreshing it ahead would
    mean a login more often than every ``min_refresh_interval`` with nobody asking: such a
    token is replaced when a caller needs one (one login however many wait)."""
    until = usable_until(token, policy)
    lead = min(policy.max_lead, (until - token.obtained_at) * 0.25)
    natural = min(token.expires_at - token.lifetime * policy.refresh_fraction, until - lead)
    if natural - token.obtained_at < policy.min_refresh_interval:
        return None
    return refresh_at(token, policy, rand)


def due(token: Token | None, at: float | None, now: float, boot: float | None = None) -> bool:
    """Is a refresh planned for ``at`` due? By the wall clock, by the boot clock (the same
    span after the token was minted), or because the wall clock now reads earlier than the
    moment the token was obtained (set back: mint a token on the clock as it now reads)."""
    if at is None:
        return False
    if now >= at:
        return True
    if token is None:
        return False
    if now < token.obtained_at:
        return True
    return (
        boot is not None
        and token.obtained_boot is not None
        and boot - token.obtained_boot >= at - token.obtained_at
    )


def backoff_delay(
    failures: int,
    policy: Policy,
    rand: float,
    *,
    retry_after: float | None = None,
    time_left: float | None = None,
) -> float:
    """Seconds to wait before the next attempt after ``failures`` transient failures in a row.

    Capped exponential backoff with full jitter: capped at ``backoff_cap`` while a token is
    still usable (and then bounded by half the ``time_left`` on it so the next try comes
    before it dies, but not below ``min_refresh_interval``), at ``unusable_backoff_cap``
    when none is (callers are failing: try again soon after Coactive recovers). A
    ``Retry-After`` from Coactive is honoured even past that: hammering a server that asked
    for quiet does not make it answer sooner.
    """
    usable = time_left is not None and time_left > 0
    cap = policy.backoff_cap if usable else min(policy.backoff_cap, policy.unusable_backoff_cap)
    ceiling = min(cap, policy.backoff_base * 2.0 ** max(0, failures - 1))
    delay = max(policy.backoff_floor, ceiling * rand)
    if time_left is not None and time_left > 0:
        # before the token dies, but never closer than min_refresh_interval: halving what is
        # left made five logins in 1.5 s against a Coactive answering 503
        delay = min(delay, max(policy.min_refresh_interval, time_left / 2))
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay


@dataclass
class Runtime:
    """What the daemon knows about one profile's token; mutated only by the server."""

    token: Token | None = None
    refresh_at: float | None = None
    failures: int = 0
    retry_at: float | None = None  # no upstream attempt before this (backoff), wall clock
    retry_boot: float | None = None  # the same moment on the boot clock, which governs
    reauth: bool = False  # Coactive rejected the credentials; no retries until new ones
    refreshing: bool = False
    last_refresh_at: float | None = None
    last_error: str | None = None

    def next_due(self, now: float | None = None, boot: float | None = None) -> float | None:
        """The next moment (wall-clock epoch seconds) the scheduler must look at this
        profile, or None. Given the clocks' readings, a backoff window's end is reckoned on
        the boot clock (:meth:`retry_in`) and given as the wall clock now reads."""
        if self.reauth or self.refreshing:
            return None
        if self.retry_at is not None:
            if now is None:
                return self.retry_at
            left = self.retry_in(now, boot)
            assert left is not None
            return now + left
        return self.refresh_at

    def on_success(self, token: Token, policy: Policy, rand: float, now: float) -> None:
        self.token = token
        self.refresh_at = plan_refresh(token, policy, rand)
        self.failures = 0
        self.retry_at = self.retry_boot = None
        self.reauth = False
        self.last_refresh_at = now
        self.last_error = None

    def retry_in(self, now: float, boot: float | None = None) -> float | None:
        """Seconds left of the backoff or ``Retry-After`` window (≤ 0: over), None without
        one. Measured on the boot clock when both readings are known: a wall clock set back
        must not stretch the window, nor one set forward cut it short."""
        if self.retry_at is None:
            return None
        if boot is not None and self.retry_boot is not None:
            return self.retry_boot - boot
        return self.retry_at - now

    def in_backoff(self, now: float, boot: float | None = None) -> bool:
        """No login before the window ends, whoever asks (RFC 9110 §10.2.3 Retry-After)."""
        left = self.retry_in(now, boot)
        return left is not None and left > 0

    def on_transient_failure(
        self,
        detail: str,
        policy: Policy,
        rand: float,
        now: float,
        retry_after: float | None,
        boot: float | None = None,
    ) -> float:
        """Record a retryable failure; returns the backoff delay chosen."""
        self.failures += 1
        time_left = None
        if self.token is not None and servable(self.token, now, policy, boot=boot):
            time_left = min(
                usable_until(self.token, policy) - now,
                expires_in(self.token, now, boot) - skew_for(self.token, policy),
            )
        delay = backoff_delay(
            self.failures, policy, rand, retry_after=retry_after, time_left=time_left
        )
        self.retry_at = now + delay
        self.retry_boot = boot + delay if boot is not None else None
        self.last_error = detail
        return delay

    def on_rejected(self, detail: str) -> None:
        self.reauth = True
        self.retry_at = self.retry_boot = None
        self.last_error = detail

    def on_new_credentials(self) -> None:
        """New credentials (login): forget backoff and rejection."""
        self.failures = 0
        self.retry_at = self.retry_boot = None
        self.reauth = False

    def on_explicit_refresh(self) -> None:
        """A user's own ``coactive-credd refresh``: try the stored credentials again even if
        Coactive rejected them, but not inside a backoff or Retry-After window."""
        self.reauth = False


def state(
    rt: Runtime, now: float, policy: Policy, *, locked: bool = False, boot: float | None = None
) -> State:
    if locked:
        return State.LOCKED
    if rt.reauth:
        return State.REAUTH_REQUIRED
    if rt.refreshing:
        return State.REFRESHING
    if rt.token is None:
        return State.NO_TOKEN
    if servable(rt.token, now, policy, boot=boot):
        return State.VALID
    return State.EXPIRED


def decide(
    rt: Runtime, now: float, policy: Policy, min_ttl: float = 0, boot: float | None = None
) -> Action:
    """What to do with a caller asking for this profile's token at ``now`` (and ``boot``)."""
    tok = rt.token
    if tok is not None and servable(tok, now, policy, min_ttl, boot):
        if (
            due(tok, rt.refresh_at, now, boot)
            and not rt.reauth
            and not rt.refreshing
            and not rt.in_backoff(now, boot)
        ):
            return Action.SERVE_AND_REFRESH
        return Action.SERVE
    if rt.reauth:
        return Action.FAIL_REAUTH
    if unsatisfiable(tok, policy, min_ttl):
        return Action.FAIL_UNSATISFIABLE
    if rt.refreshing:
        return Action.WAIT_FOR_REFRESH
    if rt.in_backoff(now, boot):
        return Action.FAIL_UNAVAILABLE
    return Action.WAIT_FOR_REFRESH
