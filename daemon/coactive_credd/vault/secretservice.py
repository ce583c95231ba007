"""The `secret-service` key source (Linux desktops): a random key kept as an item in the
freedesktop.org Secret Service (GNOME Keyring, KWallet, KeePassXC) over the D-Bus session.

The item sits in the default collection (the login keyring), with the attributes
``application=coactive-credd`` and ``key-id=<16 hex digits>`` (the header's key id) and the
key as 64 hex digits; ``secret-tool search application coactive-credd`` lists it. Nothing is
written beside the vault. A locked collection is :class:`VaultLocked` (the daemon's watcher,
:mod:`coactive_credd.server.keywatch`, notices an unlock by itself); no D-Bus session, no Secret
Service on it, or no such item is :class:`VaultKeyMissing` with the fix — never a quiet
fallback to a key file.

It talks to the service with ``secretstorage`` (pure Python, on ``jeepney``), imported only
when a vault with this source is opened, so ``token`` and ``status`` never load it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from coactive_credd.vault.errors import VaultError, VaultKeyMissing, VaultLocked, set_aside
from coactive_credd.vault.format import KEY_SIZE, SOURCE_SECRET_SERVICE, key_id, new_key
from coactive_credd.vault.shield import ShieldedKey
from coactive_credd.vault.source import KeySource, NewKey

if TYPE_CHECKING:
    import secretstorage

APPLICATION = "coactive-credd"
LABEL = "coactive-credd vault key"
BUS_NAME = "org.freedesktop.secrets"
CALL_TIMEOUT = 10.0  # seconds for one D-Bus call

State = Literal["unlocked", "locked", "missing"]


def attributes(kid: bytes) -> dict[str, str]:
    """The item's lookup attributes for key id `kid`."""
    return {"application": APPLICATION, "key-id": kid.hex()}


