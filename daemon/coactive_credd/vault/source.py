"""What every key source offers the store: a small common interface.

A key source is where a vault's key is held (a file, a passphrase, a systemd credential,
the macOS Keychain, the Secret Service). The vault's header names it by a one-byte code and
carries its parameters (a key id, or scrypt's salt and costs); the store looks the source
up by that code (:class:`Vault._sources`) and asks it for the key.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar


@dataclass
class NewKey:
    """A key prepared by a rekey: held where it must be before the vault rename, and a
    `commit` to run after it."""

    source: int
    params: bytes
    key: bytes
    commit: Callable[[], None] = lambda: None


class KeySource:
    """One place a vault key can live. Subclasses set `code` and `name` and override
    :meth:`key_for`; the rest has safe defaults."""

    code: ClassVar[int]
    name: ClassVar[str]

    def key_for(self, params: bytes, *, promote: bool) -> bytes:
        """The 32-byte key for a vault whose header carries `params`.

        Raises VaultLocked when the key exists but cannot be had now (no passphrase in
        memory, a locked collection), VaultKeyMissing when it is not there. `promote` is
        True when the caller holds the exclusive lock and may tidy up after an interrupted
        rekey."""
        raise NotImplementedError

    def locked(self, params: bytes) -> bool:
        """True when the key exists but cannot be had until someone unlocks it."""
        return False

    def discard(self, params: bytes) -> None:
        """Remove the key named by `params` once a rekey has moved the vault away from it.
        Best effort: a failure leaves an unused key behind, never a vault without one."""
