"""The daemon: the socket, the peer check, the routes, refresh tasks and the lifecycle.

Decisions about time live in :mod:`engine`; this module carries them out. It runs aiohttp's
low-level server (no router, no middleware, no access log) because every request is one of
four paths and the token answer sits on the hot path of every API call a user makes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import random
import re
import signal
import socket
import struct
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from . import __version__, config, engine, fsutil, service
from .config import Config, ProfileConfig
from .paths import Paths
from .shield import Shielded
from .upstream import (
    Credential,
    CredentialsRejected,
    Upstream,
    UpstreamError,
    validate_base_url,
)
from .vault import CachedToken, Vault, VaultData, VaultError, VaultLocked, WrongPassphrase

log = logging.getLogger("coactive_credd")

Clock = Callable[[], float]
MAX_BODY = 4096
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class ApiError(Exception):
    """An error answer of the socket protocol: ``{"error": {code, message, hint}}``."""

    def __init__(self, status: int, code: str, message: str, hint: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.hint = status, code, message, hint

    def response(self) -> web.Response:
        body = {"error": {"code": self.code, "message": self.message, "hint": self.hint}}
        return web.Response(
            status=self.status, body=json.dumps(body).encode(), content_type="application/json"
        )


class StartupError(Exception):
    """The daemon cannot start; the message says why and what to do."""


def rfc3339(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(int(t), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def token_tail(token: str) -> str:
    """The most of a token a log line may carry."""
    return "…" + token[-4:] if len(token) > 8 else "…"


def fingerprint(secret: str, client_id: str | None) -> bytes:
    return hashlib.sha256(f"{client_id or ''}\0{secret}".encode()).digest()


def peer_credentials(sock: Any) -> tuple[int, int | None]:
    """The (uid, pid) of the process at the other end of a Unix socket."""
    if hasattr(socket, "SO_PEERCRED"):
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, _gid = struct.unpack("3i", raw)
        return uid, pid
    # macOS/BSD: LOCAL_PEERCRED on SOL_LOCAL (0) answers a struct xucred {u_int version; uid_t uid; ...}
    raw = sock.getsockopt(0, 0x001, 76)
    _version, uid = struct.unpack_from("II", raw)
    return uid, None


@dataclass
class Profile:
    cfg: ProfileConfig
    secret: Shielded | None
    client_id: str | None
    fp: bytes | None
    rt: engine.Runtime = field(default_factory=engine.Runtime)
    inflight: asyncio.Task[None] | None = None
    rendered: tuple[str, int, bytes] | None = None  # (token, expires_in, JSON body) cache

    def render(self, now: float) -> bytes:
        tok = self.rt.token
        assert tok is not None
        expires_in = max(0, int(tok.expires_at - now))
        cached = self.rendered
        if cached is not None and cached[0] is tok.access_token and cached[1] == expires_in:
            return cached[2]
        body = json.dumps(
            {
                "profile": self.cfg.name,
                "access_token": tok.access_token,
                "token_type": "Bearer",
                "expires_at": rfc3339(tok.expires_at),
                "expires_in": expires_in,
            },
            separators=(",", ":"),
        ).encode()
        self.rendered = (tok.access_token, expires_in, body)
        return body


class Daemon:
    """Holds the profiles and their tokens, and answers the socket protocol."""

    def __init__(
        self,
        paths: Paths,
        *,
        clock: Clock = time.time,
        rand: Callable[[], float] = random.random,
        upstream: Upstream | None = None,
        notifier: service.Notifier | None = None,
    ) -> None:
        self.paths = paths
        self.clock = clock
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
        self.uid = os.geteuid()
        self._wake = asyncio.Event()
        self._persist_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._routes: dict[
            tuple[str, str], Callable[[web.BaseRequest], Awaitable[web.Response]]
        ] = {
            ("GET", "/v1/token"): self.get_token,
            ("POST", "/v1/token/refresh"): self.post_refresh,
            ("GET", "/v1/status"): self.get_status,
            ("GET", "/healthz"): self.get_healthz,
            ("POST", "/v1/admin/reload"): self.post_reload,
            ("POST", "/v1/admin/lock"): self.post_lock,
            ("POST", "/v1/admin/unlock"): self.post_unlock,
        }

    # ---- profiles -------------------------------------------------------------------------

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
            sec = data.profiles.get(name)
            fp = fingerprint(sec.secret, sec.client_id) if sec else None
            old = self.profiles.get(name)
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
            if sec is not None and sec.token is not None:
                self._adopt(p, sec.token, now)
            if p.secret is not None and p.rt.token is None and p.rt.refresh_at is None:
                p.rt.refresh_at = now  # log in now, before the first caller asks
            fresh[name] = p
        self.profiles = fresh
        self._wake.set()

    def _adopt(self, p: Profile, cached: CachedToken, now: float) -> None:
        """Take a token from the vault if it outlives the one in memory."""
        if p.rt.token is not None and p.rt.token.expires_at >= cached.expires_at:
            return
        tok = engine.Token(
            cached.access_token, cached.token_type, cached.obtained_at, cached.expires_at
        )
        p.rt.token = tok
        p.rt.refresh_at = engine.refresh_at(tok, self.policy, self.rand())
        p.rt.on_new_credentials()
        p.rendered = None

    # ---- refreshing -----------------------------------------------------------------------

    def start_refresh(self, p: Profile) -> asyncio.Task[None]:
        """The one refresh in flight for ``p``, started if there is none."""
        if p.inflight is None:
            p.rt.refreshing = True
            p.inflight = asyncio.create_task(self._refresh(p))
        return p.inflight

    async def _refresh(self, p: Profile) -> None:
        name = p.cfg.name
        try:
            if p.secret is None:
                p.rt.on_rejected("no credentials stored")
                return
            sent_at = self.clock()
            try:
                cred = Credential(auth=p.cfg.auth, secret=p.secret.reveal(), client_id=p.client_id)
            except ValueError as exc:
                p.rt.on_rejected(f"the stored credentials are malformed ({exc})")
                log.error(
                    "profile=%s %s; run `coactive-credd login --profile %s`",
                    name,
                    p.rt.last_error,
                    name,
                )
                return
            try:
                grant = await self.upstream.login(p.cfg.base_url, cred, ca_bundle=p.cfg.ca_bundle)
            except CredentialsRejected as exc:
                p.rt.on_rejected(exc.detail)
                log.error(
                    "profile=%s credentials rejected by Coactive: %s; run `coactive-credd login --profile %s`",
                    name,
                    exc.detail,
                    name,
                )
                return
            except UpstreamError as exc:
                delay = p.rt.on_transient_failure(
                    exc.detail,
                    self.policy,
                    self.rand(),
                    self.clock(),
                    getattr(exc, "retry_after", None),
                )
                usable = p.rt.token is not None and engine.servable(
                    p.rt.token, self.clock(), self.policy
                )
                log.warning(
                    "profile=%s refresh failed (attempt %d): %s; retrying in %.1f s%s",
                    name,
                    p.rt.failures,
                    exc.detail,
                    delay,
                    ", still serving the current token" if usable else "",
                )
                return
            except Exception as exc:  # an unexpected failure must not kill the daemon
                delay = p.rt.on_transient_failure(
                    f"unexpected error: {type(exc).__name__}",
                    self.policy,
                    self.rand(),
                    self.clock(),
                    None,
                )
                log.exception(
                    "profile=%s refresh failed unexpectedly; retrying in %.1f s", name, delay
                )
                return
            tok = engine.Token(
                grant.access_token, grant.token_type, sent_at, sent_at + grant.expires_in
            )
            p.rt.on_success(tok, self.policy, self.rand(), self.clock())
            p.rendered = None
            log.info(
                "profile=%s new token %s, expires in %d s, next refresh in %d s",
                name,
                token_tail(tok.access_token),
                grant.expires_in,
                int((p.rt.refresh_at or 0) - self.clock()),
            )
            self._spawn(self._persist(p, tok))
        finally:
            p.rt.refreshing = False
            p.inflight = None
            self._wake.set()
            self._notify_status()

    async def _persist(self, p: Profile, tok: engine.Token) -> None:
        """Keep the new token in the vault (encrypted) so a restart needs no login."""
        name, fp = p.cfg.name, p.fp

        def put(data: VaultData) -> None:
            sec = data.profiles.get(name)
            # Only if the credentials on disk are still the ones that minted this token.
            if sec is not None and fingerprint(sec.secret, sec.client_id) == fp:
                sec.token = CachedToken(
                    tok.access_token, tok.token_type, tok.expires_at, tok.obtained_at
                )

        async with self._persist_lock:
            try:
                await asyncio.to_thread(self.vault.update, put)
            except (OSError, VaultError) as exc:
                log.warning("profile=%s could not keep the token in the vault: %s", name, exc)

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def scheduler(self) -> None:
        """Start refreshes when they fall due; re-read the wall clock at least every 30 s."""
        while True:
            now = self.clock()
            next_due = self.lock_due()
            if next_due is not None and next_due <= now:
                self.lock_now("auto-lock")
                next_due = None
            if not self.locked:
                for p in self.profiles.values():
                    due = p.rt.next_due()
                    if due is None:
                        continue
                    if due <= now:
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

    # ---- HTTP -----------------------------------------------------------------------------

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        try:
            sock = request.transport.get_extra_info("socket") if request.transport else None
            uid, pid = peer_credentials(sock) if sock is not None else (-1, None)
            if uid != self.uid:
                log.warning(
                    "refused a request from uid %d (pid %s): not the daemon's uid", uid, pid
                )
                raise ApiError(
                    403,
                    "forbidden",
                    "only the daemon's own user may use this socket",
                    "connect as the user who runs coactive-credd",
                )
            route = self._routes.get((request.method, request.path))
            if route is None:
                if any(path == request.path for _, path in self._routes):
                    raise ApiError(
                        405,
                        "bad_request",
                        f"{request.method} is not allowed on {request.path}",
                        "see docs/PROTOCOL.md",
                    )
                raise ApiError(
                    404,
                    "not_found",
                    f"no such path: {request.path}",
                    "the API is GET /v1/token, POST /v1/token/refresh, GET /v1/status, GET /healthz",
                )
            return await route(request)
        except ApiError as exc:
            return exc.response()
        except Exception:
            log.exception("internal error answering %s %s", request.method, request.path)
            return ApiError(
                500, "internal", "internal error in coactive-credd", "see the daemon's log"
            ).response()

    def _profile(self, request: web.BaseRequest) -> Profile:
        name = request.query.get("profile") or "default"
        try:
            config.check_profile_name(name)
        except ValueError as exc:
            raise ApiError(400, "bad_request", str(exc), "pass ?profile=NAME") from None
        p = self.profiles.get(name)
        if p is None:
            raise ApiError(
                404,
                "unknown_profile",
                f"no profile named {name!r}",
                f"run `coactive-credd login --profile {name}`",
            )
        if self.locked:
            raise ApiError(423, "locked", "the vault is locked", "run `coactive-credd unlock`")
        return p

    def _answer(self, request: web.BaseRequest, p: Profile, now: float) -> web.Response:
        tok = p.rt.token
        assert tok is not None
        if "text/plain" in request.headers.get("Accept", ""):
            return web.Response(text=tok.access_token)
        return web.Response(body=p.render(now), content_type="application/json")

    def _failure(self, p: Profile, now: float) -> ApiError:
        name = p.cfg.name
        if p.rt.reauth:
            if p.cfg.auth == "client_credentials":
                fix = f"coactive-credd login --profile {name} --client-id ID --client-secret-stdin"
            else:
                fix = f"coactive-credd login --profile {name}"
            return ApiError(
                424,
                "reauth_required",
                f"Coactive rejected the stored credentials for profile {name!r} ({p.rt.last_error})",
                f"run `{fix}`",
            )
        retry = (
            ""
            if p.rt.retry_at is None
            else f"; next attempt in {max(0, int(p.rt.retry_at - now))} s"
        )
        return ApiError(
            503,
            "upstream_unavailable",
            f"no valid token for profile {name!r} and Coactive cannot be reached ({p.rt.last_error}){retry}",
            f"check the network and `coactive-credd status`, then `coactive-credd refresh --profile {name}`",
        )

    async def get_token(self, request: web.BaseRequest) -> web.Response:
        p = self._profile(request)
        raw = request.query.get("min_ttl", "0")
        if not raw.isdigit() or int(raw) > 86400:
            raise ApiError(
                400,
                "bad_request",
                f"min_ttl must be a whole number of seconds from 0 to 86400, got {raw[:32]!r}",
                "pass ?min_ttl=SECONDS",
            )
        min_ttl = int(raw)
        now = self.last_use = self.clock()
        action = engine.decide(p.rt, now, self.policy, min_ttl)
        if action is engine.Action.SERVE:
            return self._answer(request, p, now)
        if action is engine.Action.SERVE_AND_REFRESH:
            self.start_refresh(p)
            return self._answer(request, p, now)
        if action is engine.Action.WAIT_FOR_REFRESH:
            await asyncio.shield(self.start_refresh(p))
            return self._after_refresh(request, p, min_ttl)
        raise self._failure(p, now)

    def _after_refresh(self, request: web.BaseRequest, p: Profile, min_ttl: int) -> web.Response:
        now = self.clock()
        tok = p.rt.token
        if tok is not None and engine.servable(tok, now, self.policy, min_ttl):
            return self._answer(request, p, now)
        if (
            tok is not None
            and p.rt.failures == 0
            and not p.rt.reauth
            and engine.servable(tok, now, self.policy)
        ):
            raise ApiError(
                400,
                "bad_request",
                f"min_ttl={min_ttl} is longer than the tokens Coactive issues ({int(tok.lifetime)} s)",
                "ask for a smaller min_ttl",
            )
        raise self._failure(p, now)

    async def post_refresh(self, request: web.BaseRequest) -> web.Response:
        p = self._profile(request)
        rejected = None
        doc = await self._json_body(request, '{"rejected_token_sha256": "<hex>"}')
        if doc is not None:
            if not isinstance(doc.get("rejected_token_sha256", ""), str):
                raise ApiError(
                    400,
                    "bad_request",
                    "rejected_token_sha256 must be a string",
                    'send {"rejected_token_sha256": "<hex>"}',
                )
            rejected = doc.get("rejected_token_sha256")
            if rejected is not None and not _HEX64.match(rejected.lower()):
                raise ApiError(
                    400,
                    "bad_request",
                    "rejected_token_sha256 must be 64 hex digits",
                    "send the SHA-256 of the rejected token, in hex",
                )
        tok = p.rt.token
        stale = rejected is None or (
            tok is not None
            and hashlib.sha256(tok.access_token.encode()).hexdigest() == rejected.lower()
        )
        if stale or tok is None:
            if p.inflight is None:
                p.rt.on_new_credentials()  # an explicit refresh lifts reauth_required and backoff
                if rejected is not None:
                    log.info(
                        "profile=%s token %s reported rejected; replacing it",
                        p.cfg.name,
                        token_tail(tok.access_token) if tok else "",
                    )
            await asyncio.shield(self.start_refresh(p))
            if p.rt.reauth or p.rt.failures:  # the caller asked for a new token and got none
                raise self._failure(p, self.clock())
        return self._after_refresh(request, p, 0)

    async def _json_body(self, request: web.BaseRequest, shape: str) -> dict[str, Any] | None:
        """The request's JSON object body, None if there is none; 400/413 otherwise."""
        body = await request.content.read(MAX_BODY + 1)
        if len(body) > MAX_BODY:
            raise ApiError(
                413, "bad_request", "request body too large", f"send at most {MAX_BODY} bytes"
            )
        if not body.strip():
            return None
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            doc = None
        if not isinstance(doc, dict):
            raise ApiError(400, "bad_request", "body is not a JSON object", f"send {shape}")
        return doc

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

    async def post_lock(self, request: web.BaseRequest) -> web.Response:
        if self.key_source != "passphrase":
            raise ApiError(
                409,
                "bad_request",
                "the vault has no passphrase, so it cannot be locked",
                "protect it first: `coactive-credd rekey --passphrase-stdin`",
            )
        if not self.locked:
            self.lock_now("lock requested")
        return web.json_response({"ok": True, "locked": True})

    async def post_unlock(self, request: web.BaseRequest) -> web.Response:
        doc = await self._json_body(request, '{"passphrase": "..."}')
        passphrase = doc.get("passphrase") if doc else None
        if not isinstance(passphrase, str) or not passphrase:
            raise ApiError(400, "bad_request", "no passphrase given", 'send {"passphrase": "..."}')
        try:
            await asyncio.to_thread(self.vault.unlock, passphrase)
        except WrongPassphrase:
            log.warning("unlock refused: wrong passphrase")
            raise ApiError(
                401,
                "wrong_passphrase",
                "wrong passphrase; the vault stays locked",
                "run `coactive-credd unlock` again",
            ) from None
        except VaultError as exc:
            raise ApiError(409, "bad_request", str(exc), "see `coactive-credd status`") from None
        self.last_use = self.unlocked_at = self.clock()
        self.load()
        log.info("vault unlocked: %d profile(s)", len(self.profiles))
        self._notify_status()
        return web.json_response(
            {"ok": True, "locked": self.locked, "profiles": len(self.profiles)}
        )

    async def get_status(self, request: web.BaseRequest) -> web.Response:
        now = self.clock()
        profiles = []
        for name in sorted(self.profiles):
            p = self.profiles[name]
            rt = p.rt
            profiles.append(
                {
                    "name": name,
                    "auth": p.cfg.auth,
                    "base_url": p.cfg.base_url,
                    "state": str(engine.state(rt, now, self.policy, locked=self.locked)),
                    "expires_at": rfc3339(rt.token.expires_at) if rt.token else None,
                    "next_refresh_at": rfc3339(rt.next_due()),
                    "last_refresh_at": rfc3339(rt.last_refresh_at),
                    "last_error": rt.last_error,
                }
            )
        body = {
            "version": __version__,
            "pid": os.getpid(),
            "locked": self.locked,
            "key_source": self.key_source,
            "socket": str(self.paths.socket),
            "profiles": profiles,
        }
        return web.Response(body=json.dumps(body).encode(), content_type="application/json")

    async def get_healthz(self, request: web.BaseRequest) -> web.Response:
        return web.Response(text="ok")

    async def post_reload(self, request: web.BaseRequest) -> web.Response:
        self.reload()
        return web.Response(
            body=json.dumps({"ok": True, "profiles": len(self.profiles)}).encode(),
            content_type="application/json",
        )

    def reload(self) -> None:
        self.notifier.reloading()
        try:
            self.load()
            log.info(
                "reloaded: %d profile(s)%s",
                len(self.profiles),
                ", vault locked" if self.locked else "",
            )
        except (config.ConfigError, VaultError, OSError) as exc:
            log.error("reload failed, keeping the previous state: %s", exc)
        self.notifier.ready(self.status_line())

    def status_line(self) -> str:
        n = len(self.profiles)
        if self.locked:
            return f"{n} profile(s), vault locked"
        now = self.clock()
        dues = [d for p in self.profiles.values() if (d := p.rt.next_due()) is not None]
        nxt = f", next refresh in {max(0, int(min(dues) - now)) // 60} min" if dues else ""
        return f"{n} profile(s){nxt}"

    def _notify_status(self) -> None:
        self.notifier.status(self.status_line())


