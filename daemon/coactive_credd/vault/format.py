"""The vault file's format and content: header, AEAD sealing, and the JSON inside.

File format (all integers big-endian)::

    offset  size  field
    0       4     magic b"CCDV"
    4       1     format version (1)
    5       1     key source: 1 key file, 2 passphrase (scrypt), 3 systemd credential,
                  4 keychain, 5 Secret Service
    6       2     length L of the key-source parameters
    8       L     key-source parameters (see below)
    8+L     12    random nonce, fresh on every write
    20+L    ...   AES-256-GCM ciphertext of compact JSON, then the 16-byte tag

The whole header (bytes 0 to 20+L) is the AEAD's associated data, so a changed version,
key source, parameter or nonce fails authentication like a changed ciphertext does.
Raw-key sources record an 8-byte key id (a hash of the key, useless for finding it) so the
right key is chosen after an interrupted rekey; the passphrase source records scrypt's
log2(n), r, p and its 16-byte salt.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from coactive_credd.vault.errors import VaultVersionError, _Undecryptable

MAGIC = b"CCDV"
FORMAT_VERSION = 1
KEY_SIZE = 32
NONCE_SIZE = 12
KEY_ID_SIZE = 8

SOURCE_KEY_FILE = 1
SOURCE_PASSPHRASE = 2
SOURCE_SYSTEMD = 3
SOURCE_KEYCHAIN = 4
SOURCE_SECRET_SERVICE = 5
SOURCE_NAMES = {
    SOURCE_KEY_FILE: "key-file",
    SOURCE_PASSPHRASE: "passphrase",
    SOURCE_SYSTEMD: "systemd-credential",
    SOURCE_KEYCHAIN: "keychain",
    SOURCE_SECRET_SERVICE: "secret-service",
}

_PREFIX = struct.Struct(">4sBBH")


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


def new_key() -> bytes:
    """A fresh random AES-256 key (32 bytes)."""
    return AESGCM.generate_key(bit_length=KEY_SIZE * 8)
