"""The encrypted vault: one file holding every profile's long-lived secret and cached token.

The package's modules, by responsibility:

- :mod:`.format`: the file format (header, AES-256-GCM sealing, the JSON inside);
- :mod:`.errors`: the exceptions, each naming the file and the command that fixes it;
- :mod:`.store`: :class:`Vault`, read and read-modify-write under an flock, and rekey;
- :mod:`.source`: the small interface every key source offers the store;
- one module per key source: :mod:`.keyfile` (``key-file``), :mod:`.passphrase`
  (``passphrase``), :mod:`.systemd` (``systemd-credential``), :mod:`.keychain`
  (``keychain``, macOS), :mod:`.secretservice` (``secret-service``, Linux desktops).

Every name other modules use is exported here.
"""

from __future__ import annotations

from coactive_credd.core import fsutil
from coactive_credd.vault.errors import (
    VaultCorrupt,
    VaultError,
    VaultInsecure,
    VaultKeyMissing,
    VaultLocked,
    VaultVersionError,
    WrongPassphrase,
    _insecure_as_vault_error,
    _Undecryptable,
)
from coactive_credd.vault.format import (
    FORMAT_VERSION,
    KEY_ID_SIZE,
    KEY_SIZE,
    MAGIC,
    NONCE_SIZE,
    SOURCE_KEY_FILE,
    SOURCE_KEYCHAIN,
    SOURCE_NAMES,
    SOURCE_PASSPHRASE,
    SOURCE_SECRET_SERVICE,
    SOURCE_SYSTEMD,
    CachedToken,
    Header,
    ProfileSecrets,
    VaultData,
    key_id,
    parse,
    seal,
    unseal,
)
from coactive_credd.vault.keychain import KEYCHAIN_SERVICE, Keychain
from coactive_credd.vault.passphrase import SALT_SIZE, SCRYPT_COST, ScryptParams, derive_key
from coactive_credd.vault.source import KeySource, NewKey
from coactive_credd.vault.store import Vault
from coactive_credd.vault.systemd import SYSTEMD_CREDENTIAL

__all__ = [
    "FORMAT_VERSION",
    "KEYCHAIN_SERVICE",
    "KEY_ID_SIZE",
    "KEY_SIZE",
    "MAGIC",
    "NONCE_SIZE",
    "SALT_SIZE",
    "SCRYPT_COST",
    "SOURCE_KEYCHAIN",
    "SOURCE_KEY_FILE",
    "SOURCE_NAMES",
    "SOURCE_PASSPHRASE",
    "SOURCE_SECRET_SERVICE",
    "SOURCE_SYSTEMD",
    "SYSTEMD_CREDENTIAL",
    "CachedToken",
    "Header",
    "KeySource",
    "Keychain",
    "NewKey",
    "ProfileSecrets",
    "ScryptParams",
    "Vault",
    "VaultCorrupt",
    "VaultData",
    "VaultError",
    "VaultInsecure",
    "VaultKeyMissing",
    "VaultLocked",
    "VaultVersionError",
    "WrongPassphrase",
    "_Undecryptable",
    "_insecure_as_vault_error",
    "derive_key",
    "fsutil",
    "key_id",
    "parse",
    "seal",
    "unlock_hint",
    "unseal",
]


def unlock_hint(key_source: str) -> str:
    """How to unlock a vault whose key comes from `key_source` (for a `locked` answer)."""
    if key_source == "secret-service":
        return (
            "unlock the login keyring (the Secret Service collection holding the vault key); "
            "the daemon serves again by itself"
        )
    return "run `coactive-credd unlock`"
