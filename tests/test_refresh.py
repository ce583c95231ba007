"""Refresh behaviour of a real daemon (in this process, real socket, real fake Coactive) with a
clock the test moves: proactive refresh, single flight, faults and backoff, reauth."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from coactive_credd.core import config, engine
from coactive_credd.upstream.exchange import Upstream

from .conftest import InProc, both_paths


def current(ip: InProc) -> engine.Token:
    tok = ip.daemon.profiles["default"].rt.token
    assert tok is not None
    return tok


async def test_first_login_happens_before_anyone_asks(inproc: InProc) -> None:
    assert inproc.fake.logins == 1
    status, body = await inproc.get("/v1/token")
    assert status == 200
    assert body["access_token"] == inproc.fake.issued[-1]
    assert body["token_type"] == "Bearer" and body["profile"] == "default"
    assert 3590 <= body["expires_in"] <= 3600
    assert body["expires_at"].endswith("Z")
    assert inproc.fake.logins == 1


async def test_text_plain_answers_the_token_alone(inproc: InProc) -> None:
    status, body = await inproc.get("/v1/token", headers={"Accept": "text/plain"})
    assert (status, body) == (200, inproc.fake.issued[-1])


async def test_proactive_refresh_without_any_caller_waiting(inproc: InProc) -> None:
    first = current(inproc)
    rt = inproc.daemon.profiles["default"].rt
    assert rt.refresh_at == pytest.approx(first.expires_at - 900 - 0.5 * 180, abs=1e-6)
    inproc.clock.now = rt.refresh_at - 1
    await inproc.settle()
    assert inproc.fake.logins == 1  # not yet due
    inproc.clock.now = rt.refresh_at + 0.1
    await inproc.settle()  # the scheduler alone refreshes
    assert inproc.fake.logins == 2
    _status, body = await inproc.get("/v1/token")
    assert body["access_token"] == inproc.fake.issued[-1] != first.access_token


@both_paths
async def test_a_caller_in_the_advisory_window_is_answered_at_once(inproc: InProc) -> None:
    first = current(inproc)
    p = inproc.daemon.profiles["default"]
    inproc.fake.delay = 3  # Coactive is slow: the caller must not wait for it
    inproc.daemon.policy = engine.Policy(wallclock_check=3600)  # keep the scheduler out of it
    inproc.clock.now = p.rt.refresh_at or 0  # not woken: only the caller can start the refresh
    _status, body = await inproc.get("/v1/token")
    assert body["access_token"] == first.access_token
    # answered while the login it started is still with Coactive
    assert p.inflight is not None and inproc.fake.logins == 1
    await asyncio.wait_for(asyncio.shield(p.inflight), 30)
    assert inproc.fake.logins == 2
    _, body = await inproc.get("/v1/token")
    assert body["access_token"] == inproc.fake.issued[-1]


async def test_thousand_callers_on_an_expired_token_make_one_login(inproc: InProc) -> None:
    inproc.fake.delay = 0.2
    inproc.clock.jump(3600)  # the token is dead
    conn = aiohttp.UnixConnector(path=str(inproc.socket), limit=0)
    async with aiohttp.ClientSession(connector=conn) as s:

        async def one() -> tuple[int, Any]:
            async with s.get("http://localhost/v1/token") as r:
                return r.status, await r.json()

        results = await asyncio.gather(*(one() for _ in range(1000)))
    assert inproc.fake.logins == 2  # the first login, and exactly one for the thousand
    assert {st for st, _ in results} == {200}
    assert {b["access_token"] for _, b in results} == {inproc.fake.issued[-1]}


@both_paths
async def test_never_served_at_or_past_expires_at_minus_skew(inproc: InProc) -> None:
    tok = current(inproc)
    inproc.fake.fault = "503"
    inproc.clock.now = tok.expires_at - 30 - 0.5
    status, body = await inproc.get("/v1/token")
    assert status == 200 and body["access_token"] == tok.access_token
    inproc.clock.now = tok.expires_at - 30
    await inproc.settle()
    status, body = await inproc.get("/v1/token")
    assert status == 503
    assert body["error"]["code"] == "upstream_unavailable"
    assert tok.access_token not in str(body)


@pytest.mark.parametrize(
    "fault",
    [
        "429",
        "500",
        "502",
        "503",
        "reset",
        "malformed",
        "wrong_token_type",
        "missing_expires_in",
        "timeout",
    ],
)
async def test_upstream_fault_serves_the_valid_token_backs_off_and_recovers(
    inproc: InProc, fault: str
) -> None:
    await inproc.daemon.upstream.close()
    inproc.daemon.upstream = Upstream(connect_timeout=1, read_timeout=0.3)
    first = current(inproc)
    rt = inproc.daemon.profiles["default"].rt
    inproc.fake.fault = fault
    inproc.clock.now = (rt.refresh_at or 0) + 1
    await inproc.settle()
    if fault == "timeout":
        await asyncio.sleep(0.5)
        await inproc.settle()
    assert rt.failures == 1 and rt.last_error
    assert rt.retry_at is not None and rt.retry_at > inproc.clock.now
    assert inproc.fake.logins == 1
    # during the fault the still-valid token is served, and nobody retries before retry_at
    attempts = len(inproc.fake.requests)
    status, body = await inproc.get("/v1/token")
    assert status == 200 and body["access_token"] == first.access_token
    await inproc.settle()
    assert len(inproc.fake.requests) == attempts
    status, st = await inproc.get("/v1/status")
    assert st["profiles"][0]["last_error"]
    # recovery
    inproc.fake.fault = None
    inproc.clock.now = rt.retry_at + 0.01
    await inproc.settle()
    assert inproc.fake.logins == 2 and rt.failures == 0 and rt.last_error is None
    status, body = await inproc.get("/v1/token")
    assert body["access_token"] == inproc.fake.issued[-1]


@both_paths
async def test_retry_after_is_honoured(inproc: InProc) -> None:
    rt = inproc.daemon.profiles["default"].rt
    tok = current(inproc)
    inproc.fake.fault = "429"
    inproc.fake.retry_after = "120"  # longer than the backoff (0.5 s with rand pinned at 0.5)
    failed_at = inproc.clock.now = (rt.refresh_at or 0) + 1
    await inproc.settle()
    assert rt.retry_at == pytest.approx(failed_at + 120, abs=1e-6)
    attempts = len(inproc.fake.requests)
    inproc.fake.fault = None
    # nobody logs in inside the window: not the scheduler, not a caller
    inproc.clock.now = failed_at + 119.9
    await inproc.settle()
    status, body = await inproc.get("/v1/token")
    assert status == 200 and body["access_token"] == tok.access_token
    assert len(inproc.fake.requests) == attempts
    inproc.clock.now = failed_at + 120.1
    await inproc.settle()
    assert len(inproc.fake.requests) == attempts + 1 and inproc.fake.logins == 2


async def test_backoff_grows_while_the_outage_lasts(inproc: InProc) -> None:
    rt = inproc.daemon.profiles["default"].rt
    inproc.fake.fault = "500"
    inproc.clock.now = (rt.refresh_at or 0) + 1
    delays = []
    for _ in range(5):
        await inproc.settle()
        assert rt.retry_at is not None
        delays.append(rt.retry_at - inproc.clock.now)
        inproc.clock.now = rt.retry_at + 0.001
    await inproc.settle()
    # rand is pinned at 0.5: 0.5, 1, 2, 4, 8 s
    assert delays == pytest.approx([0.5, 1, 2, 4, 8], abs=0.01)
    assert rt.failures == 6


async def test_rejected_credentials_go_to_reauth_required_without_a_retry_loop(
    inproc: InProc,
) -> None:
    tok = current(inproc)
    rt = inproc.daemon.profiles["default"].rt
    inproc.fake.fault = "401"
    inproc.clock.now = (rt.refresh_at or 0) + 1
    await inproc.settle()
    attempts = len(inproc.fake.requests)
    _, st = await inproc.get("/v1/status")
    assert st["profiles"][0]["state"] == "reauth_required"
    for _ in range(5):  # time passes: no new attempts
        inproc.clock.jump(300)
        await inproc.settle()
    assert len(inproc.fake.requests) == attempts
    inproc.clock.now = tok.expires_at
    status, body = await inproc.get("/v1/token")
    assert status == 424
    assert body["error"]["code"] == "reauth_required"
    assert "coactive-credd login --profile default" in body["error"]["hint"]
    # an explicit refresh tries again, and succeeds once Coactive accepts the credentials
    inproc.fake.fault = None
    status, body = await inproc.post("/v1/token/refresh")
    assert status == 200 and body["access_token"] == inproc.fake.issued[-1]
    _, st = await inproc.get("/v1/status")
    assert st["profiles"][0]["state"] == "valid"


async def test_min_ttl_refreshes_first(inproc: InProc) -> None:
    tok = current(inproc)
    inproc.daemon.policy = engine.Policy(wallclock_check=3600)
    inproc.clock.now = tok.obtained_at + 100
    status, body = await inproc.get("/v1/token?min_ttl=3550")
    assert status == 200 and body["access_token"] != tok.access_token
    assert body["expires_in"] >= 3550
    assert inproc.fake.logins == 2
    status, body = await inproc.get("/v1/token?min_ttl=4000")
    assert status == 400 and "min_ttl" in body["error"]["message"]


async def test_fifty_reports_of_one_rejected_token_make_one_login(inproc: InProc) -> None:
    tok = current(inproc)
    inproc.fake.delay = 0.1
    digest = hashlib.sha256(tok.access_token.encode()).hexdigest()
    results = await asyncio.gather(
        *(inproc.post("/v1/token/refresh", {"rejected_token_sha256": digest}) for _ in range(50))
    )
    assert inproc.fake.logins == 2
    assert {b["access_token"] for _, b in results} == {inproc.fake.issued[-1]}
    # a late report of the old token changes nothing
    status, _body = await inproc.post("/v1/token/refresh", {"rejected_token_sha256": digest})
    assert status == 200 and inproc.fake.logins == 2


async def test_short_lifetimes_leave_no_gap_for_callers(inproc: InProc) -> None:
    inproc.fake.expires_in = 45
    await inproc.post("/v1/token/refresh")
    for _ in range(300):  # five minutes of 45-second tokens, a second at a time
        inproc.clock.jump(1)
        await inproc.settle()
        status, body = await inproc.get("/v1/token")
        assert status == 200, body
        assert body["expires_in"] > 0
    assert inproc.fake.logins >= 300 // 45


@both_paths
async def test_a_wall_clock_jump_never_serves_a_dead_token(inproc: InProc) -> None:
    tok = current(inproc)
    inproc.daemon.policy = engine.Policy(wallclock_check=3600)
    inproc.clock.jump(7200)  # suspended for two hours; no timer has fired yet
    status, body = await inproc.get("/v1/token")
    assert status == 200 and body["access_token"] != tok.access_token
    assert body["expires_in"] > 3500


async def test_the_scheduler_rechecks_the_wall_clock(inproc: InProc) -> None:
    inproc.daemon.policy = engine.Policy(wallclock_check=0.05)
    await inproc.settle()  # the scheduler now sleeps at most 0.05 s at a time
    rt = inproc.daemon.profiles["default"].rt
    inproc.clock.now = (rt.refresh_at or 0) + 1  # jump, and do not wake the scheduler
    await asyncio.sleep(0.3)
    assert inproc.fake.logins == 2


async def test_the_scheduler_sleeps_until_the_next_refresh_is_due_and_no_longer(
    inproc: InProc,
) -> None:
    """Nobody wakes it: the scheduler's own timer starts the refresh when it falls due, not
    at its next look at the wall clock (an hour away here). From 0.3 s before the refresh is
    due, both of the daemon's clocks follow the event loop's, as real time does."""
    d = inproc.daemon
    d.policy = engine.Policy(wallclock_check=3600.0)
    rt = d.profiles["default"].rt
    assert rt.refresh_at is not None
    loop = asyncio.get_running_loop()
    start, wall, boot = loop.time(), rt.refresh_at - 0.3, inproc.clock.boot_time()
    d.clock = lambda: wall + loop.time() - start
    d.boot_clock = lambda: boot + loop.time() - start
    d.wake()  # it sleeps on the new clocks from here
    while inproc.fake.logins < 2:
        assert loop.time() - start < 10, "the refresh due in 0.3 s did not start"
        await asyncio.sleep(0.01)
    await inproc.settle()
    assert rt.refresh_at > d.clock() + 60  # the next one is planned far ahead


@both_paths
async def test_the_peer_is_asked_once_per_connection(
    inproc: InProc, monkeypatch: pytest.MonkeyPatch
) -> None:
    from coactive_credd.server import api, fastpath

    calls = []
    real = api.peer_credentials

    def counting(sock: Any) -> tuple[int, int | None]:
        calls.append(sock)
        return real(sock)

    # the fast path asks when the connection opens; aiohttp when its first request comes
    monkeypatch.setattr(api, "peer_credentials", counting)
    monkeypatch.setattr(fastpath, "peer_credentials", counting)
    conn = aiohttp.UnixConnector(path=str(inproc.socket), limit=1)
    async with aiohttp.ClientSession(connector=conn) as s:
        for _ in range(5):
            async with s.get("http://localhost/v1/token") as r:
                assert r.status == 200
    assert len(calls) == 1


async def test_new_tokens_reach_the_vault_in_one_write(
    inproc: InProc, monkeypatch: pytest.MonkeyPatch
) -> None:
    vault = inproc.daemon.vault
    writes = []
    real = vault.update

    def counting(fn: Any) -> Any:
        writes.append(fn)
        return real(fn)

    monkeypatch.setattr(vault, "update", counting)
    before = vault.vault_path.read_bytes()
    for _ in range(3):
        assert (await inproc.post("/v1/token/refresh"))[0] == 200
    assert vault.vault_path.read_bytes() == before  # gathered for one write
    await inproc.daemon.flush()
    assert len(writes) == 1
    cached = vault.load().profiles["default"].token
    assert cached is not None and cached.access_token == inproc.fake.issued[-1]


@both_paths
async def test_skew_and_refresh_fraction_come_from_the_config(inproc: InProc, home: Path) -> None:
    """``[daemon] skew`` and ``refresh_fraction`` in config.toml, not the defaults (30, 0.25)."""
    config.update(
        home / "config.toml",
        lambda c: config.Config(
            daemon=config.DaemonConfig(skew=120, refresh_fraction=0.5), profiles=c.profiles
        ),
    )
    assert (await inproc.post("/v1/admin/reload"))[0] == 200
    assert (await inproc.post("/v1/token/refresh"))[0] == 200  # a token under the new policy
    tok = current(inproc)
    rt = inproc.daemon.profiles["default"].rt
    # half the 3600 s lifetime left, minus the jitter (rand 0.5 x 5 % of the lifetime)
    assert rt.refresh_at == pytest.approx(tok.expires_at - 1800 - 90, abs=1e-6)
    inproc.daemon.policy = dataclasses.replace(inproc.daemon.policy, wallclock_check=3600)
    inproc.fake.fault = "503"
    logins = inproc.fake.logins
    inproc.clock.now = tok.expires_at - 1800 - 90 - 1  # not due yet under the config's fraction
    await inproc.settle()
    assert inproc.fake.logins == logins and len(inproc.fake.requests) == logins
    inproc.clock.now = tok.expires_at - 120 - 0.5  # served until expires_at - skew ...
    status, body = await inproc.get("/v1/token")
    assert status == 200 and body["access_token"] == tok.access_token
    await inproc.settle()
    inproc.clock.now = tok.expires_at - 120  # ... and not from then on (30 s would still serve)
    status, body = await inproc.get("/v1/token")
    assert status == 503 and tok.access_token not in str(body)


async def test_a_rejected_token_report_inside_a_retry_after_window_makes_no_login(
    inproc: InProc,
) -> None:
    rt = inproc.daemon.profiles["default"].rt
    tok = current(inproc)
    inproc.fake.fault, inproc.fake.retry_after = "429", "120"
    failed_at = inproc.clock.now = (rt.refresh_at or 0) + 1
    await inproc.settle()
    attempts = len(inproc.fake.requests)
    inproc.fake.fault = None
    inproc.clock.now = failed_at + 60
    digest = hashlib.sha256(tok.access_token.encode()).hexdigest()
    await inproc.post("/v1/token/refresh", {"rejected_token_sha256": digest})
    assert len(inproc.fake.requests) == attempts