# ---- the socket and the process ------------------------------------------------------------


def _socket_alive(path: Path) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(1.0)
    try:
        s.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        return False
    except OSError:
        return False
    finally:
        s.close()
    return True


def bind_socket(path: Path) -> socket.socket:
    """Create the listening socket: 0600 in a 0700 folder, replacing only a stale socket."""
    try:
        fsutil.ensure_private_dir(path.parent)
    except fsutil.InsecurePathError as exc:
        raise StartupError(f"cannot serve on {path}: {exc}") from exc
    if path.exists() or path.is_symlink():
        if _socket_alive(path):
            raise StartupError(
                f"coactive-credd is already running on {path}; stop it first or pass --socket"
            )
        if not path.is_socket():
            raise StartupError(f"{path} exists and is not a socket; move it away or pass --socket")
        path.unlink()  # nobody answers: a stale socket left by a crash
        log.info("removed a stale socket at %s", path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(512)
    return sock


def harden_process() -> None:
    """No core dumps, no ptrace by other same-uid processes, private files by default."""
    import resource

    os.umask(0o077)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 4


async def run(paths: Paths, *, ready: Callable[[Daemon], None] | None = None) -> None:
    """Serve until SIGTERM/SIGINT. SIGHUP re-reads the config and the vault."""
    inherited = service.inherited_sockets()
    own_socket = not inherited
    startup_lock = None
    if own_socket:
        fsutil.ensure_private_dir(paths.socket.parent)
        startup_lock = os.open(str(paths.socket) + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        import fcntl

        try:
            fcntl.flock(startup_lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(startup_lock)
            raise StartupError(f"coactive-credd is already running on {paths.socket}") from None
        sockets = [bind_socket(paths.socket)]
    else:
        sockets = inherited
    daemon = Daemon(paths)
    try:
        daemon.load()
    except (config.ConfigError, VaultError) as exc:
        for s in sockets:
            s.close()
        if own_socket:
            paths.socket.unlink(missing_ok=True)
        raise StartupError(str(exc)) from exc
    server = web.Server(
        daemon.handle,
        access_log=None,
        keepalive_timeout=60,
        tcp_keepalive=False,
        max_line_size=4096,
        max_field_size=4096,
        max_headers=32,
    )
    runner = web.ServerRunner(server, handle_signals=False)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, daemon.reload)
    background = [asyncio.create_task(daemon.scheduler())]
    interval = daemon.notifier.watchdog_interval()
    if interval:
        background.append(asyncio.create_task(_watchdog(daemon.notifier, interval)))
    try:
        for s in sockets:
            await web.SockSite(runner, s, shutdown_timeout=2.0, backlog=1024).start()
        log.info(
            "coactive-credd %s serving %d profile(s) on %s%s",
            __version__,
            len(daemon.profiles),
            paths.socket if own_socket else "an inherited socket",
            " (vault locked)" if daemon.locked else "",
        )
        daemon.notifier.ready(daemon.status_line())
        if ready is not None:
            ready(daemon)
        await stop.wait()
        log.info("shutting down")
        daemon.notifier.stopping()
    finally:
        for t in background:
            t.cancel()
        for t in background:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        await runner.cleanup()
        await daemon.upstream.close()
        if own_socket:
            with contextlib.suppress(FileNotFoundError):
                paths.socket.unlink()
        if startup_lock is not None:
            os.close(startup_lock)


async def _watchdog(notifier: service.Notifier, interval: float) -> None:
    while True:
        notifier.watchdog()
        await asyncio.sleep(interval)
