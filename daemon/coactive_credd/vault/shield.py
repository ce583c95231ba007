"""Long-lived secrets kept encrypted in memory, decrypted only for the moment they are used.

OpenSSH does the same for private keys held by ssh-agent ("shielding"): the secret is
sealed with AES-GCM under a key derived from a large random pre-key that exists only in
this process's memory. A core dump, a swapped-out page or a stray memory read then shows
ciphertext, and recovering the secret needs the whole 16 KiB pre-key intact as well; a
few flipped or missing bits of it (as a side-channel read gives) are useless.

Python cannot wipe the `str` handed out by :meth:`Shielded.reveal`; callers keep that
plaintext in a local for the duration of one call and drop it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import NoReturn

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_PREKEY_SIZE = 16 * 1024
_NONCE_SIZE = 12


class _Prekey:
    """The per-process pre-key. A forked child keeps its parent's, which is harmless: it
    only ever protects memory that the child already shares."""

    def __init__(self) -> None:
        self._prekey = bytearray(os.urandom(_PREKEY_SIZE))

    def cipher(self) -> AESGCM:
        return AESGCM(hashlib.sha256(self._prekey).digest())


_PREKEY = _Prekey()


class _Sealed:
    __slots__ = ("_blob",)

    def __init__(self, plaintext: bytes) -> None:
        nonce = os.urandom(_NONCE_SIZE)
        self._blob = nonce + _PREKEY.cipher().encrypt(nonce, plaintext, None)

    def _open(self) -> bytes:
        return _PREKEY.cipher().decrypt(self._blob[:_NONCE_SIZE], self._blob[_NONCE_SIZE:], None)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(***)"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        # Pickling would write the secret (or a ciphertext useless elsewhere) out of process.
        raise TypeError(f"{type(self).__name__} cannot be pickled")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _Sealed) or type(other) is not type(self):
            return NotImplemented
        return hmac.compare_digest(self._open(), other._open())

    __hash__ = None  # type: ignore[assignment]  # equal secrets need not hash equal blobs


class Shielded(_Sealed):
    """A text secret (personal token, client secret) kept encrypted in memory."""

    __slots__ = ()

    def __init__(self, secret: str) -> None:
        super().__init__(secret.encode("utf-8"))

    def reveal(self) -> str:
        return self._open().decode("utf-8")


class ShieldedKey(_Sealed):
    """A binary key (the vault key derived from a passphrase) kept encrypted in memory."""

    __slots__ = ()

    def __init__(self, key: bytes) -> None:
        super().__init__(key)

    def reveal(self) -> bytes:
        return self._open()
