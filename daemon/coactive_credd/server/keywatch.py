"""The daemon's watch on a key source that can lock and unlock by itself (the Secret Service).

A desktop locks and unlocks its login keyring without telling coactive-credd: the screen
locks, the user logs in, a PAM module unlocks it (which emits no D-Bus signal at all). So
while the vault's key source is ``secret-service`` the daemon asks, every `interval` seconds
(off the event loop), whether the key's item is locked: a lock drops every credential and
token (``locked``, exit 7 for ``token``); an unlock re-reads the vault and serves again,
with no command.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from coactive_credd.vault import SOURCE_SECRET_SERVICE, VaultError

if TYPE_CHECKING:
    from coactive_credd.server.refresh import Daemon

log = logging.getLogger("coactive_credd")

INTERVAL = 2.0  # seconds between two looks at the item's Locked property


def item_state(daemon: Daemon) -> str | None:
    """ "locked", "unlocked" or "missing" for a Secret Service vault; None for any other
    source or when the Secret Service cannot be asked (blocking: D-Bus)."""
    header = daemon.vault.header()
    if header is None or header.source != SOURCE_SECRET_SERVICE:
        return None
    return daemon.vault.secret_service.state(header.params, keep=True)


async def watch(daemon: Daemon, interval: float = INTERVAL) -> None:
    """Follow the Secret Service collection's lock state for as long as the daemon runs.
    While it does, the vault remembers a Secret Service key between reads."""
    daemon.vault.secret_service.remember = True
    failing: str | None = None
    while True:
        await asyncio.sleep(interval)
        if daemon.key_source != "secret-service":
            continue
        try:
            state = await asyncio.to_thread(item_state, daemon)
        except (VaultError, OSError) as exc:
            if str(exc) != failing:
                failing = str(exc)
                log.warning("cannot ask the Secret Service about the vault key: %s", exc)
            continue
        if state != "missing":
            failing = None
        if state == "locked" and not daemon.locked:
            daemon.lock_now("the Secret Service collection holding the vault key was locked")
        elif state == "missing" and failing != "missing":
            failing = "missing"
            log.warning(
                "the vault key's item is gone from the Secret Service: this daemon serves on "
                "with the key it holds, but the next start will not open the vault; run "
                "`coactive-credd rekey --key-file` (or --secret-service) now"
            )
            continue
        elif state == "unlocked" and daemon.locked:
            log.info("the Secret Service collection holding the vault key was unlocked")
            daemon.reload()
