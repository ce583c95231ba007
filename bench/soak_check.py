"""The soak's verdict: every recorded answer, and every login the fake saw, against its ledger.

Pure functions over plain records, so the rules can be read (and tested) apart from the
processes that produced them. Times are epoch seconds of the soak's own clock (the harness
is never stepped; only the daemon's wall clock is), taken before a request is sent
(``t_send``) and after its answer arrived (``t_recv``).

The rules, from docs/SPEC's Guarantees:

* **served past deadline**: a token handed out when, by the fake's ledger, it was already past
  ``issued_at + expires_in - skew`` (skew: 30 s, at most half the lifetime). Judged at
  ``t_send``, the earliest the daemon could have answered, so a slow answer is never blamed.
  A token the ledger does not know, or another profile's, counts too.
* **failed while servable**: a caller that got no token while, by the ledger, a token for
  its profile had been issued (``MARGIN`` s before ``t_send``) and would stay servable
  until ``MARGIN`` s after ``t_recv``, its deadline counted from when its login request
  reached the fake (the daemon counts from when it sent it, so it may stop a little
  earlier than the issue time would say: a slow Coactive must not be blamed on it) — outside the windows where failing is right (the
  profile was logged out, its credentials revoked) or the daemon was stopped.
* **politeness**: one login per refresh (no two granted logins of one credential within
  ``DUPLICATE_WITHIN``); no login from a credential inside a ``Retry-After`` it was given; none
  after Coactive rejected it (401) until new credentials; with no usable token, never more
  than 30 s (or the ``Retry-After``) between attempts.
* **flat**: the daemon's RSS and open descriptors at the end within a bound of the same
  figures after warm-up.
"""

from __future__ import annotations

import bisect
import itertools
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

MARGIN = 1.0  # seconds: a login's answer reaching the daemon; a caller's answer reaching it
POLITE_TOLERANCE = 0.25  # seconds of scheduling slack allowed on Retry-After and gaps
STEP_GRACE = 5.0  # seconds after a wall-clock step in which a second login is expected
DUPLICATE_WITHIN = 1.0  # seconds: two granted logins of one credential closer are one too many
MAX_GAP = 30.0  # SPEC: with no usable token the next try is never more than 30 s away
RSS_SLACK = (1.25, 8 * 1024)  # final RSS <= baseline * 1.25 + 8 MiB (KiB)
FD_SLACK = 8


@dataclass
class Answer:
    kind: str  # raw, python, sh, node, go, git
    profile: str
    t_send: float
    t_recv: float
    token: str | None  # None: the caller got no token
    error: str | None = None


@dataclass
class Window:
    """An interval where failures of ``profile`` (None: every profile) are expected."""

    start: float
    end: float
    profile: str | None
    why: str


@dataclass
class Verdict:
    answers: int = 0
    tokens_served: int = 0
    failures_total: int = 0
    failures_excused: int = 0
    served_past_deadline: list[str] = field(default_factory=list)
    unknown_tokens: list[str] = field(default_factory=list)
    failed_while_servable: list[str] = field(default_factory=list)
    impolite: list[str] = field(default_factory=list)
    growth: list[str] = field(default_factory=list)
    when: dict[str, list[float]] = field(default_factory=dict)  # rule -> t_send of each breach

    @property
    def ok(self) -> bool:
        return not (
            self.served_past_deadline
            or self.unknown_tokens
            or self.failed_while_servable
            or self.impolite
            or self.growth
        )

    def summary(self) -> dict[str, Any]:
        def head(xs: list[str]) -> dict[str, Any]:
            return {"count": len(xs), "first": xs[:5]}

        return {
            "ok": self.ok,
            "answers": self.answers,
            "tokens_served": self.tokens_served,
            "failures_total": self.failures_total,
            "failures_excused": self.failures_excused,
            "served_past_deadline": head(self.served_past_deadline),
            "unknown_or_foreign_tokens": head(self.unknown_tokens),
            "failed_while_servable": head(self.failed_while_servable),
            "impolite_logins": head(self.impolite),
            "growth": self.growth,
        }


def skew_for(lifetime: float, skew: float = 30.0) -> float:
    return min(skew, lifetime / 2)


def deadline(issued_at: float, expires_in: float) -> float:
    return issued_at + expires_in - skew_for(expires_in)


def check_answers(
    answers: list[Answer],
    ledger: list[Any],
    credentials: dict[str, set[str]],
    windows: list[Window],
    verdict: Verdict,
) -> None:
    """``ledger``: the fake's :class:`Issued` entries; ``credentials``: profile -> the
    credential ids it has held (a re-login adds one)."""
    by_token = {i.access_token: i for i in ledger}
    # When the daemon itself stops serving a token: its lifetime counts from when it sent
    # the login (it cannot know better), which is before the request reached the fake.
    per_cred: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for i in ledger:
        asked = getattr(i, "requested_at", 0.0) or i.issued_at
        per_cred[i.credential].append((i.issued_at, deadline(asked, i.expires_in)))
    for spans in per_cred.values():
        spans.sort()
    for a in answers:
        verdict.answers += 1
        if a.token is not None:
            verdict.tokens_served += 1
            issued = by_token.get(a.token)
            if issued is None or issued.credential not in credentials.get(a.profile, set()):
                verdict.unknown_tokens.append(f"{a.kind} {a.profile} at {a.t_send:.2f}")
                continue
            late = a.t_send - deadline(issued.issued_at, issued.expires_in)
            if late >= 0:
                verdict.when.setdefault("served_past_deadline", []).append(a.t_send)
                verdict.served_past_deadline.append(
                    f"{a.kind} {a.profile}: asked {late:.2f} s after the token's deadline "
                    f"(issued {a.t_send - issued.issued_at:.1f} s before, lifetime "
                    f"{issued.expires_in} s) at {a.t_send:.2f}"
                )
            continue
        verdict.failures_total += 1
        if _excused(a, windows):
            verdict.failures_excused += 1
            continue
        if _servable_existed(a, credentials.get(a.profile, set()), per_cred):
            verdict.when.setdefault("failed_while_servable", []).append(a.t_send)
            verdict.failed_while_servable.append(
                f"{a.kind} {a.profile} at {a.t_send:.2f} ({a.t_recv - a.t_send:.2f} s): {a.error}"
            )


