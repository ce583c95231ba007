"""Passphrase vaults through the real commands and daemon: rekey, locked start, unlock, lock,
auto-lock, and back to a key file."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from coactive_credd.core import config
from coactive_credd.testing.fakeupstream import FakeCoactive

from .conftest import PERSONAL_TOKEN, InProc, both_paths, login, run_cli, start_daemon

PASSPHRASE = "correct horse battery staple"


@pytest.mark.heavy  # long: started first, so it does not end the run alone
def test_passphrase_round_trip_through_a_restarted_daemon(home: Path, fake: FakeCoactive) -> None:
    login(fake)
    rekey = run_cli("rekey", "--passphrase-stdin", input=PASSPHRASE + "\n")
    assert rekey.returncode == 0, rekey.stderr
    d = start_daemon(home, fresh=True)  # its argv, as the kernel shows it, is checked
    try:
        st = json.loads(run_cli("status", "--json").stdout)
        assert st["locked"] is True and st["key_source"] == "passphrase"
        assert st["profiles"][0]["state"] == "locked"
        status, body = d.get("/v1/token")
        assert status == 423 and body["error"]["code"] == "locked"
        assert "coactive-credd unlock" in body["error"]["hint"]
        token = run_cli("token")
        assert token.returncode == 7 and "coactive-credd unlock" in token.stderr

        wrong = run_cli("unlock", "--passphrase-stdin", input="not it\n")
        assert wrong.returncode == 7 and "wrong passphrase" in wrong.stderr
        assert d.get("/v1/token")[0] == 423

        t0 = time.monotonic()
        assert run_cli("unlock", "--passphrase-stdin", input=PASSPHRASE + "\n").returncode == 0
        served = run_cli("token")
        unlock_to_token = time.monotonic() - t0
        assert served.returncode == 0 and served.stdout.strip() == fake.issued[-1]
        assert fake.logins == 1  # the cached token from the vault, no new login
        print(f"unlock to first token: {unlock_to_token:.2f} s")

        cmdline = Path(f"/proc/{d.proc.pid}/cmdline").read_bytes()
        assert PASSPHRASE.encode() not in cmdline and PERSONAL_TOKEN.encode() not in cmdline
        assert run_cli("lock").returncode == 0
        status, body = d.get("/v1/token")  # right after lock
        assert status == 423
        st = json.loads(run_cli("status", "--json").stdout)
        assert st["locked"] is True and st["profiles"][0]["expires_at"] is None  # token forgotten
    finally:
        d.stop()
    log = d.log_text()
    assert PASSPHRASE not in log and PERSONAL_TOKEN not in log
    assert all(tok not in log for tok in fake.issued)


@pytest.mark.heavy  # long: started first, so it does not end the run alone
def test_rekey_back_to_a_key_file_keeps_the_daemon_serving(home: Path, fake: FakeCoactive) -> None:
    login(fake)
    assert run_cli("rekey", "--passphrase-stdin", input=PASSPHRASE + "\n").returncode == 0
    assert not (home / "vault.key").exists()
    d = start_daemon(home)
    try:
        assert run_cli("unlock", "--passphrase-stdin", input=PASSPHRASE + "\n").returncode == 0
        back = run_cli("rekey", "--key-file", input=PASSPHRASE + "\n")  # the current passphrase
        assert back.returncode == 0, back.stderr
        assert "running daemon follows" in back.stderr
        st = json.loads(run_cli("status", "--json").stdout)
        assert st["locked"] is False and st["key_source"] == "key-file"
        assert run_cli("token").returncode == 0
        # with the daemon running, rekey to a passphrase hands it the new one: no gap
        again = run_cli("rekey", "--passphrase-stdin", input="another one\n")
        assert again.returncode == 0
        assert run_cli("token").returncode == 0
        assert run_cli("lock").returncode == 0
        assert run_cli("token").returncode == 7
    finally:
        d.stop()


def test_lock_on_a_key_file_vault_says_how_to_add_a_passphrase(daemon: object) -> None:
    out = run_cli("lock")
    assert out.returncode == 1 and "rekey --passphrase-stdin" in out.stderr


def test_cli_writes_to_a_passphrase_vault_need_the_passphrase(
    home: Path, fake: FakeCoactive
) -> None:
    login(fake)
    assert run_cli("rekey", "--passphrase-stdin", input=PASSPHRASE + "\n").returncode == 0
    before = (home / "vault.bin").read_bytes()
    # no terminal to ask on: refused with the reason, vault untouched
    out = run_cli(
        "login",
        "--profile",
        "x",
        "--base-url",
        fake.base_url,
        "--personal-token-stdin",
        input=PERSONAL_TOKEN + "\n",
    )
    assert out.returncode == 7 and "passphrase" in out.stderr
    assert (home / "vault.bin").read_bytes() == before
    wrong = run_cli("rekey", "--key-file", input="nope\n")
    assert wrong.returncode == 7 and (home / "vault.bin").read_bytes() == before


@both_paths
async def test_auto_lock_after_idle_with_a_jumped_clock(
    inproc: InProc, home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rekey = await asyncio.to_thread(run_cli, "rekey", "--passphrase-stdin", input=PASSPHRASE + "\n")
    assert rekey.returncode == 0, rekey.stderr
    d = inproc.daemon
    assert not d.locked and d.key_source == "passphrase"  # the CLI handed over the new passphrase
    config.update(
        home / "config.toml",
        lambda c: config.Config(
            daemon=config.DaemonConfig(lock_after_idle=600, lock_after_unlock=3600),
            profiles=c.profiles,
        ),
    )
    d.reload()
    assert (await inproc.get("/v1/token"))[0] == 200
    inproc.clock.jump(599)
    await inproc.settle()
    assert (await inproc.get("/v1/token"))[0] == 200  # used: the idle timer starts again
    inproc.clock.jump(599)
    await inproc.settle()
    assert not d.locked
    caplog.clear()
    inproc.clock.jump(1)  # idle exactly lock_after_idle seconds
    await inproc.settle()
    assert d.locked
    inproc.clock.jump(600)  # locked, it is not locked again
    await inproc.settle()
    assert [r.getMessage() for r in caplog.records if "locked" in r.getMessage()] == [
        "vault locked (auto-lock): credentials and tokens dropped from memory"
    ]
    status, body = await inproc.get("/v1/token")
    assert status == 423 and body["error"]["code"] == "locked"
    assert all(p.secret is None and p.rt.token is None for p in d.profiles.values())


async def test_auto_lock_leaves_a_key_file_vault_alone(inproc: InProc, home: Path) -> None:
    """lock_after_idle and lock_after_unlock are for passphrase vaults: a vault whose key is
    in a file is never locked (nothing would unlock it but a restart)."""
    assert inproc.daemon.key_source != "passphrase"
    config.update(
        home / "config.toml",
        lambda c: config.Config(
            daemon=config.DaemonConfig(lock_after_idle=600, lock_after_unlock=900),
            profiles=c.profiles,
        ),
    )
    inproc.daemon.reload()
    inproc.clock.jump(1000)
    await inproc.settle()
    assert not inproc.daemon.locked
    assert (await inproc.get("/v1/token"))[0] == 200


async def test_auto_lock_after_unlock_however_busy(inproc: InProc, home: Path) -> None:
    rekey = await asyncio.to_thread(run_cli, "rekey", "--passphrase-stdin", input=PASSPHRASE + "\n")
    assert rekey.returncode == 0
    config.update(
        home / "config.toml",
        lambda c: config.Config(
            daemon=config.DaemonConfig(lock_after_unlock=900), profiles=c.profiles
        ),
    )
    inproc.daemon.reload()
    for _ in range(8):
        inproc.clock.jump(100)
        await inproc.settle()
        assert (await inproc.get("/v1/token"))[0] == 200
    inproc.clock.jump(101)
    await inproc.settle()
    assert (await inproc.get("/v1/token"))[0] == 423
