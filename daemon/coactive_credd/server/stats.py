"""The daemon's counters: plain integers, bumped where things happen, read at scrape time.

Nothing here imports prometheus-client: :mod:`metrics` turns these numbers into the
Prometheus exposition only when ``GET /metrics`` is asked, so start-up and the token hot
path pay one integer increment and nothing else. Counters only ever grow (Prometheus
``_total`` semantics); a restart starts them at zero.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["LOGIN_BUCKETS", "Stats", "failure_kind"]

T = TypeVar("T")

# Login latency buckets, seconds: a healthy login is tens of milliseconds, a struggling one
# seconds; the client's own timeout is 20 s.
LOGIN_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0)


def failure_kind(exc: BaseException) -> str:
    """A short, bounded label for why a login failed (the ``kind`` of
    ``coactive_credd_refresh_failures_total``): ``rejected``, ``rate_limited``,
    ``server_error``, ``malformed``, ``unexpected_status``, ``proxy``, ``tls``, ``timeout``,
    ``network`` or ``internal``."""
    from coactive_credd.upstream import exchange as upstream

    if isinstance(exc, upstream.CredentialsRejected):
        return "rejected"
    if not isinstance(exc, upstream.UpstreamError):
        return "internal"
    status = getattr(exc, "status", None)
    if status == 429:
        return "rate_limited"
    if status == 408 or (status is not None and 500 <= status <= 599):
        return "server_error"
    if status == 200:
        return "malformed"
    if status is not None:
        return "unexpected_status"
    import aiohttp

    cause = exc.__cause__
    if isinstance(cause, aiohttp.ClientProxyConnectionError | aiohttp.ClientHttpProxyError):
        return "proxy"
    if isinstance(cause, aiohttp.ClientSSLError | aiohttp.ClientConnectorCertificateError):
        return "tls"
    if isinstance(cause, TimeoutError | aiohttp.ServerTimeoutError):
        return "timeout"
    if cause is None:
        return "config"  # refused before any connection: a bad proxy variable or ca_bundle
    return "network"


class Stats:
    """Counters of one daemon process. Attributes are read by :mod:`metrics`."""

    def __init__(self) -> None:
        # (profile, outcome): outcome is "success", "rejected", "unavailable" or "internal".
        self.logins: Counter[tuple[str, str]] = Counter()
        self.login_buckets = [0] * len(LOGIN_BUCKETS)  # non-cumulative; +Inf is login_count
        self.login_count = 0
        self.login_seconds = 0.0
        # (profile, kind) from failure_kind.
        self.refresh_failures: Counter[tuple[str, str]] = Counter()
        # error code of the socket protocol ("forbidden", "bad_request", ...) -> count.
        self.refused: Counter[str] = Counter()
        self.connections = 0
        # Set by the server: how many connections are open right now.
        self.open_connections: Callable[[], int] = lambda: 0

    def observe_login(self, profile: str, seconds: float, exc: BaseException | None) -> None:
        """Count one login exchange that took ``seconds`` and failed with ``exc`` (None: ok)."""
        if exc is None:
            outcome = "success"
        else:
            kind = failure_kind(exc)
            outcome = {"rejected": "rejected", "internal": "internal"}.get(kind, "unavailable")
            self.refresh_failures[(profile, kind)] += 1
        self.logins[(profile, outcome)] += 1
        self.login_count += 1
        self.login_seconds += seconds
        for i, bound in enumerate(LOGIN_BUCKETS):
            if seconds <= bound:
                self.login_buckets[i] += 1
                break

    async def timed_login(self, profile: str, login: Awaitable[T]) -> T:
        """Await ``login``, counting its outcome and latency; re-raises what it raises."""
        started = time.monotonic()
        try:
            result = await login
        except Exception as exc:
            self.observe_login(profile, time.monotonic() - started, exc)
            raise
        self.observe_login(profile, time.monotonic() - started, None)
        return result
