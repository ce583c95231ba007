"""The vault's exceptions; every message names the file and the command that fixes it.

::

    VaultError                  every message names the file and the command that fixes it
    ├── VaultCorrupt            one opaque message for every decryption or format failure
    ├── VaultVersionError       written by a newer format version
    ├── VaultLocked             passphrase mode and no key in memory, or a locked Secret Service
    ├── VaultKeyMissing         the key the vault names is not available to this process
    ├── VaultInsecure           a vault, key, lock file or folder that is not private
    └── WrongPassphrase         unlock with a passphrase that does not open the vault
"""

from __future__ import annotations

import contextlib
import shlex
from collections.abc import Iterator
from pathlib import Path

from coactive_credd.core import fsutil
from coactive_credd.core.errors import EXIT_LOCKED, CreddError


class VaultError(CreddError):
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

    exit_code = EXIT_LOCKED


class VaultKeyMissing(VaultError):
    """The key the vault was written with is not available to this process."""


class VaultInsecure(VaultError):
    """A vault, key or lock file (or its folder) has loose permissions, a foreign owner, or
    is a symlink. The message comes from :class:`fsutil.InsecurePathError`."""


class WrongPassphrase(VaultError):
    """The passphrase given to unlock does not open the vault."""


class _Undecryptable(VaultError):
    """Internal: any decryption or format failure, turned into VaultCorrupt with the path."""


@contextlib.contextmanager
def _insecure_as_vault_error() -> Iterator[None]:
    try:
        yield
    except fsutil.InsecurePathError as exc:
        raise VaultInsecure(str(exc)) from exc


def set_aside(vault_path: Path) -> str:
    """The tail of a hint: set the vault aside and log in again (shell-quoted)."""
    quoted = shlex.quote(str(vault_path))
    return f"set the vault aside (`mv {quoted} {quoted}.bad`) and run `coactive-credd login` again"
