"""The daemon's state: profiles, their tokens, refresh tasks, the schedule, lock and unlock.

Decisions about time live in :mod:`engine`; this module carries them out: one refresh in
flight per profile, new tokens kept in the vault, a scheduler that wakes when a refresh falls
due and re-reads the wall clock at least every 30 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from coactive_credd.core import clocks, config, credage, engine
from coactive_credd.core import proxy_choice as proxy
from coactive_credd.core.config import Config, ProfileConfig
from coactive_credd.core.paths import Paths
from coactive_credd.server import service
from coactive_credd.server.stats import Stats
from coactive_credd.upstream.exchange import (
    Credential,
    CredentialsRejected,
    Grant,
    Upstream,
    UpstreamError,
    UpstreamUnavailable,
    validate_base_url,
)
from coactive_credd.vault import (
    CachedToken,
    Vault,
    VaultData,
    VaultError,
    VaultLocked,
    WrongPassphrase,
    credcommand,
    credfile,
)
from coactive_credd.vault.shield import Shielded

log = logging.getLogger("coactive_credd")

Clock = Callable[[], float]


def rfc3339(t: float | None) -> str | None:
    """Epoch seconds as an RFC 3339 UTC time, to the second; None for None or for a moment
    no date can show (beyond year 9999: never one a status should fail on)."""
    if t is None:
        return None
    try:
        return datetime.fromtimestamp(int(t), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, ValueError, OSError):
        return None


def token_tail(token: str) -> str:
    """The most of a token a log line may carry."""
    return "…" + token[-4:] if len(token) > 8 else "…"


def fingerprint(secret: str, client_id: str | None) -> bytes:
    return hashlib.sha256(f"{client_id or ''}\0{secret}".encode()).digest()


def status_extra(
    p: Profile, policy: engine.Policy, now: float, boot: float | None
) -> dict[str, object]:
    """Status keys beside the SPEC's: ``serve_until`` (RFC 3339; the last moment the token is
    served, ``expires_at - skew`` on both clocks, :func:`engine.serve_until`, at ``now``
    epoch seconds and ``boot`` on the boot clock) and ``client_id`` (system credentials; not
    a secret)."""
    tok = p.rt.token
    return {
        "serve_until": rfc3339(engine.serve_until(tok, policy, now, boot)) if tok else None,
        "client_id": p.client_id,
    }


def proxy_url(pc: ProfileConfig) -> str | None:
    """The proxy for ``pc``'s calls to Coactive, None for direct; a malformed proxy variable
    is a transient failure (the user fixes the environment; the token stays served)."""
    try:
        return proxy.choose(pc.base_url, pc.proxy).url
    except ValueError as exc:
        raise UpstreamUnavailable(f"{exc}; fix it and restart the daemon", kind="config") from None


@dataclass
class Profile:
    cfg: ProfileConfig
    secret: Shielded | None
    client_id: str | None
    fp: bytes | None
    rt: engine.Runtime = field(default_factory=engine.Runtime)
    inflight: asyncio.Task[None] | None = None
    rendered: tuple[str, int, bytes] | None = None  # (token, expires_in, JSON body) cache

    def render(self, now: float, boot: float | None = None) -> bytes:
        tok = self.rt.token
        assert tok is not None
        expires_in = max(0, int(engine.expires_in(tok, now, boot)))
        cached = self.rendered
        if cached is not None and cached[0] is tok.access_token and cached[1] == expires_in:
            return cached[2]
        body = json.dumps(
            {
                "profile": self.cfg.name,
                "access_token": tok.access_token,
                "token_type": "Bearer",
                "expires_at": rfc3339(min(tok.expires_at, now + expires_in + 1)),
                "expires_in": expires_in,
            },
            separators=(",", ":"),
        ).encode()
        self.rendered = (tok.access_token, expires_in, body)
        return body


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
        self._persist_lock = asyncio.Lock()
        self.persist_delay = persist_delay
        self._pending: dict[str, tuple[bytes | None, engine.Token]] = {}
        self._writer: asyncio.Task[None] | None = None
        # Called after any change of a profile's token or state (token files, /v1/events).
        self.watchers: list[Callable[[], None]] = []
        self.last_reload_error: str | None = None  # why the last reload failed; None if it did not
        self.age_watch = credage.AgeWatch()
        self.stats = Stats()

    @property
    def persist_lock(self) -> asyncio.Lock:
        """Held while the vault is written, so two writers of this daemon never interleave."""
        return self._persist_lock

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
        now = self.clock()
        fresh: dict[str, Profile] = {}
        for name, pc in cfg.profiles.items():
            sec, problem = credfile.secrets(pc, data.profiles.get(name))
            kept = None
            if pc.credential_command is not None:  # run when a login needs it (credcommand)
                sec, problem = None, None
                kept = credcommand.kept_token(data.profiles.get(name))
            fp = fingerprint(sec.secret, sec.client_id) if sec else None
            if pc.credential_command is not None:  # the token-only entry: tokens persist
                fp = fingerprint(credcommand.NO_SECRET, pc.client_id)
            old = self.profiles.get(name)
            if (
                problem is not None
                and problem.pending
                and old is not None
                and old.cfg == pc
                and old.secret is not None
                and not self.locked
            ):
                fresh[name] = old  # briefly empty or missing: nothing changes until it is back
                continue
            if old is not None and old.cfg == pc and old.fp == fp and not self.locked:
                p = old
            else:
                p = Profile(
                    cfg=pc,
                    secret=Shielded(sec.secret) if sec else None,
                    client_id=sec.client_id if sec else None,
                    fp=fp,
                )
                if old is not None and old.rt.reauth and old.fp == fp:
                    p.rt.reauth, p.rt.last_error = True, old.rt.last_error
                if old is not None and sec is not None and sec.token is None:
                    self._keep_serving(old, p, now)
            if problem is not None:
                p.rt.on_rejected(str(problem))
            if sec is not None and sec.token is not None:
                self._adopt(p, sec.token, now, self.boot_clock())
            if kept is not None:
                self._adopt(p, kept, now, self.boot_clock())
            if pc.credential_command is not None and p.rt.reauth:
                p.rt.on_new_credentials()  # a reload runs a failed command again, once
                p.rt.refresh_at = None
            has_secret = p.secret is not None or pc.credential_command is not None
            if has_secret and p.rt.token is None and p.rt.refresh_at is None:
                p.rt.refresh_at = now  # log in now, before the first caller asks
            fresh[name] = p
        self.profiles = fresh
        self._wake.set()
        self.changed()

    def _keep_serving(self, old: Profile, p: Profile, now: float) -> None:
        """A rotation never takes away a valid token: ``p`` (new credentials or settings)
        serves ``old``'s token, if still servable for the same base URL and client id (another
        client id is another identity, not a rotation), until its own first login succeeds (due now when the credentials changed). Rejected new credentials make
        ``p`` ``reauth_required`` while the old token is served to its end."""
        tok = old.rt.token
        if (
            tok is None
            or self.locked
            or (old.cfg.base_url, old.cfg.auth) != (p.cfg.base_url, p.cfg.auth)
            or (old.client_id != p.client_id and p.secret is not None)  # another identity
            or not engine.servable(tok, now, self.policy, boot=self.boot_clock())
        ):
            return
        if old.fp == p.fp:  # the same credentials (a settings change): the same schedule
            p.rt, p.inflight = old.rt, old.inflight
            return
        p.rt.token, p.rt.last_refresh_at = tok, old.rt.last_refresh_at
        p.rt.refresh_at = now if p.secret is not None else None

    def _adopt(self, p: Profile, cached: CachedToken, now: float, boot: float) -> None:
        """Take a token from the vault if it outlives the one in memory. Its boot-clock mint
        is reckoned from its wall-clock age (none if the wall clock now reads earlier)."""
        if p.rt.token is not None and p.rt.token.expires_at >= cached.expires_at:
            return
        age = max(0.0, now - cached.obtained_at)
        tok = engine.Token(
            cached.access_token,
            cached.token_type,
            cached.obtained_at,
            cached.expires_at,
            boot - age,
        )
        p.rt.token = tok
        p.rt.refresh_at = engine.plan_refresh(tok, self.policy, self.rand())
        p.rt.on_new_credentials()
        if p.rt.last_refresh_at is None or p.rt.last_refresh_at < cached.obtained_at:
            p.rt.last_refresh_at = cached.obtained_at  # the login (or restart) that got it
        p.rendered = None

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
            self._queue_persist(p, tok)

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

    def _queue_persist(self, p: Profile, tok: engine.Token) -> None:
        """Keep the new token in the vault (encrypted) so a restart needs no login.

        Tokens refreshed within ``persist_delay`` of each other go out in one vault write:
        every write re-encrypts the whole vault, which with many profiles cost most of a
        login's CPU. A crash loses at most that window, and costs one login per token lost
        at the next start; a clean stop flushes.
        """
        self._pending[p.cfg.name] = (p.fp, tok)
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_pending(self.persist_delay))

    async def _write_pending(self, delay: float) -> None:
        await asyncio.sleep(delay)
        self._writer = None
        pending, self._pending = self._pending, {}

        def put(data: VaultData) -> None:
            for name, (fp, tok) in pending.items():
                sec = data.profiles.get(name)
                # Only if the credentials on disk are still the ones that minted the token.
                if sec is not None and fingerprint(sec.secret, sec.client_id) == fp:
                    sec.token = CachedToken(
                        tok.access_token, tok.token_type, tok.expires_at, tok.obtained_at
                    )

        async with self._persist_lock:
            try:
                await asyncio.to_thread(self.vault.update, put)
            except (OSError, VaultError) as exc:
                log.warning("could not keep %d new token(s) in the vault: %s", len(pending), exc)

    async def flush(self) -> None:
        """Write every token still waiting for the vault (at shutdown)."""
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None
        if self._pending:
            await self._write_pending(0)
        async with self._persist_lock:  # and a batch already being written has finished
            pass

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


async def fetch_from_command(p: Profile) -> bool:
    """Run `p`'s credential_command off the event loop and keep its answer (shielded) as
    the profile's secret. False, with the profile in reauth_required and the reason logged,
    when it fails; the scheduler does not retry a profile in reauth_required, so the
    command runs again only after ``coactive-credd refresh`` or a reload."""
    argv = p.cfg.credential_command
    assert argv is not None
    try:
        secret = await credcommand.in_thread(argv)
    except credcommand.CommandFailed as exc:
        p.secret = None
        p.rt.on_rejected(str(exc))
        log.error(
            "profile=%s %s; fix it, then `coactive-credd refresh --profile %s`",
            p.cfg.name,
            exc,
            p.cfg.name,
        )
        return False
    p.secret = Shielded(secret)
    p.client_id = p.cfg.client_id
    return True
