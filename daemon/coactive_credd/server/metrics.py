"""``GET /metrics``: the daemon's numbers in the Prometheus text exposition format (0.0.4).

Built at scrape time by a custom collector from :class:`stats.Stats`, :class:`audit.Audit`
and each profile's state, with ``prometheus-client`` (a dependency, so every install answers),
imported on the first scrape only, never at start-up nor on the token path. An install that
lost it answers 503 saying to reinstall.

Names follow Prometheus' conventions: the ``coactive_credd_`` prefix, ``_total`` for
counters, base units (``_seconds``). Never a secret: profiles, uids and outcomes only.

=====================================================  =========  ==========================
metric                                                 type       labels
=====================================================  =========  ==========================
coactive_credd_tokens_served_total                     counter    profile, path (fast|slow)
coactive_credd_logins_total                            counter    profile, outcome
coactive_credd_login_duration_seconds                  histogram  (none)
coactive_credd_refresh_failures_total                  counter    profile, kind
coactive_credd_consecutive_failures                    gauge      profile
coactive_credd_backoff_seconds                         gauge      profile (0: none)
coactive_credd_token_serving_deadline_seconds          gauge      profile (no token: absent)
coactive_credd_profile_state                           gauge      profile, state (1 = current)
coactive_credd_personal_token_expiry_timestamp_seconds gauge      profile
coactive_credd_personal_token_seconds_left             gauge      profile
coactive_credd_connections_open                        gauge
coactive_credd_connections_total                       counter
coactive_credd_requests_refused_total                  counter    reason (the error code)
coactive_credd_vault_locked                            gauge
coactive_credd_build_info                              gauge      version
coactive_credd_proxy_requests_total                    counter    profile, method, status_class
coactive_credd_proxy_request_duration_seconds          histogram  profile
coactive_credd_proxy_replays_total                     counter    profile
coactive_credd_proxy_answers_cut_total                 counter    profile
=====================================================  =========  ==========================
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from coactive_credd import __version__
from coactive_credd.core import credage, engine
from coactive_credd.core.errors import CreddError
from coactive_credd.server.stats import LOGIN_BUCKETS, PROXY_BUCKETS

if TYPE_CHECKING:
    from coactive_credd.server.audit import Audit
    from coactive_credd.server.refresh import Daemon

__all__ = ["INSTALL_HINT", "MetricsUnavailable", "render"]

# prometheus-client is a dependency: only a broken install lacks it.
INSTALL_HINT = "reinstall coactive-credd (prometheus-client is one of its dependencies)"
STATES = ("valid", "refreshing", "expired", "reauth_required", "locked", "no_token")


class MetricsUnavailable(CreddError):
    """prometheus-client cannot be imported (a broken install); the message says to reinstall."""


def _families(d: Daemon, audit: Audit) -> Iterator[Any]:
    """Every metric family, in the order of the table above."""
    now, boot = d.clock(), d.boot_clock()
    yield from _token_families(d, audit)
    yield from _profile_families(d, now, boot)
    yield from _connection_families(d)
    yield from _proxy_families(d)
    yield from _build_families()


def _token_families(d: Daemon, audit: Audit) -> Iterator[Any]:
    """Tokens served, login exchanges with Coactive, their latency, and failed logins."""
    from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

    s = d.stats
    served = CounterMetricFamily(
        "coactive_credd_tokens_served",
        "Access tokens handed to callers, by profile and serving path (fast: answered in "
        "front of aiohttp; slow: by the aiohttp handlers).",
        labels=["profile", "path"],
    )
    fast, slow = audit.served()
    for path, counts in (("fast", fast), ("slow", slow)):
        for profile, n in sorted(counts.items()):
            served.add_metric([profile, path], n)
    yield served

    logins = CounterMetricFamily(
        "coactive_credd_logins",
        "Login exchanges with Coactive (POST /api/v0/login), by outcome.",
        labels=["profile", "outcome"],
    )
    for (profile, outcome), n in sorted(s.logins.items()):
        logins.add_metric([profile, outcome], n)
    yield logins

    buckets: list[tuple[str, float]] = []
    cumulative = 0
    for bound, n in zip(LOGIN_BUCKETS, s.login_buckets, strict=True):
        cumulative += n
        buckets.append((repr(bound), cumulative))
    buckets.append(("+Inf", s.login_count))
    yield HistogramMetricFamily(
        "coactive_credd_login_duration_seconds",
        "How long login exchanges with Coactive took, successful or not.",
        buckets=buckets,
        sum_value=s.login_seconds,
    )

    failures = CounterMetricFamily(
        "coactive_credd_refresh_failures",
        "Failed logins by kind (rejected, rate_limited, server_error, malformed, "
        "unexpected_status, proxy, tls, timeout, network, config, internal).",
        labels=["profile", "kind"],
    )
    for (profile, kind), n in sorted(s.refresh_failures.items()):
        failures.add_metric([profile, kind], n)
    yield failures


def _profile_families(d: Daemon, now: float, boot: float) -> Iterator[Any]:
    """Each profile's state at ``now`` (wall and boot clock, seconds): failures in a row,
    backoff, serving deadline, state, and the personal token's 3-month limit."""
    from prometheus_client.core import GaugeMetricFamily

    consecutive = GaugeMetricFamily(
        "coactive_credd_consecutive_failures",
        "Failed logins in a row for the profile (0 after a success).",
        labels=["profile"],
    )
    backoff = GaugeMetricFamily(
        "coactive_credd_backoff_seconds",
        "Seconds until the next login attempt allowed by backoff or Retry-After (0: none).",
        labels=["profile"],
    )
    deadline = GaugeMetricFamily(
        "coactive_credd_token_serving_deadline_seconds",
        "Seconds until the current token's serving deadline (expires_at - skew), negative "
        "once passed; absent while the profile has no token.",
        labels=["profile"],
    )
    state = GaugeMetricFamily(
        "coactive_credd_profile_state",
        "1 for the profile's current state, 0 for the others.",
        labels=["profile", "state"],
    )
    expiry = GaugeMetricFamily(
        "coactive_credd_personal_token_expiry_timestamp_seconds",
        "When Coactive stops taking the profile's personal token (3 months after it was "
        "made), epoch seconds; absent for system credentials or an unknown day.",
        labels=["profile"],
    )
    seconds_left = GaugeMetricFamily(  # base units (Prometheus): seconds, not days
        "coactive_credd_personal_token_seconds_left",
        "Seconds until the personal token's 3-month limit (the same as the timestamp "
        "above, for dashboards: divide by 86400 for days).",
        labels=["profile"],
    )
    for name in sorted(d.profiles):
        p = d.profiles[name]
        rt = p.rt
        consecutive.add_metric([name], rt.failures)
        retry_in = rt.retry_in(now, boot)
        backoff.add_metric([name], max(0.0, retry_in) if retry_in is not None else 0.0)
        if rt.token is not None:
            deadline.add_metric([name], engine.serve_until(rt.token, d.policy, now, boot) - now)
        current = str(engine.state(rt, now, d.policy, locked=d.locked, boot=boot))
        for st in STATES:
            state.add_metric([name, st], 1.0 if st == current else 0.0)
        left = credage.days_left(p.cfg, now)
        if left is not None and p.cfg.credential_created is not None:
            expiry.add_metric([name], credage.expires_at(p.cfg.credential_created))
            seconds_left.add_metric([name], left * credage.DAY)
    yield from (consecutive, backoff, deadline, state, expiry, seconds_left)