def _excused(a: Answer, windows: list[Window]) -> bool:
    return any(
        w.start <= a.t_recv and a.t_send <= w.end and w.profile in (None, a.profile)
        for w in windows
    )


def _servable_existed(
    a: Answer, creds: set[str], per_cred: dict[str, list[tuple[float, float]]]
) -> bool:
    for cred in creds:
        spans = per_cred.get(cred, [])
        i = bisect.bisect_right(spans, (a.t_send - MARGIN, float("inf")))
        # spans[:i] were issued at least MARGIN before the request; the latest lives longest
        if any(dl > a.t_recv + MARGIN for _, dl in spans[max(0, i - 3) : i]):
            return True
    return False


def check_politeness(
    requests: list[Any],
    ledger: list[Any],
    rejected_until: dict[str, float],
    verdict: Verdict,
    clock_steps: list[float] | None = None,
) -> dict[str, int]:
    """``requests``: the fake's RecordedRequest list (login path only is used);
    ``rejected_until``: credential -> when new credentials replaced it (its 401 is final);
    ``clock_steps``: when the daemon's wall clock was stepped (a token minted in flight across
    a step forward is dead on arrival by the new wall clock: one more login is right)."""
    steps = sorted(clock_steps or [])
    per_cred: dict[str, list[Any]] = defaultdict(list)
    for r in requests:
        if r.credential is not None and r.path == "/api/v0/login":
            per_cred[r.credential].append(r)
    spans: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for i in ledger:
        spans[i.credential].append((i.issued_at, deadline(i.issued_at, i.expires_in)))
    figures = {
        "retry_after_windows": 0,
        "rejections": 0,
        "outage_gaps_checked": 0,
        "duplicate_logins": 0,
        "second_logins_across_a_clock_step": 0,
    }
    for cred, reqs in per_cred.items():
        reqs.sort(key=lambda r: r.at)
        granted = [r.at for r in reqs if r.status == 200 and r.fault is None]
        for a, b in itertools.pairwise(granted):
            if b - a >= DUPLICATE_WITHIN:
                continue
            i = bisect.bisect_right(steps, b)
            if i and b - steps[i - 1] < STEP_GRACE:
                figures["second_logins_across_a_clock_step"] += 1
                continue
            figures["duplicate_logins"] += 1  # one refresh, one login: callers not coalesced
            verdict.impolite.append(f"two logins {b - a:.2f} s apart for one credential")
            verdict.when.setdefault("duplicate_login", []).append(b)
        for prev, nxt in itertools.pairwise(reqs):
            retry_after = _retry_after(prev)
            if retry_after is not None:
                figures["retry_after_windows"] += 1
                if nxt.at < prev.at + retry_after - POLITE_TOLERANCE:
                    verdict.when.setdefault("inside_retry_after", []).append(nxt.at)
                    verdict.impolite.append(
                        f"login {nxt.at - prev.at:.2f} s after a Retry-After of {retry_after:g} s"
                    )
            if prev.status is None or prev.status >= 400:
                usable = any(s <= prev.at < dl for s, dl in spans.get(cred, []))
                if not usable and prev.status != 401:
                    figures["outage_gaps_checked"] += 1
                    limit = max(MAX_GAP, retry_after or 0) + POLITE_TOLERANCE + MARGIN
                    if nxt.at - prev.at > limit:
                        verdict.when.setdefault("gap_over_30s", []).append(nxt.at)
                        verdict.impolite.append(
                            f"{nxt.at - prev.at:.1f} s between two logins with no usable token"
                        )
        first_401 = next((r for r in reqs if r.status == 401), None)
        if first_401 is not None:
            figures["rejections"] += 1
            until = rejected_until.get(cred, float("inf"))
            later = [r for r in reqs if first_401.at + MARGIN < r.at < until]
            if later:
                verdict.impolite.append(
                    f"{len(later)} login(s) with credentials Coactive had rejected (401)"
                )
    return figures


def _retry_after(r: Any) -> float | None:
    if r.status not in (429, 503):
        return None
    return None if r.retry_after is None else float(r.retry_after)


def check_flat(samples: list[tuple[float, int, int]], verdict: Verdict) -> dict[str, Any]:
    """``samples``: (time, rss KiB, open fds), the first being the warm baseline and the
    last taken after every hostile client let go."""
    if len(samples) < 2:
        return {}
    _, rss0, fd0 = samples[0]
    _, rss1, fd1 = samples[-1]
    peak_rss = max(s[1] for s in samples)
    peak_fd = max(s[2] for s in samples)
    if rss1 > rss0 * RSS_SLACK[0] + RSS_SLACK[1]:
        verdict.growth.append(f"RSS grew from {rss0} KiB to {rss1} KiB")
    if fd1 > fd0 + FD_SLACK:
        verdict.growth.append(f"open descriptors grew from {fd0} to {fd1}")
    return {
        "rss_kib_baseline": rss0,
        "rss_kib_end": rss1,
        "rss_kib_peak": peak_rss,
        "fds_baseline": fd0,
        "fds_end": fd1,
        "fds_peak": peak_fd,
        "samples": len(samples),
    }
