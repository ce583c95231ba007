"""GET /metrics: a real daemon scraped, the answer parsed with prometheus_client.parser."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from coactive_credd.testing.fakeupstream import FakeCoactive
from prometheus_client.parser import text_string_to_metric_families

from .conftest import Daemon, call, leaked, login, start_daemon, wait_ready


def scrape(d: Daemon) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape: (name, sorted labels) -> value."""
    conn_status, text = call(d.socket, "GET", "/metrics")
    assert conn_status == 200, text
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


@pytest.mark.verified_login
def test_a_scrape_counts_what_happened(daemon: Daemon, fake: FakeCoactive) -> None:
    for _ in range(5):
        assert daemon.get("/v1/token")[0] == 200  # the fast path
    assert daemon.get("/v1/token", headers={"Accept": "text/plain"})[0] == 200  # aiohttp's
    assert daemon.get("/v1/token?profile=nobody")[0] == 404
    assert daemon.post("/v1/token/refresh")[0] == 200  # one login, successful
    fake.fault = "503"
    assert daemon.post("/v1/token/refresh")[0] == 503  # one login, failed

    m = scrape(daemon)
    assert (
        m[("coactive_credd_tokens_served_total", (("path", "fast"), ("profile", "default")))] == 5
    )
    # the text/plain one, and the answer to the first refresh
    assert (
        m[("coactive_credd_tokens_served_total", (("path", "slow"), ("profile", "default")))] == 2
    )
    assert m[("coactive_credd_logins_total", (("outcome", "success"), ("profile", "default")))] == 1
    assert (
        m[("coactive_credd_logins_total", (("outcome", "unavailable"), ("profile", "default")))]
        == 1
    )
    assert (
        m[
            (
                "coactive_credd_refresh_failures_total",
                (("kind", "server_error"), ("profile", "default")),
            )
        ]
        == 1
    )
    assert m[("coactive_credd_login_duration_seconds_count", ())] == 2
    assert m[("coactive_credd_login_duration_seconds_bucket", (("le", "+Inf"),))] == 2
    assert 0 < m[("coactive_credd_login_duration_seconds_sum", ())] < 10
    assert m[("coactive_credd_consecutive_failures", (("profile", "default"),))] == 1
    assert m[("coactive_credd_backoff_seconds", (("profile", "default"),))] > 0
    assert (
        3500
        < m[("coactive_credd_token_serving_deadline_seconds", (("profile", "default"),))]
        <= 3570
    )
    assert m[("coactive_credd_profile_state", (("profile", "default"), ("state", "valid")))] == 1
    assert m[("coactive_credd_profile_state", (("profile", "default"), ("state", "expired")))] == 0
    assert m[("coactive_credd_requests_refused_total", (("reason", "unknown_profile"),))] == 1
    assert m[("coactive_credd_requests_refused_total", (("reason", "upstream_unavailable"),))] == 1
    assert m[("coactive_credd_connections_total", ())] >= 10
    assert m[("coactive_credd_connections_open", ())] >= 1  # this scrape's own
    assert m[("coactive_credd_vault_locked", ())] == 0
    # login recorded today: 3 months left, give or take the month lengths
    left = m[("coactive_credd_personal_token_seconds_left", (("profile", "default"),))]
    assert 88 * 86400 < left <= 92 * 86400  # base units: seconds (promtool's rule)
    assert (
        "coactive_credd_personal_token_expiry_timestamp_seconds",
        (("profile", "default"),),
    ) in m

    _, text = call(daemon.socket, "GET", "/metrics")
    assert not leaked(text, set(fake.issued))


def test_system_credentials_have_no_age_metric(home: Path, fake: FakeCoactive) -> None:
    from .conftest import CLIENT_ID, CLIENT_SECRET, run_cli

    proc = run_cli("login", "--base-url", fake.base_url, "--client-id", CLIENT_ID,
                   "--client-secret-stdin", input=CLIENT_SECRET + "\n")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    d = start_daemon(home)
    try:
        names = {name for name, _ in scrape(d)}
        assert "coactive_credd_personal_token_seconds_left" not in names
        assert "coactive_credd_token_serving_deadline_seconds" in names
    finally:
        d.stop()


def _serve(home: Path, *python_flags: str, env: dict[str, str] | None = None) -> Daemon:
    logf = home / "serve.log"
    with open(logf, "wb") as out:
        proc = subprocess.Popen([sys.executable, *python_flags, "-m", "coactive_credd", "serve"],
                                stdout=out, stderr=out, env={**os.environ, **(env or {})})  # fmt: skip
    d = Daemon(socket=home / "credd.sock", log=logf, proc=proc, home=home)
    wait_ready(d)
    return d


def test_start_up_does_not_import_prometheus_client(home: Path, fake: FakeCoactive) -> None:
    login(fake)
    d = _serve(home, "-X", "importtime")
    try:
        assert d.get("/v1/token")[0] == 200
        assert "coactive_credd.server.fastpath" in d.log_text()  # importtime is on
        assert "prometheus_client" not in d.log_text()
        scrape(d)
        assert "prometheus_client" in d.log_text()  # imported by the first scrape
    finally:
        d.stop()


def test_without_prometheus_client_a_scrape_says_to_reinstall(
    home: Path, fake: FakeCoactive, tmp_path: Path
) -> None:
    # The one fault nothing real injects: the package missing. A package of that name that
    # fails to import stands in for it, first on the daemon's path.
    fake_pkg = tmp_path / "hide" / "prometheus_client"
    fake_pkg.mkdir(parents=True)
    (fake_pkg / "__init__.py").write_text("raise ImportError('not installed (test)')\n")
    login(fake)
    path = os.pathsep.join([str(fake_pkg.parent), os.environ.get("PYTHONPATH", "")])
    d = _serve(home, env={"PYTHONPATH": path})
    try:
        status, body = call(d.socket, "GET", "/metrics")
        assert status == 503
        assert body["error"]["code"] == "metrics_unavailable"
        assert "reinstall coactive-credd" in body["error"]["message"]
        assert d.get("/v1/token")[0] == 200  # nothing else is affected
    finally:
        d.stop()
    assert "Traceback" not in d.log_text()
