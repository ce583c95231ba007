"""Keeping new tokens in the vault, in batches, so a restart needs no login.

Every vault write re-encrypts the whole vault; with many profiles that cost most of a
login's CPU. Tokens refreshed within ``delay`` seconds of each other therefore go out in
one write. A crash loses at most that window (one login per token lost, at the next
start); a clean stop calls :meth:`TokenKeeper.flush`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from coactive_credd.core import engine
from coactive_credd.server.profile import fingerprint
from coactive_credd.vault import CachedToken, Vault, VaultData, VaultError

log = logging.getLogger("coactive_credd")


class TokenKeeper:
    """Batches tokens for ``vault``; ``delay`` is the batching window in seconds."""

    def __init__(self, vault: Vault, delay: float) -> None:
        self.vault = vault
        self.delay = delay
        self.lock = asyncio.Lock()  # held while the vault is written: writers never interleave
        self.pending: dict[str, tuple[bytes | None, engine.Token]] = {}
        self._writer: asyncio.Task[None] | None = None

    def queue(self, name: str, fp: bytes | None, tok: engine.Token) -> None:
        """Keep ``tok`` for profile ``name`` at the next batch write, only if the vault's
        credentials for it still have fingerprint ``fp`` (:func:`fingerprint`) then."""
        self.pending[name] = (fp, tok)
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_pending(self.delay))

    async def _write_pending(self, delay: float) -> None:
        await asyncio.sleep(delay)
        self._writer = None
        pending, self.pending = self.pending, {}

        def put(data: VaultData) -> None:
            for name, (fp, tok) in pending.items():
                sec = data.profiles.get(name)
                # Only if the credentials on disk are still the ones that minted the token.
                if sec is not None and fingerprint(sec.secret, sec.client_id) == fp:
                    sec.token = CachedToken(
                        tok.access_token, tok.token_type, tok.expires_at, tok.obtained_at
                    )

        async with self.lock:
            try:
                await asyncio.to_thread(self.vault.update, put)
            except (OSError, VaultError) as exc:
                log.warning("could not keep %d new token(s) in the vault: %s", len(pending), exc)

    async def flush(self) -> None:
        """Write every token still waiting (at shutdown), and wait for a write under way."""
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None
        if self.pending:
            await self._write_pending(0)
        async with self.lock:  # and a batch already being written has finished
            pass
