"""The encrypted vault: one file holding every profile's long-lived secret and cached token.

File format (all integers big-endian)::

    offset  size  field
    0       4     magic b"CCDV"
    4       1     format version (1)
    5       1     key source: 1 key file, 2 passphrase (scrypt), 3 systemd credential, 4 keychain
    6       2     length L of the key-source parameters
    8       L     key-source parameters (see below)
    8+L     12    random nonce, fresh on every write
    20+L    ...   AES-256-GCM ciphertext of compact JSON, then the 16-byte tag

The whole header (bytes 0 to 20+L) is the AEAD's associated data, so a changed version,
key source, parameter or nonce fails authentication like a changed ciphertext does.
Raw-key sources record an 8-byte key id (a hash of the key, useless for finding it) so the
right key is chosen after an interrupted rekey; the passphrase source records scrypt's
log2(n), r, p and its 16-byte salt.

Exceptions::

    VaultError                  every message names the file and the command that fixes it
    ├── VaultCorrupt            one opaque message for every decryption or format failure
    ├── VaultVersionError       written by a newer format version
    ├── VaultLocked             passphrase mode and no key in memory
    ├── VaultKeyMissing         the key the vault names is not available to this process
    ├── VaultInsecure           a vault, key, lock file or folder that is not private
    └── WrongPassphrase         unlock with a passphrase that does not open the vault
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from . import fsutil

MAGIC = b"CCDV"
FORMAT_VERSION = 1
KEY_SIZE = 32
NONCE_SIZE = 12
KEY_ID_SIZE = 8

SOURCE_KEY_FILE = 1
SOURCE_PASSPHRASE = 2
SOURCE_SYSTEMD = 3
SOURCE_KEYCHAIN = 4
SOURCE_NAMES = {
    SOURCE_KEY_FILE: "key-file",
    SOURCE_PASSPHRASE: "passphrase",
    SOURCE_SYSTEMD: "systemd-credential",
    SOURCE_KEYCHAIN: "keychain",
}

_PREFIX = struct.Struct(">4sBBH")


# --- errors -----------------------------------------------------------------------------


class VaultError(Exception):
    """Root of every vault failure; the message names the file and the fix."""


class VaultCorrupt(VaultError):
    """The vault failed to decrypt or parse: tampered, truncated, foreign, or the wrong key."""

    def __init__(self, path: Path) -> None:
        self.path = path
        quoted = shlex.quote(str(path))
        super().__init__(
            f"{path} cannot be decrypted: it is damaged, was modified, is not a coactive-credd "
            f"vault, or its key is not the one it was written with. It was left untouched; "
            f"restore it from a backup, or set it aside (`mv {quoted} {quoted}.bad`) and run "
            f"`coactive-credd login` again"
        )


class VaultVersionError(VaultError):
    """The vault was written by a newer coactive-credd."""


class VaultLocked(VaultError):
    """The vault is protected by a passphrase and no key is in memory."""


class VaultKeyMissing(VaultError):
    """The key the vault was written with is not available to this process."""


class VaultInsecure(VaultError):
    """A vault, key or lock file (or its folder) has loose permissions, a foreign owner, or
    is a symlink. The message comes from :class:`fsutil.InsecurePathError`."""


class WrongPassphrase(VaultError):
    """The passphrase given to unlock does not open the vault."""


class _Undecryptable(Exception):
    """Internal: any decryption or format failure, turned into VaultCorrupt with the path."""


@contextlib.contextmanager
def _insecure_as_vault_error() -> Iterator[None]:
    try:
        yield
    except fsutil.InsecurePathError as exc:
        raise VaultInsecure(str(exc)) from exc


# --- data -------------------------------------------------------------------------------


@dataclass
class CachedToken:
    access_token: str = field(repr=False)
    token_type: str
    expires_at: float  # epoch seconds
    obtained_at: float  # epoch seconds


@dataclass(repr=False)
class ProfileSecrets:
    secret: str  # personal token or client secret
    client_id: str | None = None
    token: CachedToken | None = None

    def __repr__(self) -> str:
        return f"ProfileSecrets(secret=***, client_id={self.client_id!r}, token={self.token!r})"


@dataclass
class VaultData:
    profiles: dict[str, ProfileSecrets] = field(default_factory=dict)

    def to_json(self) -> bytes:
        doc: dict[str, Any] = {"profiles": {}}
        for name, prof in self.profiles.items():
            entry: dict[str, Any] = {"secret": prof.secret, "client_id": prof.client_id}
            if prof.token is not None:
                tok = prof.token
                entry["token"] = {
                    "access_token": tok.access_token,
                    "token_type": tok.token_type,
                    "expires_at": tok.expires_at,
                    "obtained_at": tok.obtained_at,
                }
            doc["profiles"][name] = entry
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    @classmethod
    def from_json(cls, raw: bytes) -> VaultData:
        """Parse; any shape error raises _Undecryptable (the caller reports it opaquely)."""
        try:
            doc = json.loads(raw.decode("utf-8"))
            profiles: dict[str, ProfileSecrets] = {}
            for name, entry in doc["profiles"].items():
                token = None
                if entry.get("token") is not None:
                    t = entry["token"]
                    token = CachedToken(
                        access_token=_str(t["access_token"]),
                        token_type=_str(t["token_type"]),
                        expires_at=float(t["expires_at"]),
                        obtained_at=float(t["obtained_at"]),
                    )
                client_id = entry.get("client_id")
                profiles[_str(name)] = ProfileSecrets(
                    secret=_str(entry["secret"]),
                    client_id=None if client_id is None else _str(client_id),
                    token=token,
                )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise _Undecryptable from exc
        return cls(profiles)


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError("expected a string")
    return value


# --- format -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Header:
    source: int
    params: bytes
    nonce: bytes

    def encode(self) -> bytes:
        prefix = _PREFIX.pack(MAGIC, FORMAT_VERSION, self.source, len(self.params))
        return prefix + self.params + self.nonce


def parse(blob: bytes, path: Path) -> tuple[Header, bytes, bytes]:
    """Split a vault file into (header, associated data, ciphertext with tag)."""
    if len(blob) < _PREFIX.size:
        raise _Undecryptable
    magic, version, source, plen = _PREFIX.unpack_from(blob)
    if magic != MAGIC:
        raise _Undecryptable
    if version > FORMAT_VERSION:
        raise VaultVersionError(
            f"{path} was written by a newer coactive-credd (vault format {version}; this "
            f"version reads format {FORMAT_VERSION}): upgrade with "
            f"`pip install --upgrade coactive-credd`"
        )
    if version != FORMAT_VERSION or source not in SOURCE_NAMES:
        raise _Undecryptable
    end = _PREFIX.size + plen + NONCE_SIZE
    if len(blob) < end + 16:
        raise _Undecryptable
    params = blob[_PREFIX.size : _PREFIX.size + plen]
    header = Header(source, params, blob[end - NONCE_SIZE : end])
    return header, blob[:end], blob[end:]


def seal(key: bytes, source: int, params: bytes, plaintext: bytes, nonce: bytes) -> bytes:
    """Encrypt `plaintext` into a complete vault file. `nonce` must be fresh random bytes."""
    aad = Header(source, params, nonce).encode()
    return aad + AESGCM(key).encrypt(nonce, plaintext, aad)


def unseal(key: bytes, aad: bytes, nonce: bytes, ciphertext: bytes) -> bytes:
    try:
        return AESGCM(key).decrypt(nonce, ciphertext, aad)
    except InvalidTag as exc:
        raise _Undecryptable from exc


def key_id(key: bytes) -> bytes:
    """A short public fingerprint naming a raw key without revealing anything about it."""
    return hashlib.sha256(b"coactive-credd vault key id\0" + key).digest()[:KEY_ID_SIZE]


# --- the vault --------------------------------------------------------------------------


@dataclass
class _Opened:
    """What reading the current file gave: its data and how to write it back."""

    data: VaultData
    source: int
    params: bytes
    key: bytes


class Vault:
    """The vault file at `vault_path`, its default key at `key_path`, writers serialised
    by an flock on `lock_path`."""

    def __init__(self, vault_path: Path, key_path: Path, lock_path: Path) -> None:
        self.vault_path = vault_path
        self.key_path = key_path
        self.lock_path = lock_path

    def __repr__(self) -> str:
        return f"Vault({str(self.vault_path)!r}, key_source={self._header_source_name()!r})"

    def exists(self) -> bool:
        return os.path.lexists(self.vault_path)

    @property
    def key_source(self) -> str:
        """How the vault's key is held: "key-file" (or, once written, what its header says)."""
        return self._header_source_name()

    @property
    def locked(self) -> bool:
        """True when the vault cannot be opened until :meth:`unlock`."""
        return False

    def load(self) -> VaultData:
        """Read and decrypt the vault; an empty VaultData if there is none yet."""
        with _insecure_as_vault_error():
            if not self.exists():
                return VaultData()
            fsutil.check_private_dir(self.vault_path.parent)
            with fsutil.locked(self.lock_path, shared=True):
                opened = self._read()
        return opened.data if opened is not None else VaultData()

    def update(self, fn: Callable[[VaultData], None]) -> VaultData:
        """Read the current vault under an exclusive lock, let `fn` change it, write it back
        atomically and return it. Two processes updating at once both keep their changes.
        Nothing is written if the current file cannot be opened."""
        with _insecure_as_vault_error():
            fsutil.ensure_private_dir(self.vault_path.parent)
            with fsutil.locked(self.lock_path):
                opened = self._read()
                if opened is None:
                    data = VaultData()
                    source, params, key = self._new_key()
                else:
                    data, source, params, key = (
                        opened.data,
                        opened.source,
                        opened.params,
                        opened.key,
                    )
                fn(data)
                self._write(key, source, params, data)
        return data

    # --- internals ----------------------------------------------------------------------

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

    def _header_source_name(self) -> str:
        with _insecure_as_vault_error():
            parsed = self._read_header()
        if parsed is None:
            return SOURCE_NAMES[SOURCE_KEY_FILE]
        return SOURCE_NAMES[parsed[0].source]

    def _read(self) -> _Opened | None:
        """Open the current file; the caller holds the lock."""
        parsed = self._read_header()
        if parsed is None:
            return None
        header, aad, ciphertext = parsed
        key = self._key_for(header)
        try:
            data = VaultData.from_json(unseal(key, aad, header.nonce, ciphertext))
        except _Undecryptable as exc:
            raise VaultCorrupt(self.vault_path) from exc
        return _Opened(data, header.source, header.params, key)

    def _key_for(self, header: Header) -> bytes:
        if header.source == SOURCE_KEY_FILE:
            return self._read_key_file(self.key_path)
        raise VaultCorrupt(self.vault_path)

    def _read_key_file(self, path: Path) -> bytes:
        quoted_vault = shlex.quote(str(self.vault_path))
        try:
            fsutil.check_private_dir(path.parent)
            fsutil.check_private_file(path)
            with open(path, "rb") as f:
                key = f.read(KEY_SIZE + 1)
        except FileNotFoundError:
            raise VaultKeyMissing(
                f"{self.vault_path} needs its key file {path}, which is missing: restore it "
                f"from a backup, or set the vault aside (`mv {quoted_vault} "
                f"{quoted_vault}.bad`) and run `coactive-credd login` again"
            ) from None
        if len(key) != KEY_SIZE:
            raise VaultKeyMissing(
                f"{path} is not a coactive-credd vault key (expected {KEY_SIZE} bytes): "
                f"restore it from a backup, or set the vault aside (`mv {quoted_vault} "
                f"{quoted_vault}.bad`) and run `coactive-credd login` again"
            )
        return key

    def _new_key(self) -> tuple[int, bytes, bytes]:
        """The key for a vault written for the first time: the key file, created if needed."""
        if os.path.lexists(self.key_path):
            key = self._read_key_file(self.key_path)
        else:
            fsutil.ensure_private_dir(self.key_path.parent)
            key = AESGCM.generate_key(bit_length=KEY_SIZE * 8)
            fsutil.atomic_write(self.key_path, key)
        return SOURCE_KEY_FILE, key_id(key), key

    def _write(self, key: bytes, source: int, params: bytes, data: VaultData) -> None:
        blob = seal(key, source, params, data.to_json(), os.urandom(NONCE_SIZE))
        fsutil.atomic_write(self.vault_path, blob)
