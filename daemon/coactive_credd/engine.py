"""Token states and the refresh schedule: pure decisions, no I/O.

Every function takes ``now`` (wall-clock epoch seconds) and, where chance plays a part, a
number drawn from ``[0, 1)``, so tests jump the clock and pin the jitter instead of sleeping.

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


@dataclass(frozen=True)
class Policy:
    skew: float = 30.0
    refresh_fraction: float = 0.25  # refresh when this share of the lifetime is left
    jitter_fraction: float = 0.05  # refresh up to this share of the lifetime earlier, at random
    max_lead: float = 60.0  # at most this much lead before usable_until is ever required
    backoff_base: float = 1.0
    backoff_cap: float = 300.0
    backoff_floor: float = 0.1
    wallclock_check: float = (
        30.0  # timers never sleep longer than this without re-reading the clock
    )


@dataclass(frozen=True)
class Token:
    access_token: str
    token_type: str
    obtained_at: float
    expires_at: float

    @property
    def lifetime(self) -> float:
        return max(0.0, self.expires_at - self.obtained_at)


def skew_for(token: Token, policy: Policy) -> float:
    """The skew applied to ``token``: the configured one, but never more than half its life."""
    return min(policy.skew, token.lifetime / 2)


def usable_until(token: Token, policy: Policy) -> float:
    return token.expires_at - skew_for(token, policy)


def servable(token: Token, now: float, policy: Policy, min_ttl: float = 0) -> bool:
    """May ``token`` be handed to a caller who needs ``min_ttl`` seconds of validity at ``now``?"""
    return now < usable_until(token, policy) and token.expires_at - now >= min_ttl


def refresh_at(token: Token, policy: Policy, rand: float) -> float:
    """When to start refreshing ``token`` in the background.

    Nominally when ``refresh_fraction`` of its lifetime is left, up to ``jitter_fraction`` of
    the lifetime earlier (so many daemons and profiles do not refresh in step), but always
    with a lead of a quarter of the usable window (at most ``max_lead``) before
    ``usable_until``, so a short-lived token is replaced before anyone has to wait.
    """
    life = token.lifetime
    nominal = (
        token.expires_at - life * policy.refresh_fraction - rand * life * policy.jitter_fraction
    )
    until = usable_until(token, policy)
    lead = min(policy.max_lead, (until - token.obtained_at) * 0.25)
    return max(token.obtained_at, min(nominal, until - lead))


def backoff_delay(
    failures: int,
    policy: Policy,
    rand: float,
    *,
    retry_after: float | None = None,
    time_left: float | None = None,
) -> float:
    """Seconds to wait before the next attempt after ``failures`` transient failures in a row.

    Capped exponential backoff with full jitter; while a token is still usable the wait is
    bounded by half the ``time_left`` on it so the next try comes before it dies. A
    ``Retry-After`` from Coactive is honoured even past that: hammering a server that asked
    for quiet does not make it answer sooner.
    """
    ceiling = min(policy.backoff_cap, policy.backoff_base * 2.0 ** max(0, failures - 1))
    delay = max(policy.backoff_floor, ceiling * rand)
    if time_left is not None and time_left > 0:
        delay = min(delay, max(policy.backoff_floor, time_left / 2))
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay


@dataclass
class Runtime:
    """What the daemon knows about one profile's token; mutated only by the server."""

    token: Token | None = None
    refresh_at: float | None = None
    failures: int = 0
    retry_at: float | None = None  # no upstream attempt before this (backoff)
    reauth: bool = False  # Coactive rejected the credentials; no retries until new ones
    refreshing: bool = False
    last_refresh_at: float | None = None
    last_error: str | None = None

    def next_due(self) -> float | None:
        """The next moment the scheduler must look at this profile, or None."""
        if self.reauth or self.refreshing:
            return None
        if self.retry_at is not None:
            return self.retry_at
        return self.refresh_at

    def on_success(self, token: Token, policy: Policy, rand: float, now: float) -> None:
        self.token = token
        self.refresh_at = refresh_at(token, policy, rand)
        self.failures = 0
        self.retry_at = None
        self.reauth = False
        self.last_refresh_at = now
        self.last_error = None

    def on_transient_failure(
        self, detail: str, policy: Policy, rand: float, now: float, retry_after: float | None
    ) -> float:
        """Record a retryable failure; returns the backoff delay chosen."""
        self.failures += 1
        time_left = usable_until(self.token, policy) - now if self.token else None
        delay = backoff_delay(
            self.failures, policy, rand, retry_after=retry_after, time_left=time_left
        )
        self.retry_at = now + delay
        self.last_error = detail
        return delay

    def on_rejected(self, detail: str) -> None:
        self.reauth = True
        self.retry_at = None
        self.last_error = detail

    def on_new_credentials(self) -> None:
        """New credentials (login) or an explicit refresh: forget backoff and rejection."""
        self.failures = 0
        self.retry_at = None
        self.reauth = False


def state(rt: Runtime, now: float, policy: Policy, *, locked: bool = False) -> State:
    if locked:
        return State.LOCKED
    if rt.reauth:
        return State.REAUTH_REQUIRED
    if rt.refreshing:
        return State.REFRESHING
    if rt.token is None:
        return State.NO_TOKEN
    if servable(rt.token, now, policy):
        return State.VALID
    return State.EXPIRED


def decide(rt: Runtime, now: float, policy: Policy, min_ttl: float = 0) -> Action:
    """What to do with a caller asking for this profile's token at ``now``."""
    if rt.token is not None and servable(rt.token, now, policy, min_ttl):
        in_backoff = rt.retry_at is not None and now < rt.retry_at
        due = rt.refresh_at is not None and now >= rt.refresh_at
        if due and not rt.reauth and not rt.refreshing and not in_backoff:
            return Action.SERVE_AND_REFRESH
        return Action.SERVE
    if rt.reauth:
        return Action.FAIL_REAUTH
    if rt.refreshing:
        return Action.WAIT_FOR_REFRESH
    if rt.retry_at is not None and now < rt.retry_at:
        return Action.FAIL_UNAVAILABLE
    return Action.WAIT_FOR_REFRESH
