"""The `keychain` key source (macOS): a random key kept as a generic password in the user's
login Keychain, through ``/usr/bin/security``. The header records the key id, which names
the item (``coactive-credd`` / ``vault-key-<id>``).
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

from coactive_credd.vault.errors import VaultError, VaultKeyMissing, set_aside
from coactive_credd.vault.format import KEY_SIZE, SOURCE_KEYCHAIN, key_id, new_key
from coactive_credd.vault.source import KeySource, NewKey

KEYCHAIN_SERVICE = "coactive-credd"


class Keychain:
    """Vault keys kept as generic passwords in the user's login Keychain, through
    `/usr/bin/security`. The key goes to `security -i` on standard input, never in argv."""

    def __init__(self, command: Sequence[str] = ("/usr/bin/security",)) -> None:
        self.command = list(command)

    @staticmethod
    def account(kid: bytes) -> str:
        return f"vault-key-{kid.hex()}"

    def _run(self, args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                [*self.command, *args],
                input=stdin,
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise VaultKeyMissing(
                f"the macOS Keychain cannot be reached through {self.command[0]} "
                f"({type(exc).__name__}): run this on the Mac that holds the vault key, or "
                f"`coactive-credd rekey --key-file` there"
            ) from None

    def load(self, kid: bytes) -> bytes | None:
        """The key stored under `kid`, or None if the Keychain has no such item."""
        done = self._run(
            ["find-generic-password", "-s", KEYCHAIN_SERVICE, "-a", self.account(kid), "-w"]
        )
        if done.returncode == 44:  # errSecItemNotFound
            return None
        if done.returncode != 0:
            raise VaultKeyMissing(
                f"the Keychain refused to give the vault key (item {KEYCHAIN_SERVICE}/"
                f"{self.account(kid)}, security exit {done.returncode}): unlock the login "
                f"keychain (`security unlock-keychain`) and try again"
            )
        try:
            key = bytes.fromhex(done.stdout.strip())
        except ValueError:
            return None
        return key if len(key) == KEY_SIZE else None

    def store(self, kid: bytes, key: bytes) -> None:
        account = self.account(kid)
        line = (
            f"add-generic-password -U -s {KEYCHAIN_SERVICE} -a {account} "
            f"-l coactive-credd-vault-key -w {key.hex()}\n"
        )
        done = self._run(["-i"], stdin=line)
        # `security -i` reports a failed command on stderr but may still exit 0; check by
        # reading the item back.
        if done.returncode != 0 or self.load(kid) != key:
            raise VaultError(
                f"could not store the vault key in the Keychain (item {KEYCHAIN_SERVICE}/"
                f"{account}): unlock the login keychain (`security unlock-keychain`) and run "
                f"`coactive-credd rekey --keychain` again"
            )

    def delete(self, kid: bytes) -> None:
        self._run(["delete-generic-password", "-s", KEYCHAIN_SERVICE, "-a", self.account(kid)])


class KeychainSource(KeySource):
    """The Keychain source of the vault at `vault_path`, through `keychain`."""

    code = SOURCE_KEYCHAIN
    name = "keychain"

    def __init__(self, vault_path: Path, keychain: Keychain) -> None:
        self.vault_path = vault_path
        self.keychain = keychain

    @contextlib.contextmanager
    def _naming_vault(self) -> Iterator[None]:
        """Prefix errors from the Keychain with the vault they concern."""
        try:
            yield
        except VaultError as exc:
            raise type(exc)(f"{self.vault_path}: {exc}") from None

    def key_for(self, params: bytes, *, promote: bool) -> bytes:
        with self._naming_vault():
            key = self.keychain.load(params)
        if key is None:
            raise VaultKeyMissing(
                f"{self.vault_path} is encrypted with a key from the macOS Keychain (item "
                f"{KEYCHAIN_SERVICE}/{Keychain.account(params)}), which is not there: "
                f"restore the login keychain, or {set_aside(self.vault_path)}"
            )
        return key

    def prepare(self) -> NewKey:
        """A new random key, stored in the Keychain before the vault is replaced."""
        key = new_key()
        kid = key_id(key)
        with self._naming_vault():
            self.keychain.store(kid, key)
        return NewKey(SOURCE_KEYCHAIN, kid, key)

    def discard(self, params: bytes) -> None:
        self.keychain.delete(params)
