"""kill -9 at random points while the vault is written: nothing is lost, nothing is left over.

The loop itself is bench/kill9.py (hundreds of kills there; a few dozen here): the real
daemon, refreshing 3-second tokens and writing them to the vault every 20 ms, is SIGKILLed
while a concurrent CLI logs in, logs out or re-keys (and half the time the CLI is killed
too); after every kill the vault must open, hold exactly what completed operations left, and
no temporary file may be left behind; the restarted daemon must serve every profile.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from coactive_credd.core import config, fsutil
from coactive_credd.vault import ProfileSecrets, Vault, VaultData

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import kill9

ITERATIONS = int(os.environ.get("COACTIVE_CREDD_KILL9_ITERATIONS", "20"))


@pytest.mark.heavy
@pytest.mark.xdist_group("timing")  # one at a time: each measures guarantees under its own load
@pytest.mark.timeout(900)
def test_kill9_loop_keeps_every_credential_and_leaves_no_temporaries() -> None:
    figures = kill9.run(ITERATIONS, seed=11, profiles=10)
    assert figures["failures"] == [], "\n".join(figures["failures"])
    assert figures["kills_daemon"] >= ITERATIONS
    assert figures["restarts_ok"] == ITERATIONS
    assert figures["tokens_checked"] > 0


def _stray(folder: Path, name: str) -> Path:
    p = folder / f".{name}.0123456789ab.tmp"
    p.write_bytes(b"what a killed writer left")
    return p


def test_a_vault_write_removes_temporaries_a_killed_writer_left(home: Path) -> None:
    vault = Vault(home / "vault.bin", home / "vault.key", home / "vault.lock")
    vault.update(lambda d: d.profiles.update(p=ProfileSecrets(secret="s1")))
    strays = [_stray(home, "vault.bin"), _stray(home, "vault.key"), _stray(home, "vault.key.new")]
    unrelated = [home / ".vault.bin.notours.tmp", home / "vault.bin.0123456789ab.tmp"]
    for p in unrelated:
        p.write_bytes(b"x")

    def put(d: VaultData) -> None:
        d.profiles["q"] = ProfileSecrets(secret="s2")

    vault.update(put)
    assert [p for p in strays if p.exists()] == []
    assert all(p.exists() for p in unrelated)
    assert set(vault.load().profiles) == {"p", "q"}


def test_a_config_write_removes_temporaries_a_killed_writer_left(home: Path) -> None:
    path = home / "config.toml"
    stray = _stray(home, "config.toml")
    config.update(path, lambda c: config.with_profile(c, config.ProfileConfig(name="p")))
    assert not stray.exists()
    assert "p" in config.load(path).profiles


def test_remove_stale_temps_matches_only_atomic_write_names(tmp_path: Path) -> None:
    target = tmp_path / "f"
    fsutil.atomic_write(target, b"1")
    _stray(tmp_path, "f")
    (tmp_path / ".f.ABCDEF012345.tmp").write_bytes(b"not ours: upper case")
    (tmp_path / ".g.0123456789ab.tmp").write_bytes(b"another file's")
    assert fsutil.remove_stale_temps(target) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".f.ABCDEF012345.tmp",
        ".g.0123456789ab.tmp",
        "f",
    ]
