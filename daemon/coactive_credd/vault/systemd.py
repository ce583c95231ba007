"""The `systemd-credential` key source: the credential ``coactive-credd.key`` that systemd
hands the service in ``$CREDENTIALS_DIRECTORY`` (``LoadCredentialEncrypted=``, sealed to the
TPM where there is one).

The credential holds 32 raw bytes or 64 hex digits; the header records its key id. A new
vault uses it whenever the process was given one. Nothing is written or removed: the
credential belongs to the service's unit.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from coactive_credd.vault.errors import VaultKeyMissing
from coactive_credd.vault.format import KEY_SIZE, SOURCE_SYSTEMD, key_id
from coactive_credd.vault.source import KeySource, NewKey

SYSTEMD_CREDENTIAL = "coactive-credd.key"


class SystemdCredential(KeySource):
    """The systemd credential in `credentials_dir` (default ``$CREDENTIALS_DIRECTORY``)."""

    code = SOURCE_SYSTEMD
    name = "systemd-credential"

    def __init__(self, vault_path: Path, credentials_dir: Path | None = None) -> None:
        self.vault_path = vault_path
        if credentials_dir is None and os.environ.get("CREDENTIALS_DIRECTORY"):
            credentials_dir = Path(os.environ["CREDENTIALS_DIRECTORY"])
        self.credentials_dir = credentials_dir

    def path(self) -> Path | None:
        """The credential's file, or None when this process was given none."""
        if self.credentials_dir is None:
            return None
        path = self.credentials_dir / SYSTEMD_CREDENTIAL
        return path if path.is_file() else None

    def key_for(self, params: bytes, *, promote: bool) -> bytes:
        path = self.path()
        if path is None:
            raise VaultKeyMissing(
                f"{self.vault_path} is encrypted with the systemd credential "
                f"{SYSTEMD_CREDENTIAL}, which only the coactive-credd service is given: "
                f"use the service (`systemctl --user start coactive-credd`), or from it "
                f"`coactive-credd rekey --key-file`"
            )
        return self.read(path)

    def prepare(self) -> NewKey:
        """The credential this process was given, for a rekey (or a first write)."""
        path = self.path()
        if path is None:
            raise VaultKeyMissing(
                f"no systemd credential {SYSTEMD_CREDENTIAL} was given to this process "
                f"($CREDENTIALS_DIRECTORY): add `LoadCredentialEncrypted="
                f"{SYSTEMD_CREDENTIAL}` to the coactive-credd service and run `coactive-credd "
                f"rekey --systemd-credential` from it (`systemd-run --user --pipe -p "
                f"LoadCredentialEncrypted={SYSTEMD_CREDENTIAL} coactive-credd rekey "
                f"--systemd-credential`)"
            )
        key = self.read(path)
        return NewKey(SOURCE_SYSTEMD, key_id(key), key)

    @staticmethod
    def read(path: Path) -> bytes:
        raw = path.read_bytes()
        text = raw.strip()
        if len(raw) == KEY_SIZE:
            return raw
        if len(text) == 2 * KEY_SIZE:
            with contextlib.suppress(ValueError):
                return bytes.fromhex(text.decode("ascii", "replace"))
        raise VaultKeyMissing(
            f"the systemd credential {path} is not a vault key ({KEY_SIZE} random bytes, or "
            f"{2 * KEY_SIZE} hex digits): create it with `head -c {KEY_SIZE} /dev/urandom | "
            f"systemd-creds encrypt --user --name={SYSTEMD_CREDENTIAL} - "
            f"~/.config/credstore.encrypted/{SYSTEMD_CREDENTIAL}`"
        )
