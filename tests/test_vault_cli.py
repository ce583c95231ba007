"""`coactive-credd rekey` to and from the systemd credential, and what the fast commands load."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from coactive_credd.testing.fakeupstream import FakeCoactive
from coactive_credd.vault import SOURCE_KEY_FILE, SOURCE_SYSTEMD, Vault, parse

from .conftest import PERSONAL_TOKEN, login, run_cli, start_daemon


def _source(home: Path) -> int:
    return parse((home / "vault.bin").read_bytes(), home / "vault.bin")[0].source


def test_rekey_to_the_systemd_credential_and_back(
    home: Path, fake: FakeCoactive, tmp_path: Path
) -> None:
    login(fake)
    before = (home / "vault.bin").read_bytes()
    env = {k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"}
    # Not given the credential (a shell, not the service): one line with the way to run it.
    done = subprocess.run(
        [sys.executable, "-m", "coactive_credd", "rekey", "--systemd-credential"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "LoadCredentialEncrypted=coactive-credd.key" in done.stderr
    assert "rekey --systemd-credential" in done.stderr
    assert (home / "vault.bin").read_bytes() == before

    creds = tmp_path / "credentials"
    creds.mkdir(mode=0o700)
    (creds / "coactive-credd.key").write_bytes(os.urandom(32))
    given = {"CREDENTIALS_DIRECTORY": str(creds)}
    done = run_cli("rekey", "--systemd-credential", env=given)
    assert done.returncode == 0, done.stderr
    assert "systemd credential" in done.stderr
    assert _source(home) == SOURCE_SYSTEMD and not (home / "vault.key").exists()
    vault = Vault(
        home / "vault.bin", home / "vault.key", home / "vault.lock", credentials_dir=creds
    )
    assert vault.load().profiles["default"].secret == PERSONAL_TOKEN
    d = start_daemon(home, env=given)
    try:
        status = run_cli("status")
        assert "systemd-credential" in status.stdout + status.stderr
        doctor = run_cli("doctor", env=given)
        assert "the vault's key source is systemd-credential" in doctor.stdout + doctor.stderr
        assert run_cli("token").returncode == 0
    finally:
        d.stop()
    back = run_cli("rekey", "--key-file", env=given)
    assert back.returncode == 0, back.stderr
    assert _source(home) == SOURCE_KEY_FILE and (home / "vault.key").exists()


def test_token_and_status_never_load_the_secret_service_library(
    home: Path, fake: FakeCoactive
) -> None:
    login(fake)
    d = start_daemon(home)
    try:
        for cmd in ("token", "status"):
            done = subprocess.run(
                [sys.executable, "-X", "importtime", "-m", "coactive_credd", cmd],
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert done.returncode == 0, done.stderr
            loaded = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()}
            for heavy in ("secretstorage", "jeepney", "coactive_credd.vault"):
                assert heavy not in loaded, f"{cmd} loaded {heavy}"
    finally:
        d.stop()
