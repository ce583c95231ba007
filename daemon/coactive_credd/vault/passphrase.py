"""The `passphrase` key source: a key derived with scrypt from a passphrase given at `unlock`.

The header records scrypt's log2(n), r, p and a 16-byte salt. The derived key is kept in
memory, shielded (:mod:`shield`), from :meth:`Passphrase.unlock` until :meth:`Passphrase.lock`
or a rekey; nothing of it is ever written.
"""

from __future__ import annotations

import os
import struct
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from coactive_credd.vault.errors import VaultError, VaultLocked, _Undecryptable
from coactive_credd.vault.format import KEY_SIZE, SOURCE_PASSPHRASE
from coactive_credd.vault.shield import ShieldedKey
from coactive_credd.vault.source import KeySource, NewKey

SALT_SIZE = 16
# scrypt cost (log2 n, r, p): n = 2**17, r = 8, p = 1 is OWASP's recommended minimum and takes
# ~0.33 s and 128 MiB for one derivation on the reference machine (docs/SECURITY.md).
SCRYPT_COST = (17, 8, 1)


@dataclass(frozen=True)
class ScryptParams:
    """scrypt's cost parameters and salt, as recorded in a passphrase vault's header."""

    log2_n: int
    r: int
    p: int
    salt: bytes

    _LAYOUT = struct.Struct(">BBB")

    def encode(self) -> bytes:
        return self._LAYOUT.pack(self.log2_n, self.r, self.p) + self.salt

    @classmethod
    def decode(cls, raw: bytes) -> ScryptParams:
        """Parse header parameters, refusing costs no writer of ours would choose (a forged
        header must not make a reader allocate gigabytes)."""
        if len(raw) != cls._LAYOUT.size + SALT_SIZE:
            raise _Undecryptable
        log2_n, r, p = cls._LAYOUT.unpack_from(raw)
        if not (1 <= log2_n <= 20 and 1 <= r <= 32 and 1 <= p <= 16):
            raise _Undecryptable
        if 128 * r * (1 << log2_n) > 1 << 30:
            raise _Undecryptable
        return cls(log2_n, r, p, raw[cls._LAYOUT.size :])

    @classmethod
    def fresh(cls, cost: tuple[int, int, int] = SCRYPT_COST) -> ScryptParams:
        return cls(*cost, salt=os.urandom(SALT_SIZE))


def derive_key(passphrase: str, params: ScryptParams) -> bytes:
    """The vault key for `passphrase`. NFC-normalised first, so the same passphrase typed
    where the keyboard composes characters differently still opens the vault."""
    kdf = Scrypt(salt=params.salt, length=KEY_SIZE, n=1 << params.log2_n, r=params.r, p=params.p)
    return kdf.derive(unicodedata.normalize("NFC", passphrase).encode("utf-8"))


class Passphrase(KeySource):
    """The passphrase source of the vault at `vault_path`; holds the unlocked key."""

    code = SOURCE_PASSPHRASE
    name = "passphrase"

    def __init__(self, vault_path: Path, scrypt_cost: tuple[int, int, int] = SCRYPT_COST) -> None:
        self.vault_path = vault_path
        self.scrypt_cost = scrypt_cost
        # The passphrase-derived key, shielded, with the header parameters it belongs to.
        self.unlocked: tuple[bytes, ShieldedKey] | None = None

    def key_for(self, params: bytes, *, promote: bool) -> bytes:
        if self.unlocked is not None and self.unlocked[0] == params:
            return self.unlocked[1].reveal()
        again = " again (it was re-keyed)" if self.unlocked is not None else ""
        self.unlocked = None
        raise VaultLocked(
            f"{self.vault_path} is locked (protected by a passphrase): run "
            f"`coactive-credd unlock`{again}"
        )

    def locked(self, params: bytes) -> bool:
        return self.unlocked is None or self.unlocked[0] != params

    def keep(self, params: bytes, key: bytes) -> None:
        """Hold `key` (derived for `params`) in memory until :meth:`lock`."""
        self.unlocked = (params, ShieldedKey(key))

    def lock(self) -> None:
        self.unlocked = None

    def prepare(self, passphrase: str) -> NewKey:
        """A key derived from `passphrase` with fresh salt; `commit` keeps it unlocked."""
        if not passphrase:
            raise VaultError(
                f"an empty passphrase would not protect {self.vault_path}: run "
                f"`coactive-credd rekey --passphrase-stdin` with a passphrase"
            )
        params = ScryptParams.fresh(self.scrypt_cost)
        blob = params.encode()
        key = derive_key(passphrase, params)
        return NewKey(SOURCE_PASSPHRASE, blob, key, lambda: self.keep(blob, key))
