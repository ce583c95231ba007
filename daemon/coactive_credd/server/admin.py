"""Vault writes the daemon makes on the CLI's behalf (``POST /v1/admin/credentials[/remove]``).

With a passphrase vault only the daemon holds the unlocked key; ``coactive-credd login`` and
``logout`` run from a script (no terminal to ask the passphrase on) hand it the change
instead, over the socket that only the daemon's own user may use. The body carries the
credential, so nothing here logs a body or puts a value of it in an error.

Bodies::

    POST /v1/admin/credentials          {"profile", "secret", "client_id": str|null,
                                         "token": {"access_token", "token_type",
                                                   "expires_at", "obtained_at"}|null}
        -> 200 {"ok": true}
    POST /v1/admin/credentials/remove   {"profiles": [name, ...]}
        -> 200 {"ok": true, "removed": [name, ...]}

Errors: 400 ``bad_request`` for a malformed body, 423 ``locked`` when the vault is locked.
The caller writes ``config.toml`` itself and then asks for ``/v1/admin/reload``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from coactive_credd.core import config
from coactive_credd.vault import CachedToken, ProfileSecrets, VaultData

if TYPE_CHECKING:
    from coactive_credd.server.refresh import Daemon

log = logging.getLogger("coactive_credd")


class AdminError(Exception):
    """A refused admin write: (HTTP status, code, message, hint)."""

    def __init__(self, status: int, code: str, message: str, hint: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.hint = status, code, message, hint


def _bad(message: str) -> AdminError:
    return AdminError(400, "bad_request", message, "use `coactive-credd login` or `logout`")


def _name(value: Any) -> str:
    if not isinstance(value, str):
        raise _bad("profile must be a string")
    try:
        return config.check_profile_name(value)
    except ValueError as exc:
        raise _bad(str(exc)) from None


def _token(doc: Any) -> CachedToken | None:
    if doc is None:
        return None
    if not isinstance(doc, dict):
        raise _bad("token must be an object or null")
    try:
        tok = CachedToken(
            access_token=str(doc["access_token"]),
            token_type=str(doc.get("token_type") or "Bearer"),
            expires_at=float(doc["expires_at"]),
            obtained_at=float(doc["obtained_at"]),
        )
    except (KeyError, TypeError, ValueError):
        raise _bad("token needs access_token, expires_at and obtained_at") from None
    return tok


def _check_unlocked(d: Daemon) -> None:
    if d.locked or d.vault.locked:
        raise AdminError(423, "locked", "the vault is locked", "run `coactive-credd unlock`")


async def put_credentials(d: Daemon, doc: dict[str, Any]) -> dict[str, Any]:
    """Store one profile's credential (and the token its login got) in the vault."""
    name = _name(doc.get("profile"))
    secret, client_id = doc.get("secret"), doc.get("client_id")
    if not isinstance(secret, str) or not secret:
        raise _bad("secret must be a non-empty string")
    if client_id is not None and not isinstance(client_id, str):
        raise _bad("client_id must be a string or null")
    cached = _token(doc.get("token"))
    _check_unlocked(d)

    def put(data: VaultData) -> None:
        data.profiles[name] = ProfileSecrets(secret=secret, client_id=client_id, token=cached)

    await _update(d, put)
    log.info("profile=%s credentials stored for the CLI", name)
    return {"ok": True}


async def remove_credentials(d: Daemon, doc: dict[str, Any]) -> dict[str, Any]:
    """Drop the named profiles' credentials and cached tokens from the vault."""
    raw = doc.get("profiles")
    if not isinstance(raw, list):
        raise _bad("profiles must be a list of names")
    names = [_name(n) for n in raw]
    _check_unlocked(d)
    removed: list[str] = []

    def drop(data: VaultData) -> None:
        removed.extend(n for n in names if data.profiles.pop(n, None) is not None)

    await _update(d, drop)
    if removed:
        log.info("credentials removed for the CLI: %s", ", ".join(removed))
    return {"ok": True, "removed": removed}


async def _update(d: Daemon, fn: Any) -> None:
    # Under the lock the token writer takes, so a batch of refreshed tokens and this change
    # never interleave (each re-reads the file under the vault's own flock anyway).
    async with d.persist_lock:
        await asyncio.to_thread(d.vault.update, fn)
