"""The vault store: read, read-modify-write under an flock, and rekey, whatever the key source.

The key source is looked up by the header's code in :attr:`Vault.sources`; each source is
one module of this package (:mod:`.keyfile`, :mod:`.passphrase`, :mod:`.systemd`,
:mod:`.keychain`, :mod:`.secretservice`).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from coactive_credd.core import fsutil
from coactive_credd.vault.errors import (
    VaultCorrupt,
    VaultError,
    WrongPassphrase,
    _insecure_as_vault_error,
    _Undecryptable,
)
from coactive_credd.vault.format import (
    NONCE_SIZE,
    SOURCE_KEY_FILE,
    SOURCE_NAMES,
    SOURCE_PASSPHRASE,
    SOURCE_SYSTEMD,
    Header,
    VaultData,
    parse,
    seal,
    unseal,
)
from coactive_credd.vault.keychain import Keychain, KeychainSource
from coactive_credd.vault.keyfile import KeyFile
from coactive_credd.vault.passphrase import SCRYPT_COST, Passphrase, ScryptParams, derive_key
from coactive_credd.vault.secretservice import SecretService
from coactive_credd.vault.shield import ShieldedKey
from coactive_credd.vault.source import KeySource, NewKey
from coactive_credd.vault.systemd import SystemdCredential


@dataclass
class _Opened:
    """What reading the current file gave: its data and how to write it back."""

    data: VaultData
    source: int
    params: bytes
    key: bytes


class Vault:
    """The vault file at `vault_path`, its default key at `key_path`, writers serialised
    by an flock on `lock_path`.

    The key a vault was written with is named by its header: the key file, a passphrase
    (derived with scrypt, kept in memory after :meth:`unlock` until :meth:`lock`), the
    systemd credential ``coactive-credd.key`` in ``$CREDENTIALS_DIRECTORY``, a Keychain
    item, or a Secret Service item. A new vault uses the systemd credential when the
    service was given one, the key file otherwise; the ``rekey_to_*`` methods move a vault
    from one to another.
    """

    def __init__(
        self,
        vault_path: Path,
        key_path: Path,
        lock_path: Path,
        *,
        credentials_dir: Path | None = None,
        keychain: Keychain | None = None,
        scrypt_cost: tuple[int, int, int] = SCRYPT_COST,
        wrong_passphrase_delay: float = 1.0,
    ) -> None:
        self.vault_path = vault_path
        self.key_path = key_path
        self.lock_path = lock_path
        self.keychain = keychain if keychain is not None else Keychain()
        self.wrong_passphrase_delay = wrong_passphrase_delay
        self.key_file = KeyFile(vault_path, key_path)
        self.passphrase = Passphrase(vault_path, scrypt_cost)
        self.systemd = SystemdCredential(vault_path, credentials_dir)
        self.keychain_source = KeychainSource(vault_path, self.keychain)
        self.secret_service = SecretService(vault_path)
        self.sources: dict[int, KeySource] = {
            s.code: s
            for s in (
                self.key_file,
                self.passphrase,
                self.systemd,
                self.keychain_source,
                self.secret_service,
            )
        }

    def __repr__(self) -> str:
        return f"Vault({str(self.vault_path)!r})"

    @property
    def credentials_dir(self) -> Path | None:
        return self.systemd.credentials_dir

    @property
    def scrypt_cost(self) -> tuple[int, int, int]:
        return self.passphrase.scrypt_cost

    @property
    def _unlocked(self) -> tuple[bytes, ShieldedKey] | None:
        return self.passphrase.unlocked

    @property
    def _pending_key_path(self) -> Path:
        return self.key_file.pending_path

    def exists(self) -> bool:
        return os.path.lexists(self.vault_path)

    def header(self) -> Header | None:
        """The current file's header (key source and its parameters), None if no vault."""
        with _insecure_as_vault_error():
            parsed = self._read_header()
        return parsed[0] if parsed is not None else None

    @property
    def key_source(self) -> str:
        """How the vault's key is held: "key-file", "passphrase", "systemd-credential",
        "keychain" or "secret-service" (for a vault not written yet, the source its first
        write will use)."""
        header = self.header()
        if header is not None:
            return SOURCE_NAMES[header.source]
        return SOURCE_NAMES[SOURCE_SYSTEMD if self.systemd.path() else SOURCE_KEY_FILE]

    @property
    def locked(self) -> bool:
        """True when the vault's key exists but cannot be had now: a passphrase vault this
        process has not unlocked (or that was re-keyed since), or a Secret Service item in a
        locked collection."""
        header = self.header()
        if header is None:
            return False
        return self.sources[header.source].locked(header.params)

    def load(self) -> VaultData:
        """Read and decrypt the vault; an empty VaultData if there is none yet."""
        with _insecure_as_vault_error():
            if not self.exists():
                return VaultData()
            fsutil.check_private_dir(self.vault_path.parent)
            with fsutil.locked(self.lock_path, shared=True):
                opened = self._read(promote=False)
        return opened.data if opened is not None else VaultData()

    def update(self, fn: Callable[[VaultData], None]) -> VaultData:
        """Read the current vault under an exclusive lock, let `fn` change it, write it back
        atomically and return it. Two processes updating at once both keep their changes.
        Nothing is written if the current file cannot be opened."""
        with self._exclusive():
            opened = self._read(promote=True)
            if opened is None:
                data = VaultData()
                new = self._first_key()
                source, params, key = new.source, new.params, new.key
            else:
                data, source, params, key = opened.data, opened.source, opened.params, opened.key
            fn(data)
            self._write(key, source, params, data)
        return data

    # --- passphrase ---------------------------------------------------------------------

    def unlock(self, passphrase: str) -> VaultData:
        """Derive the key from `passphrase` (~0.3 s, 128 MiB), check it opens the vault,
        and keep it in memory (shielded) until :meth:`lock`. Returns the vault's content.

        Raises WrongPassphrase, after `wrong_passphrase_delay` seconds, when it does not.
        Blocking: call it from a worker thread in an event loop."""
        with _insecure_as_vault_error():
            fsutil.check_private_dir(self.vault_path.parent)
            with fsutil.locked(self.lock_path, shared=True):
                parsed = self._read_header()
                if parsed is None or parsed[0].source != SOURCE_PASSPHRASE:
                    source = SOURCE_NAMES[parsed[0].source] if parsed else "none yet"
                    raise VaultError(
                        f"{self.vault_path} is not protected by a passphrase (key source: "
                        f"{source}), so there is nothing to unlock; to add one run "
                        f"`coactive-credd rekey --passphrase-stdin`"
                    )
                header, aad, ciphertext = parsed
                try:
                    params = ScryptParams.decode(header.params)
                except _Undecryptable as exc:
                    raise VaultCorrupt(self.vault_path) from exc
        # Derive and try outside the lock: writers need not wait for scrypt.
        key = derive_key(passphrase, params)
        try:
            data = VaultData.from_json(unseal(key, aad, header.nonce, ciphertext))
        except _Undecryptable:
            time.sleep(self.wrong_passphrase_delay)
            raise WrongPassphrase(
                f"that passphrase does not open {self.vault_path}; the vault is unchanged: "
                f"try again with `coactive-credd unlock`"
            ) from None
        self.passphrase.keep(header.params, key)
        return data

    def lock(self) -> None:
        """Forget the passphrase-derived key (and a remembered Secret Service key). The vault
        stays as it is on disk."""
        self.passphrase.lock()
        self.secret_service.forget()

    # --- rekey --------------------------------------------------------------------------

    def rekey_to_passphrase(self, passphrase: str) -> None:
        """Re-encrypt under a key derived from `passphrase`; the vault stays unlocked in
        this process. The key file (or Keychain item) is removed once the vault is replaced."""
        if not passphrase:
            self.passphrase.prepare(passphrase)  # raises: an empty passphrase protects nothing
        self._rekey(lambda: self.passphrase.prepare(passphrase))

    def rekey_to_key_file(self) -> None:
        """Re-encrypt under a new random key file at `key_path`.

        The new key is written beside the old one first; the vault is replaced; only then
        does the new key file take the old one's name. A crash between the last two steps
        leaves a vault whose header names the new key, which readers find and move in."""
        self._rekey(self.key_file.prepare)

    def rekey_to_systemd_credential(self) -> None:
        """Re-encrypt under the systemd credential this process was given."""
        self._rekey(self.systemd.prepare)

    def rekey_to_keychain(self) -> None:
        """Re-encrypt under a new random key kept in the macOS login Keychain."""
        self._rekey(self.keychain_source.prepare)

    def rekey_to_secret_service(self) -> None:
        """Re-encrypt under a new random key kept in the Secret Service's default
        collection; the key file is removed once the vault is replaced."""
        self._rekey(self.secret_service.prepare)

    def _rekey(self, prepare: Callable[[], NewKey]) -> None:
        """Re-encrypt the current content under the key `prepare` puts in place.

        Order: (1) open the vault with its current key, (2) make the new key available
        (written to disk, the Keychain or the Secret Service), (3) replace the vault
        atomically, (4) commit the new key and drop the old one. A crash before (3) leaves
        the old vault with its old key untouched; after (3), the new vault and its new key."""
        with self._exclusive():
            opened = self._read(promote=True)
            data = opened.data if opened is not None else VaultData()
            new = prepare()
            self._write(new.key, new.source, new.params, data)
            new.commit()
            self.secret_service.forget()
            if new.source != SOURCE_PASSPHRASE:
                self.passphrase.lock()
            if new.source != SOURCE_KEY_FILE:
                self.key_file.remove()
            if opened is not None and (new.source, new.params) != (
                opened.source,
                opened.params,
            ):
                self.sources[opened.source].discard(opened.params)

    # --- internals ----------------------------------------------------------------------

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        with _insecure_as_vault_error():
            fsutil.ensure_private_dir(self.vault_path.parent)
            with fsutil.locked(self.lock_path):
                # Every writer of these files holds this lock: temporaries seen now were
                # left by a writer that died mid-write.
                for path in (self.vault_path, self.key_path, self._pending_key_path):
                    fsutil.remove_stale_temps(path)
                yield

    def _read_header(self) -> tuple[Header, bytes, bytes] | None:
        try:
            fsutil.check_private_file(self.vault_path)
        except FileNotFoundError:
            return None
        with open(self.vault_path, "rb") as f:
            blob = f.read()
        try:
            return parse(blob, self.vault_path)
        except _Undecryptable as exc:
            raise VaultCorrupt(self.vault_path) from exc

    def _read(self, *, promote: bool) -> _Opened | None:
        """Open the current file; the caller holds the lock (exclusive when `promote`)."""
        parsed = self._read_header()
        if parsed is None:
            return None
        header, aad, ciphertext = parsed
        key = self._key_for(header, promote=promote)
        try:
            data = VaultData.from_json(unseal(key, aad, header.nonce, ciphertext))
        except _Undecryptable as exc:
            raise VaultCorrupt(self.vault_path) from exc
        return _Opened(data, header.source, header.params, key)

    def _key_for(self, header: Header, *, promote: bool) -> bytes:
        return self.sources[header.source].key_for(header.params, promote=promote)

    def _first_key(self) -> NewKey:
        """The key for a vault written for the first time: the systemd credential when the
        service has one, otherwise the key file (created if needed)."""
        if self.systemd.path() is not None:
            return self.systemd.prepare()
        return self.key_file.first()

    def _write(self, key: bytes, source: int, params: bytes, data: VaultData) -> None:
        blob = seal(key, source, params, data.to_json(), os.urandom(NONCE_SIZE))
        fsutil.atomic_write(self.vault_path, blob)