class SecretService(KeySource):
    """The Secret Service source of the vault at `vault_path`."""

    code = SOURCE_SECRET_SERVICE
    name = "secret-service"

    def __init__(self, vault_path: Path) -> None:
        self.vault_path = vault_path
        # The daemon, whose watcher (:mod:`coactive_credd.server.keywatch`) follows the lock state,
        # sets `remember`: the key is then kept shielded in memory (like an unlocked
        # passphrase's) until :meth:`forget`, so reloads and writes need no D-Bus call.
        self.remember = False
        self._remembered: tuple[bytes, ShieldedKey] | None = None
        self._kept: Any = None  # the watcher's connection, kept between looks

    # --- the KeySource interface ---------------------------------------------------------

    def key_for(self, params: bytes, *, promote: bool) -> bytes:
        if self._remembered is not None and self._remembered[0] == params:
            return self._remembered[1].reveal()
        key = self._fetch(params)
        if self.remember:
            self._remembered = (params, ShieldedKey(key))
        return key

    def forget(self) -> None:
        """Drop the remembered key (the collection was locked, or the vault re-keyed)."""
        self._remembered = None

    def _fetch(self, params: bytes) -> bytes:
        import secretstorage

        with self._session() as conn:
            item = self._item(conn, params)
            if item is None:
                raise VaultKeyMissing(self._missing(params))
            try:
                if item.is_locked():
                    raise VaultLocked(self._locked_message())
                secret = item.get_secret()
            except secretstorage.exceptions.LockedException:
                raise VaultLocked(self._locked_message()) from None
        try:
            key = bytes.fromhex(secret.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            key = b""
        if len(key) != KEY_SIZE or key_id(key) != params:
            raise VaultKeyMissing(
                f"{self.vault_path}: the Secret Service item {self._describe(params)} does not "
                f"hold this vault's key: restore the login keyring, or "
                f"{set_aside(self.vault_path)}"
            )
        return key

    def locked(self, params: bytes) -> bool:
        """True only when the item is there and locked; an unreachable service is not
        "locked" (reading the key then says what is wrong)."""
        try:
            return self.state(params) == "locked"
        except VaultError:
            return False

    def discard(self, params: bytes) -> None:
        with contextlib.suppress(VaultError), self._session() as conn:
            import secretstorage

            for item in secretstorage.search_items(conn, attributes(params)):
                with contextlib.suppress(secretstorage.exceptions.SecretStorageException):
                    item.delete()

    # --- more ----------------------------------------------------------------------------

    def state(self, params: bytes, *, keep: bool = False) -> State:
        """Whether the item for `params` is there and unlocked, without reading its secret.
        Raises VaultKeyMissing when no Secret Service answers. With `keep` (the daemon's
        watcher, one caller at a time) the connection stays open for the next look."""
        if not keep:
            with self._session() as conn:
                return self._state(conn, params)
        if self._kept is None:
            session = self._session()
            self._kept = (session, session.__enter__())
        session, conn = self._kept
        try:
            return self._state(conn, params)
        except BaseException as exc:
            self._kept = None
            with contextlib.suppress(Exception):
                session.__exit__(type(exc), exc, exc.__traceback__)
            raise VaultKeyMissing(
                f"{self.vault_path} keeps its key in the Secret Service, which stopped "
                f"answering on this D-Bus session ({type(exc).__name__}): start it again"
            ) from None

    def _state(self, conn: Any, params: bytes) -> State:
        item = self._item(conn, params)
        if item is None:
            return "missing"
        return "locked" if item.is_locked() else "unlocked"

    def prepare(self) -> NewKey:
        """A new random key, stored in the default collection before the vault is replaced."""
        import secretstorage

        key = new_key()
        kid = key_id(key)
        again = "`coactive-credd rekey --secret-service` again"
        with self._session() as conn:
            try:
                collection = secretstorage.get_default_collection(conn)
                if collection.is_locked():
                    raise VaultError(
                        f"{self.vault_path}: the Secret Service's default collection (the "
                        f"login keyring) is locked, so the vault key cannot be stored there: "
                        f"unlock it (log in to the desktop, or open it in Passwords and Keys) "
                        f"and run {again}; the vault is unchanged"
                    )
                collection.create_item(
                    LABEL, attributes(kid), key.hex().encode("ascii"), replace=True
                )
            except secretstorage.exceptions.SecretStorageException as exc:
                raise VaultError(
                    f"{self.vault_path}: the Secret Service did not store the vault key "
                    f"({type(exc).__name__}): unlock the login keyring and run {again}; the "
                    f"vault is unchanged"
                ) from None
            stored = self._item(conn, kid)
            if stored is None or stored.get_secret() != key.hex().encode("ascii"):
                raise VaultError(
                    f"{self.vault_path}: the Secret Service did not keep the vault key: run "
                    f"{again}; the vault is unchanged"
                )
        return NewKey(SOURCE_SECRET_SERVICE, kid, key)

    # --- internals -----------------------------------------------------------------------

    @contextlib.contextmanager
    def _session(self) -> Iterator[Any]:
        """A connection to the D-Bus session with a Secret Service on it (jeepney's
        DBusConnection, untyped), closed after."""
        fix = (
            "run coactive-credd in the desktop session (for the user service: `systemctl "
            "--user import-environment DBUS_SESSION_BUS_ADDRESS`), or there run "
            "`coactive-credd rekey --key-file`"
        )
        if not os.environ.get("DBUS_SESSION_BUS_ADDRESS"):
            raise VaultKeyMissing(
                f"{self.vault_path} keeps its key in the Secret Service, but this process has "
                f"no D-Bus session (DBUS_SESSION_BUS_ADDRESS is unset): {fix}"
            )
        try:
            import secretstorage
        except ImportError:
            raise VaultKeyMissing(
                f"{self.vault_path} keeps its key in the Secret Service, which needs the "
                f"Python package secretstorage: `pip install secretstorage`"
            ) from None
        try:
            conn = secretstorage.dbus_init()
        except secretstorage.exceptions.SecretServiceNotAvailableException:
            raise VaultKeyMissing(
                f"{self.vault_path} keeps its key in the Secret Service, but the D-Bus session "
                f"(DBUS_SESSION_BUS_ADDRESS) cannot be reached: {fix}"
            ) from None
        # Every call is bounded: a Secret Service that hangs is an error, not a hang.
        unbounded = conn.send_and_get_reply

        def bounded(message: Any, *, timeout: float = CALL_TIMEOUT) -> Any:
            return unbounded(message, timeout=timeout)

        conn.send_and_get_reply = bounded
        stopped = (
            f"{self.vault_path} keeps its key in the Secret Service, which stopped answering on "
            f"this D-Bus session: start it again (GNOME Keyring: `gnome-keyring-daemon --start "
            f"--components=secrets`)"
        )
        try:
            if not secretstorage.check_service_availability(conn):
                raise VaultKeyMissing(
                    f"{self.vault_path} keeps its key in the Secret Service, but none runs on "
                    f"this D-Bus session ({BUS_NAME} has no owner): start one (GNOME Keyring: "
                    f"`gnome-keyring-daemon --start --components=secrets`; or KWallet, "
                    f"KeePassXC), or where one runs `coactive-credd rekey --key-file`"
                )
            yield conn
        except secretstorage.exceptions.SecretServiceNotAvailableException:
            raise VaultKeyMissing(stopped) from None
        except TimeoutError:
            late = f"did not answer within {CALL_TIMEOUT:g} s"
            raise VaultKeyMissing(stopped.replace("stopped answering", late)) from None
        finally:
            conn.close()

    @staticmethod
    def _item(conn: Any, kid: bytes) -> secretstorage.Item | None:
        import secretstorage

        for item in secretstorage.search_items(conn, attributes(kid)):
            return item
        return None

    def _describe(self, kid: bytes) -> str:
        return f"application={APPLICATION} key-id={kid.hex()}"

    def _missing(self, kid: bytes) -> str:
        return (
            f"{self.vault_path} is encrypted with a key from the Secret Service (item "
            f"{self._describe(kid)}), which is not there: restore the login keyring, or "
            f"{set_aside(self.vault_path)}"
        )

    def _locked_message(self) -> str:
        return (
            f"{self.vault_path} is locked: its key is in a locked Secret Service collection; "
            f"unlock the login keyring (log in to the desktop, or open it in Passwords and "
            f"Keys) and the daemon resumes by itself"
        )
