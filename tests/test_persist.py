"""New tokens kept in the vault: only under the credentials that minted them, every write
finished before a stop returns, and a reload never trades a newer token for an older one.

The daemon runs in this process behind the shipped fast path (the ``inproc`` fixture); the
vault is the real file, read back with a second :class:`Vault` as a restarted daemon would.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from coactive_credd.core import engine
from coactive_credd.server import refresh

from .conftest import PERSONAL_TOKEN, FakeClock, InProc, login, on_disk

OTHER_TOKEN = "cpt_An0ther.Pers0nal-token"


def current(ip: InProc) -> engine.Token:
    tok = ip.daemon.profiles["default"].rt.token
    assert tok is not None
    return tok


async def test_a_token_is_not_kept_under_credentials_that_did_not_mint_it(inproc: InProc) -> None:
    minted = current(inproc)  # the first login's token, waiting for the batched vault write
    assert inproc.daemon.keeper.pending, "the first token should wait for the batch write"
    inproc.fake.fault = "401"  # the new credentials do not log in, so nothing replaces it
    await asyncio.to_thread(login, inproc.fake, "default", "--no-verify", token=OTHER_TOKEN)
    await inproc.settle()
    await inproc.daemon.flush()
    kept = on_disk(inproc).profiles["default"]
    assert kept.secret == OTHER_TOKEN
    assert kept.token is None or kept.token.access_token != minted.access_token


async def test_a_token_is_kept_under_the_credentials_that_minted_it(inproc: InProc) -> None:
    """The counterpart: without a change of credentials the batch does reach the vault."""
    minted = current(inproc)
    await inproc.daemon.flush()
    kept = on_disk(inproc).profiles["default"]
    assert kept.secret == PERSONAL_TOKEN
    assert kept.token is not None and kept.token.access_token == minted.access_token
    assert kept.token.expires_at == minted.expires_at


async def test_a_vault_that_cannot_be_written_costs_one_warning_not_the_token(
    inproc: InProc, caplog: pytest.LogCaptureFixture
) -> None:
    """The batched write fails (here the vault's path has become a folder): the new token is
    still served, and one warning says how many tokens were not kept, and why."""
    minted = current(inproc)
    path = inproc.daemon.vault.vault_path
    path.unlink()
    path.mkdir()
    caplog.clear()
    await inproc.daemon.flush()
    lines = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    why = f"{path} is not private (it is not a regular file); fix it with `mv {path} {path}.bak`"
    assert lines == [f"could not keep 1 new token(s) in the vault: {why}"]
    status, body = await inproc.get("/v1/token")
    assert status == 200 and body["access_token"] == minted.access_token
    path.rmdir()


async def test_flush_waits_for_a_vault_write_under_way(
    inproc: InProc, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stop during the batch write returns only once the write is on disk.

    The write is held in its worker thread (a slow disk, as far as the daemon can tell): no
    real file system can be told to stall one write, so this is the one place a gate is used.
    """
    d = inproc.daemon
    await d.flush()  # the first login's token, before the gate goes in
    vault = d.vault
    entered, release = threading.Event(), threading.Event()
    real = vault.update

    def held(fn: Any) -> Any:
        entered.set()
        assert release.wait(30), "the test never released the write"
        return real(fn)

    monkeypatch.setattr(vault, "update", held)
    d.persist_delay = 0.0
    assert (await inproc.post("/v1/token/refresh"))[0] == 200
    newest = inproc.fake.issued[-1]
    assert await asyncio.to_thread(entered.wait, 30), "the batch write never started"
    stop = asyncio.ensure_future(d.flush())
    for _ in range(20):  # the loop runs freely; only the held write may keep flush waiting
        await asyncio.sleep(0.01)
    assert not stop.done(), "flush returned while a vault write was still under way"
    release.set()
    await asyncio.wait_for(stop, 30)
    kept = on_disk(inproc).profiles["default"].token
    assert kept is not None and kept.access_token == newest


@pytest.mark.parametrize("how", ["POST /v1/admin/reload", "SIGHUP"])
async def test_reload_keeps_a_newer_token_than_the_vaults(inproc: InProc, how: str) -> None:
    d = inproc.daemon
    await d.flush()
    older = on_disk(inproc).profiles["default"].token
    assert older is not None
    inproc.clock.jump(100)
    status, body = await inproc.post("/v1/token/refresh")  # newer, not yet in the vault
    assert status == 200 and body["access_token"] != older.access_token
    newer = body["access_token"]
    if how == "SIGHUP":
        d.reload()  # what serve's SIGHUP handler calls
    else:
        assert (await inproc.post("/v1/admin/reload"))[0] == 200
    status, body = await inproc.get("/v1/token")
    assert status == 200 and body["access_token"] == newer
    assert current(inproc).expires_at == older.expires_at + 100


async def test_a_reload_during_a_retry_after_window_makes_no_login(inproc: InProc) -> None:
    """The vault's copy of the token in memory is no news: a reload keeps the backoff."""
    d = inproc.daemon
    await d.flush()
    rt = d.profiles["default"].rt
    inproc.fake.fault, inproc.fake.retry_after = "503", "120"
    inproc.clock.now = (rt.refresh_at or 0) + 1
    await inproc.settle()
    assert rt.retry_at == pytest.approx(inproc.clock.now + 120, abs=1e-6)
    attempts = len(inproc.fake.requests)
    assert (await inproc.post("/v1/admin/reload"))[0] == 200
    await inproc.settle()
    assert len(inproc.fake.requests) == attempts
    assert rt.retry_at == pytest.approx(inproc.clock.now + 120, abs=1e-6)


async def test_a_restarted_daemon_serves_the_vaults_token_aged_by_the_wall_clock(
    inproc: InProc,
) -> None:
    """A daemon started on the same files finds the token the last one kept: it serves it
    with no login, reckons its boot-clock mint from its wall-clock age (the boot clock
    started again), plans its refresh and records when it was obtained. A wall clock that
    now reads earlier than the token was obtained gives it no negative age."""
    d = inproc.daemon
    await d.flush()
    kept = on_disk(inproc).profiles["default"].token
    assert kept is not None
    logins = inproc.fake.logins
    for wall, age in ((kept.obtained_at + 1000, 1000.0), (kept.obtained_at - 50, 0.0)):
        clock = FakeClock(wall)  # its boot clock reads 1000 s
        again = refresh.Daemon(d.paths, clock=clock, boot_clock=clock.boot_time, rand=lambda: 0.5)
        again.load()
        rt = again.profiles["default"].rt
        tok = rt.token
        assert tok is not None and tok.access_token == kept.access_token
        assert tok.obtained_boot == pytest.approx(1000 - age, abs=1e-6)
        left = engine.expires_in(tok, clock(), clock.boot_time())
        assert left == pytest.approx(kept.expires_at - max(wall, kept.obtained_at), abs=1e-6)
        assert rt.refresh_at == engine.plan_refresh(tok, again.policy, 0.5) is not None
        assert rt.last_refresh_at == kept.obtained_at and not rt.refreshing
        assert again.profiles["default"].render(clock(), clock.boot_time())  # served as is
        await again.upstream.close()
    assert inproc.fake.logins == logins


async def test_logging_in_again_with_the_same_token_ends_a_rejection(inproc: InProc) -> None:
    """Coactive rejected the token for a while (reauth required); the user runs `login` with
    the same token once it accepts it again. The verified login's token, newer than the one
    in memory, is adopted at the reload the CLI asks for: served at once, the rejection
    forgotten, no login of the daemon's own."""
    d = inproc.daemon
    rt = d.profiles["default"].rt
    inproc.fake.fault = "401"
    assert (await inproc.post("/v1/token/refresh"))[0] == 424  # SPEC: reauth required
    assert rt.reauth
    inproc.fake.fault = None
    logins = inproc.fake.logins
    # the CLI reads the real clock: the daemon's is moved on past it (time passing), by more
    # than the login could take on a busy machine
    inproc.clock.now = max(inproc.clock.now, time.time() + 60)
    relogin = await asyncio.to_thread(login, inproc.fake)
    assert "the running daemon picked it up" in relogin.stderr  # its reload
    await inproc.settle()
    assert not rt.reauth and rt.failures == 0 and rt.retry_at is None
    status, body = await inproc.get("/v1/token")
    assert status == 200 and body["access_token"] == inproc.fake.issued[-1]
    assert inproc.fake.logins == logins + 1  # the daemon made none of its own
