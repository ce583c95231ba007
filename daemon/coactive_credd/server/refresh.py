"""The daemon's state: profiles, their tokens, refresh tasks, the schedule, lock and unlock.

Decisions about time live in :mod:`engine`; this module carries them out: one refresh in
flight per profile, new tokens kept in the vault, a scheduler that wakes when a refresh falls
due and re-reads the wall clock at least every 30 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import time
from collections.abc import Callable

from coactive_credd.core import clocks, config, credage, engine
from coactive_credd.core.config import Config
from coactive_credd.core.paths import Paths
from coactive_credd.server import service
from coactive_credd.server.persist import TokenKeeper
from coactive_credd.server.profile import (
    Profile,
    fetch_from_command,
    proxy_url,
    token_tail,
)
from coactive_credd.server.reconcile import Moment, reconcile
from coactive_credd.server.stats import Stats
from coactive_credd.upstream.exchange import (
    Credential,
    CredentialsRejected,
    Grant,
    Upstream,
    UpstreamError,
    validate_base_url,
)
from coactive_credd.vault import (
    Vault,
    VaultData,
    VaultError,
    VaultLocked,
    WrongPassphrase,
    credfile,
)

log = logging.getLogger("coactive_credd")

Clock = Callable[[], float]


class Daemon:
    """Holds the profiles and their tokens; refreshes them ahead of expiry."""

    def __init__(
        self,
        paths: Paths,
        *,
        clock: Clock = time.time,
        boot_clock: Clock | None = None,
        rand: Callable[[], float] = random.random,
        upstream: Upstream | None = None,
        notifier: service.Notifier | None = None,
        persist_delay: float = 30.0,
    ) -> None:
        self.paths = paths
        self.clock = clock
        # The boot clock (clocks.boot_time) beside the wall clock; a test that injects a wall
        # clock alone gets it for both, and jumps them apart by injecting both.
        self.boot_clock = boot_clock or (clocks.boot_time if clock is time.time else clock)
        self.rand = rand
        self.upstream = upstream or Upstream()
        self.notifier = notifier or service.Notifier.from_env()
        self.vault = Vault(paths.vault_file, paths.key_file, paths.lock_file)
        self.cfg = Config()
        self.policy = engine.Policy()
        self.profiles: dict[str, Profile] = {}
        self.locked = False
        self.key_source = "key-file"
        self.last_use = self.unlocked_at = clock()  # for auto-lock
        self._wake = asyncio.Event()
        self.keeper = TokenKeeper(self.vault, persist_delay)
        # Called after any change of a profile's token or state (token files, /v1/events).
        self.watchers: list[Callable[[], None]] = []
        self.last_reload_error: str | None = None  # why the last reload failed; None if it did not
        self.age_watch = credage.AgeWatch()
        self.stats = Stats()

    @property
    def persist_lock(self) -> asyncio.Lock:
        """Held while the vault is written, so two writers of this daemon never interleave."""
        return self.keeper.lock

    @property
    def persist_delay(self) -> float:
        """Seconds new tokens wait to go to the vault in one batch (:mod:`.persist`)."""
        return self.keeper.delay

    @persist_delay.setter
    def persist_delay(self, delay: float) -> None:
        self.keeper.delay = delay

    def load(self) -> None:
        """Read config and vault and bring the in-memory profiles in line with them.

        Profiles whose credentials did not change keep their token and schedule; changed
        credentials start afresh (with the token `login` left in the vault, if any).
        """
        cfg = config.load(self.paths.config_file)
        for pc in cfg.profiles.values():
            try:
                validate_base_url(pc.base_url)
            except ValueError as exc:
                raise config.ConfigError(
                    f"{self.paths.config_file} [profiles.{pc.name}]: {exc}"
                ) from None
        self.cfg = cfg
        self.policy = engine.Policy(
            skew=cfg.daemon.skew, refresh_fraction=cfg.daemon.refresh_fraction
        )
        try:
            data = self.vault.load()
            self.locked = False
        except VaultLocked:
            data, self.locked = VaultData(profiles={}), True
        self.key_source = self.vault.key_source
        self.profiles = reconcile(
            self.profiles,
            cfg,
            data,
            Moment(self.clock(), self.boot_clock(), self.policy, self.rand, self.locked),
        )
        self._wake.set()
        self.changed()

    def start_refresh(self, p: Profile) -> asyncio.Task[None]:
        """The one refresh in flight for ``p``, started if there is none."""
        if p.inflight is None:
            p.rt.refreshing = True
            p.inflight = asyncio.create_task(self._refresh(p))
        return p.inflight

    async def _refresh(self, p: Profile) -> None:
        """One login for ``p``: its credentials, the exchange, and the token it gives; a
        failure is recorded in ``p.rt`` (rejected, or backoff) and logged, never raised."""
        try:
            if not await self._has_credentials(p):
                return
            sent_at, sent_boot = self.clock(), self.boot_clock()
            cred = self._credential(p)
            if cred is None:
                return
            grant = await self._exchange(p, cred)
            if grant is None:
                return
            self._take_grant(p, grant, sent_at, sent_boot)
        finally:
            p.rt.refreshing = False
            p.inflight = None
            self._wake.set()
            self._notify_status()

    async def _has_credentials(self, p: Profile) -> bool:
        """Run ``p``'s credential command if it has one; False (recorded) when there is no
        secret to log in with."""
        if p.cfg.credential_command is not None and not await fetch_from_command(p):
            return False
        if p.secret is None:
            p.rt.on_rejected("no credentials stored")
            return False
        return True

    def _credential(self, p: Profile) -> Credential | None:
        """What to send Coactive for ``p``; None (recorded and logged) when the stored
        credentials are malformed."""
        name = p.cfg.name
        assert p.secret is not None  # _has_credentials
        try:
            return Credential(auth=p.cfg.auth, secret=p.secret.reveal(), client_id=p.client_id)
        except ValueError as exc:
            p.rt.on_rejected(f"the stored credentials are malformed ({exc})")
            log.error(
                "profile=%s %s; run `%s`",
                name,
                p.rt.last_error,
                config.login_command(name, p.cfg.auth, p.client_id, p.cfg.base_url),
            )
            return None

    async def _exchange(self, p: Profile, cred: Credential) -> Grant | None:
        """The timed login; None when it failed: rejected credentials (reauth_required), or
        a transient or unexpected failure (backoff), recorded and logged."""
        name = p.cfg.name
        try:
            return await self.stats.timed_login(name, self._login(p, cred))
        except CredentialsRejected as exc:
            p.rt.on_rejected(exc.detail)
            log.error(
                "profile=%s credentials rejected by Coactive: %s; %s",
                name,
                exc.detail,
                credfile.fix_hint(p.cfg)
                or f"run `{config.login_command(name, p.cfg.auth, p.client_id, p.cfg.base_url)}`",
            )
            return None
        except UpstreamError as exc:
            delay = p.rt.on_transient_failure(
                exc.detail,
                self.policy,
                self.rand(),
                self.clock(),
                getattr(exc, "retry_after", None),
                self.boot_clock(),
            )
            usable = p.rt.token is not None and engine.servable(
                p.rt.token, self.clock(), self.policy, boot=self.boot_clock()
            )
            log.warning(
                "profile=%s refresh failed (attempt %d): %s; retrying in %.1f s%s",
                name,
                p.rt.failures,
                exc.detail,
                delay,
                ", still serving the current token" if usable else "",
            )
            return None
        except Exception as exc:  # an unexpected failure must not kill the daemon
            delay = p.rt.on_transient_failure(
                f"unexpected error: {type(exc).__name__}",
                self.policy,
                self.rand(),
                self.clock(),
                None,
                self.boot_clock(),
            )
            log.exception("profile=%s refresh failed unexpectedly; retrying in %.1f s", name, delay)
            return None

    def _take_grant(self, p: Profile, grant: Grant, sent_at: float, sent_boot: float) -> None:
        """Serve the token ``grant`` carries, its lifetime counted from ``sent_at`` (wall and
        boot clock, seconds: when the login was sent), and queue it for the vault."""
        tok = engine.Token(
            grant.access_token,
            grant.token_type,
            sent_at,
            sent_at + grant.expires_in,
            sent_boot,
        )
        p.rt.on_success(tok, self.policy, self.rand(), self.clock())
        p.rendered = None
        ahead = (
            f"next refresh in {int(p.rt.refresh_at - self.clock())} s"
            if p.rt.refresh_at is not None
            else "too short-lived to refresh ahead: replaced when a caller asks"
        )
        log.info(
            "profile=%s new token %s, expires in %d s, %s",
            p.cfg.name,
            token_tail(tok.access_token),
            grant.expires_in,
            ahead,
        )
        if p.cfg.credential_file is None:  # nothing of it is in the vault
            self.keeper.queue(p.cfg.name, p.fp, tok)

    async def replace_rejected(self, p: Profile, rejected_sha256: str) -> bool:
        """A report that the token whose SHA-256 is ``rejected_sha256`` (lower-case hex) was
        rejected: replace it if it is still ``p``'s current one, one login for every report
        of it (coalesced). True when ``p`` has another token now; False when none could be
        had: ``reauth_required``, a backoff or Retry-After window (no login then, whoever
        reports), or a login that failed."""
        tok = p.rt.token
        if (
            tok is not None
            and hashlib.sha256(tok.access_token.encode()).hexdigest() != rejected_sha256
        ):
            return True  # already replaced
        if p.inflight is None and (p.rt.reauth or p.rt.in_backoff(self.clock(), self.boot_clock())):
            return False
        if p.inflight is None:
            log.info(
                "profile=%s token %s reported rejected; replacing it",
                p.cfg.name,
                token_tail(tok.access_token) if tok else "",
            )
        await asyncio.shield(self.start_refresh(p))
        return not (p.rt.reauth or p.rt.failures)

    async def flush(self) -> None:
        """Write every token still waiting for the vault (at shutdown)."""
        await self.keeper.flush()

    async def scheduler(self) -> None:
        """Start refreshes when they fall due; re-read the wall clock at least every 30 s."""
        while True:
            now, boot = self.clock(), self.boot_clock()
            self.age_watch.check((p.cfg for p in self.profiles.values()), now)
            next_due = self.lock_due()
            if next_due is not None and next_due <= now:
                self.lock_now("auto-lock")
                next_due = None
            if not self.locked:
                for p in self.profiles.values():
                    due = p.rt.next_due(now, boot)  # a backoff's end: on the boot clock
                    if due is None:
                        continue
                    # a planned refresh is due by either clock
                    if due <= now or (
                        p.rt.retry_at is None and engine.due(p.rt.token, due, now, boot)
                    ):
                        self.start_refresh(p)
                    elif next_due is None or due < next_due:
                        next_due = due
            check = self.policy.wallclock_check
            timeout = check if next_due is None else min(max(next_due - now, 0.0), check)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    def wake(self) -> None:
        """Make the scheduler look again now (after a clock jump or a change)."""
        self._wake.set()

    # ---- lock and unlock (passphrase vaults) ----------------------------------------------

    def lock_due(self) -> float | None:
        """When auto-lock falls due (gpg-agent's default-cache-ttl / max-cache-ttl pair)."""
        d = self.cfg.daemon
        if self.locked or self.key_source != "passphrase":
            return None
        dues = []
        if d.lock_after_idle:
            dues.append(self.last_use + d.lock_after_idle)
        if d.lock_after_unlock:
            dues.append(self.unlocked_at + d.lock_after_unlock)
        return min(dues) if dues else None

    def lock_now(self, why: str) -> None:
        """Forget the vault key, every credential and every token."""
        self.vault.lock()
        self.locked = True
        self.profiles = {
            name: Profile(cfg=p.cfg, secret=None, client_id=None, fp=None)
            for name, p in self.profiles.items()
        }
        log.info("vault locked (%s): credentials and tokens dropped from memory", why)
        self._notify_status()

    async def unlock(self, passphrase: str) -> None:
        """Open a passphrase vault with ``passphrase`` and load it (scrypt runs off the loop).

        Raises WrongPassphrase, or VaultError when the vault has no passphrase."""
        try:
            await asyncio.to_thread(self.vault.unlock, passphrase)
        except WrongPassphrase:
            log.warning("unlock refused: wrong passphrase")
            raise
        self.last_use = self.unlocked_at = self.clock()
        self.load()
        log.info("vault unlocked: %d profile(s)", len(self.profiles))
        self._notify_status()

    async def _login(self, p: Profile, cred: Credential) -> Grant:
        # The proxy is chosen inside the timed login, so a bad proxy variable is counted.
        return await self.upstream.login(
            p.cfg.base_url, cred, ca_bundle=p.cfg.ca_bundle, proxy=proxy_url(p.cfg)
        )

    def reload(self) -> None:
        self.notifier.reloading()
        self.upstream.forget_certificates()  # a replaced ca_bundle is read again
        try:
            self.load()
            self.last_reload_error = None
            log.info(
                "reloaded: %d profile(s)%s",
                len(self.profiles),
                ", vault locked" if self.locked else "",
            )
        except (config.ConfigError, VaultError, OSError) as exc:
            self.last_reload_error = str(exc)
            log.error("reload failed, keeping the previous state: %s", exc)
        self.notifier.ready(self.status_line())

    def status_line(self) -> str:
        n = len(self.profiles)
        if self.locked:
            return f"{n} profile(s), vault locked"
        now, boot = self.clock(), self.boot_clock()
        dues = [d for p in self.profiles.values() if (d := p.rt.next_due(now, boot)) is not None]
        nxt = f", next refresh in {max(0, int(min(dues) - now)) // 60} min" if dues else ""
        return f"{n} profile(s){nxt}"

    def _notify_status(self) -> None:
        self.notifier.status(self.status_line())
        self.changed()

    def changed(self) -> None:
        """Tell the watchers a profile's token or state may have changed."""
        for watcher in self.watchers:
            try:
                watcher()
            except Exception:  # a watcher's failure must not stop a refresh or a reload
                log.exception("a watcher failed")
