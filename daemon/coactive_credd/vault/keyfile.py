"""The `key-file` key source (the default): a random key in a 0600 file beside the config.

The header records the key's 8-byte id. A rekey writes the new key beside the old one
(``vault.key.new``) first, replaces the vault, and only then renames the new key into place;
a reader that finds a vault naming the pending key uses it (and, holding the exclusive lock,
moves it in).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from coactive_credd.core import fsutil
from coactive_credd.vault.errors import VaultKeyMissing, set_aside
from coactive_credd.vault.format import KEY_SIZE, SOURCE_KEY_FILE, key_id, new_key
from coactive_credd.vault.source import KeySource, NewKey


class KeyFile(KeySource):
    """The key file at `key_path`, for the vault at `vault_path` (named in messages)."""

    code = SOURCE_KEY_FILE
    name = "key-file"

    def __init__(self, vault_path: Path, key_path: Path) -> None:
        self.vault_path = vault_path
        self.key_path = key_path

    @property
    def pending_path(self) -> Path:
        return self.key_path.with_name(self.key_path.name + ".new")

    def key_for(self, params: bytes, *, promote: bool) -> bytes:
        """The key file's key; after a rekey interrupted before its last step, the new key
        still waiting beside it (moved into place when `promote`)."""
        key = self.read(self.key_path, missing_ok=True)
        if key is not None and key_id(key) == params:
            return key
        pending = self.read(self.pending_path, missing_ok=True)
        if pending is not None and key_id(pending) == params:
            if promote:
                self.promote_pending()
            return pending
        if key is None:
            key = self.read(self.key_path, missing_ok=False)
        assert key is not None
        return key  # not the vault's key: decryption fails and says so, opaquely

    def first(self) -> NewKey:
        """The key for a vault written for the first time: the key file's (created if
        needed)."""
        key = self.read(self.key_path, missing_ok=True)
        if key is None:
            fsutil.ensure_private_dir(self.key_path.parent)
            key = new_key()
            fsutil.atomic_write(self.key_path, key)
        return NewKey(SOURCE_KEY_FILE, key_id(key), key)

    def prepare(self) -> NewKey:
        """A new random key written beside the current key file, moved in by `commit`."""
        key = new_key()
        fsutil.ensure_private_dir(self.key_path.parent)
        fsutil.atomic_write(self.pending_path, key)
        return NewKey(SOURCE_KEY_FILE, key_id(key), key, self.promote_pending)

    def promote_pending(self) -> None:
        os.replace(self.pending_path, self.key_path)
        fsutil.fsync_dir(self.key_path.parent)

    def remove(self) -> None:
        """Delete the key file and any pending one (the vault no longer uses them)."""
        for path in (self.key_path, self.pending_path):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def read(self, path: Path, *, missing_ok: bool) -> bytes | None:
        """The 32-byte key in `path` (checked private), or None if missing and `missing_ok`."""
        try:
            fsutil.check_private_dir(path.parent)
            fsutil.check_private_file(path)
            with open(path, "rb") as f:
                key = f.read(KEY_SIZE + 1)
        except FileNotFoundError:
            if missing_ok:
                return None
            raise VaultKeyMissing(
                f"{self.vault_path} needs its key file {path}, which is missing: restore it "
                f"from a backup, or {set_aside(self.vault_path)}"
            ) from None
        if len(key) != KEY_SIZE:
            raise VaultKeyMissing(
                f"{path} is not a coactive-credd vault key (expected {KEY_SIZE} bytes): "
                f"restore it from a backup, or {set_aside(self.vault_path)}"
            )
        return key