def _connection_families(d: Daemon) -> Iterator[Any]:
    """The socket's connections, the requests refused on it, and whether the vault is locked."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    s = d.stats
    yield GaugeMetricFamily(
        "coactive_credd_connections_open",
        "Connections to the socket open now.",
        value=s.open_connections(),
    )
    yield CounterMetricFamily(
        "coactive_credd_connections",
        "Connections accepted on the socket since start.",
        value=s.connections,
    )
    refused = CounterMetricFamily(
        "coactive_credd_requests_refused",
        "Requests answered with an error, by the error code of the socket protocol "
        "(forbidden, bad_request, unknown_profile, locked, reauth_required, "
        "upstream_unavailable, not_found, ...).",
        labels=["reason"],
    )
    for reason, n in sorted(s.refused.items()):
        refused.add_metric([reason], n)
    yield refused
    yield GaugeMetricFamily(
        "coactive_credd_vault_locked", "1 while the vault is locked.", value=float(d.locked)
    )


def _build_families() -> Iterator[Any]:
    """The daemon's version."""
    from prometheus_client.core import GaugeMetricFamily

    info = GaugeMetricFamily(
        "coactive_credd_build_info", "The daemon's version; always 1.", labels=["version"]
    )
    info.add_metric([__version__], 1.0)
    yield info


def _proxy_families(d: Daemon) -> Iterator[Any]:
    """The API proxy's (:mod:`apiproxy`): requests, their latency, replays, cut answers."""
    from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

    px = d.stats.proxy
    requests = CounterMetricFamily(
        "coactive_credd_proxy_requests",
        "Requests forwarded to Coactive by the API proxy (/api/ on the socket), by profile, "
        "method (other: any but the usual seven) and status class of the answer (1xx..5xx; "
        "error: none was sent).",
        labels=["profile", "method", "status_class"],
    )
    for (profile, method, klass), n in sorted(px.requests.items()):
        requests.add_metric([profile, method, klass], n)
    yield requests
    duration = HistogramMetricFamily(
        "coactive_credd_proxy_request_duration_seconds",
        "How long proxied requests took, from their arrival to the end of the answer.",
        labels=["profile"],
    )
    for profile in sorted(px.count):
        buckets: list[tuple[str, float]] = []
        cumulative = 0
        for bound, n in zip(PROXY_BUCKETS, px.buckets.get(profile, []), strict=False):
            cumulative += n
            buckets.append((repr(bound), cumulative))
        buckets.append(("+Inf", px.count[profile]))
        duration.add_metric([profile], buckets, px.seconds.get(profile, 0.0))
    yield duration
    replays = CounterMetricFamily(
        "coactive_credd_proxy_replays",
        "Proxied requests sent again with a new token after Coactive answered 401.",
        labels=["profile"],
    )
    for profile, n in sorted(px.replays.items()):
        replays.add_metric([profile], n)
    yield replays
    cut = CounterMetricFamily(
        "coactive_credd_proxy_answers_cut",
        "Proxied answers cut off mid-body: Coactive broke off or stalled, or the caller "
        "stopped reading.",
        labels=["profile"],
    )
    for profile, n in sorted(px.cut.items()):
        cut.add_metric([profile], n)
    yield cut


def render(d: Daemon, audit: Audit) -> tuple[bytes, str]:
    """The exposition body and its Content-Type. Raises MetricsUnavailable when
    prometheus-client cannot be imported."""
    try:
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    except ImportError:
        raise MetricsUnavailable(
            "metrics need prometheus-client, which this install cannot import: "
            f"{INSTALL_HINT}, then restart the daemon"
        ) from None

    class _Collector:
        def collect(self) -> Iterator[Any]:
            return _families(d, audit)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector())
    return generate_latest(registry), CONTENT_TYPE_LATEST
