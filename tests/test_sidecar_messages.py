"""The sidecar's messages, as a new user meets them: a credential_file Coactive rejects is
fixed in the file (the Secret), not by `login`; a daemon that uses no vault does not say it
has one unlocked. (A refused uid's answer, naming allowed_uids and COACTIVE_CREDD_DAEMON_UID,
is checked in tests/test_peer.py.)"""

from __future__ import annotations

from pathlib import Path

from coactive_credd.testing.fakeupstream import FakeCoactive

from .conftest import run_cli, start_daemon
from .test_credfile import ROTATED, Secret, wait_for, write_config


def test_a_rejected_credential_file_is_fixed_in_the_file_and_no_vault_is_claimed(
    home: Path, fake: FakeCoactive
) -> None:
    secret = Secret(home / "secret")
    secret.put(ROTATED)  # Coactive does not know it
    write_config(
        home,
        f'[profiles.default]\nbase_url = "{fake.base_url}"\ncredential_file = "{secret.path}"\n',
    )
    d = start_daemon(home)
    try:
        wait_for(lambda: d.get("/v1/token")[0] == 424, what="the rejection")
        hint = d.get("/v1/token")[1]["error"]["hint"]
        assert hint == (
            f"put a valid personal token in credential_file {secret.path} (update the Secret "
            "or credential mounted there); the daemon reads it again when it changes"
        )
        line = next(x for x in d.log_text().splitlines() if "rejected by Coactive" in x)
        assert "coactive-credd login" not in line and f"credential_file {secret.path}" in line
        status = run_cli("status")
        assert "vault: none (every profile reads its credential_file)" in status.stdout
        assert "key-file" not in status.stdout
    finally:
        d.stop()
