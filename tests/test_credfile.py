"""credential_file: a profile whose secret is a mounted Kubernetes Secret or a systemd
credential. No login, no vault; a rotated Secret (the kubelet's `..data` symlink swap) is
picked up; a file others could change is refused."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from coactive_credd.testing.fakeupstream import FakeCoactive, credential_id

from .conftest import CLIENT_ID, CLIENT_SECRET, PERSONAL_TOKEN, run_cli, start_daemon

ROTATED = "cpt_R0tated.Secret-for_tests~only"


def wait_for(cond: Callable[[], object], timeout: float = 15, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Secret:
    """A Secret volume laid out as the kubelet lays it out (its AtomicWriter): the data in a
    timestamped folder, ``..data`` a symlink to it, each key a symlink through ``..data``."""

    def __init__(self, folder: Path, key: str = "token") -> None:
        self.folder, self.key, self.n = folder, key, 0
        folder.mkdir(mode=0o755)
        (folder / key).symlink_to(f"..data/{key}")

    def put(self, value: str) -> None:
        self.n += 1
        data = self.folder / f"..2026_11_30_20_00_0{self.n}.000"
        data.mkdir(mode=0o755)
        (data / self.key).write_text(value + "\n")
        (data / self.key).chmod(0o400)
        tmp = self.folder / "..data_tmp"
        tmp.symlink_to(data.name)
        os.replace(tmp, self.folder / "..data")  # the swap readers never see half-done

    @property
    def path(self) -> Path:
        return self.folder / self.key


def write_config(home: Path, text: str) -> None:
    (home / "config.toml").write_text(text)
    (home / "config.toml").chmod(0o600)


def test_a_mounted_secret_needs_no_login_and_its_rotation_is_picked_up(
    home: Path, fake: FakeCoactive
) -> None:
    secret = Secret(home / "secret")
    secret.put(PERSONAL_TOKEN)
    write_config(
        home,
        f'[profiles.default]\nbase_url = "{fake.base_url}"\ncredential_file = "{secret.path}"\n',
    )
    d = start_daemon(home)
    try:
        status, body = d.get("/v1/token")
        assert status == 200 and body["access_token"] == fake.issued[-1]
        assert fake.ledger[-1].credential == credential_id(PERSONAL_TOKEN)
        assert not (home / "vault.bin").exists(), "a credential_file profile needs no vault"

        fake.add_personal_token(ROTATED)
        secret.put(ROTATED)
        wait_for(
            lambda: fake.ledger[-1].credential == credential_id(ROTATED),
            what="a login with the rotated Secret",
        )
        fake.revoke(PERSONAL_TOKEN)
        status, body = d.get("/v1/token")
        assert status == 200 and body["access_token"] == fake.issued[-1]
        assert "credential file(s) changed" in d.log_text()
    finally:
        d.stop()
    log = d.log_text()
    assert PERSONAL_TOKEN not in log and ROTATED not in log


def test_a_credential_file_others_could_change_is_refused(home: Path, fake: FakeCoactive) -> None:
    loose = home / "loose"
    loose.write_text(PERSONAL_TOKEN + "\n")
    loose.chmod(0o666)
    write_config(
        home, f'[profiles.default]\nbase_url = "{fake.base_url}"\ncredential_file = "{loose}"\n'
    )
    d = start_daemon(home)
    try:
        status, body = d.get("/v1/token")
        assert status == 424 and fake.logins == 0
        assert "chmod go-w" in body["error"]["message"]
        st = d.get("/v1/status")[1]["profiles"][0]
        assert st["state"] == "reauth_required" and str(loose) in st["last_error"]
        loose.chmod(0o600)  # fixed: picked up without a restart
        wait_for(lambda: d.get("/v1/token")[0] == 200, what="the fixed file to be used")
    finally:
        d.stop()
    assert PERSONAL_TOKEN not in d.log_text()


def test_a_systemd_credential_for_client_credentials(home: Path, fake: FakeCoactive) -> None:
    creds = home / "credentials"
    creds.mkdir(mode=0o700)
    (creds / "coactive").write_text(CLIENT_SECRET)  # systemd's files have no newline
    (creds / "coactive").chmod(0o400)
    write_config(
        home,
        f'[profiles.default]\nbase_url = "{fake.base_url}"\nauth = "client_credentials"\n'
        f'client_id = "{CLIENT_ID}"\ncredential_file = "$CREDENTIALS_DIRECTORY/coactive"\n',
    )
    d = start_daemon(home, env={"CREDENTIALS_DIRECTORY": str(creds)})
    try:
        assert d.get("/v1/token")[0] == 200
        assert fake.ledger[-1].credential == credential_id(CLIENT_ID)
    finally:
        d.stop()
    # client credentials without a client_id: one line saying what to add
    write_config(
        home,
        f'[profiles.default]\nbase_url = "{fake.base_url}"\nauth = "client_credentials"\n'
        f'credential_file = "{creds / "coactive"}"\n',
    )
    bad = run_cli("serve")
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1
    assert 'needs client_id = "..."' in bad.stderr
