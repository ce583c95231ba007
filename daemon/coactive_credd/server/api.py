"""The socket protocol (v1): the peer check, the routes and the error answers.

Runs on aiohttp's low-level server (no router, no middleware, no access log): every request
is one of a handful of paths, and the token answer sits on the hot path of every API call a
user makes. What the answers mean is decided in :mod:`refresh` and :mod:`engine`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import socket
import struct
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, cast

from aiohttp import web

from coactive_credd.core import config, engine, gitcred
from coactive_credd.core.escape import escape
from coactive_credd.core.request import BadQuery, parse_min_ttl, parse_query, wants_plain_text
from coactive_credd.server import admin, apiproxy, audit, events, logguard, statusdoc
from coactive_credd.server.errors import ApiError, refused_peer
from coactive_credd.server.refresh import Daemon, Profile
from coactive_credd.vault import VaultError, WrongPassphrase, credfile, unlock_hint

log = logging.getLogger("coactive_credd")

MAX_BODY = 4096
EVENT_STREAMS_PER_UID = 32  # /v1/events streams one uid may hold open at once
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


_SO_PEERCRED: int | None = getattr(socket, "SO_PEERCRED", None)
_UCRED = struct.Struct("=iII")  # pid_t is signed; uid_t and gid_t are unsigned (to 2**32 - 2)


def peer_credentials(sock: Any) -> tuple[int, int | None]:
    """The (uid, pid) of the process at the other end of a connected Unix socket, as the
    kernel gives them: the uid unsigned (a ``uid_t``, 0 to 2**32 - 2); the pid, or None on
    macOS, whose ``LOCAL_PEERCRED`` gives none. Raises OSError from ``getsockopt`` (not a
    Unix socket, or not connected). Linux: ``SO_PEERCRED``, unix(7); macOS: ``struct
    xucred`` in sys/ucred.h."""
    if _SO_PEERCRED is not None:  # Linux: struct ucred {pid_t pid; uid_t uid; gid_t gid;}
        pid, uid, _gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, _SO_PEERCRED, 12))
        return uid, pid
    # macOS/BSD: LOCAL_PEERCRED on SOL_LOCAL (0) answers a struct xucred {u_int version; uid_t uid; ...}
    raw = sock.getsockopt(0, 0x001, 76)
    _version, uid = struct.unpack_from("II", raw)
    return uid, None


def _too_long(min_ttl: int, tok: engine.Token) -> ApiError:
    return ApiError(
        400,
        "bad_request",
        f"min_ttl={min_ttl} is longer than the tokens Coactive issues ({int(tok.lifetime)} s)",
        "ask for a smaller min_ttl",
    )


class Api:
    """Answers the socket protocol for a :class:`Daemon`."""

    def __init__(self, daemon: Daemon) -> None:
        self.d = daemon
        self.uid = os.geteuid()
        self.events = events.Hub(daemon)
        self._peers: weakref.WeakKeyDictionary[Any, tuple[int, int | None]] = (
            weakref.WeakKeyDictionary()
        )
        self.audit = audit.Audit(daemon.clock)
        self._streams: dict[int, int] = {}  # open /v1/events streams per uid
        self._clients: weakref.WeakKeyDictionary[Any, audit.Client] = weakref.WeakKeyDictionary()
        self.proxy = apiproxy.ApiProxy(self.d, self._failure)
        self._routes: dict[
            tuple[str, str], Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
        ] = {
            ("GET", "/v1/token"): self.get_token,
            ("GET", "/v1/credential"): self.get_credential,
            ("POST", "/v1/token/refresh"): self.post_refresh,
            ("GET", "/v1/status"): self.get_status,
            ("GET", "/healthz"): self.get_healthz,
            ("GET", "/v1/events"): self.get_events,
            ("POST", "/v1/admin/reload"): self.post_reload,
            ("POST", "/v1/admin/lock"): self.post_lock,
            ("POST", "/v1/admin/unlock"): self.post_unlock,
            ("POST", "/v1/admin/credentials"): self.post_credentials,
            ("POST", "/v1/admin/credentials/remove"): self.post_credentials,
            ("GET", "/metrics"): self.get_metrics,
            ("GET", "/v1/audit"): self.get_audit,
        }

    def peer_allowed(self, uid: int) -> bool:
        """May a peer of this uid use the socket? The daemon's own, and ``allowed_uids``."""
        return uid == self.uid or uid in self.d.cfg.daemon.allowed_uids

    def _peer(self, request: web.BaseRequest) -> tuple[int, int | None]:
        """The peer's (uid, pid), asked of the kernel once per connection, not per request."""
        transport = request.transport
        if transport is None:
            return -1, None
        try:
            return self._peers[transport]
        except KeyError:
            pass
        except TypeError:  # a transport that takes no weak reference: ask every time
            return peer_credentials(transport.get_extra_info("socket"))
        sock = transport.get_extra_info("socket")
        peer = peer_credentials(sock) if sock is not None else (-1, None)
        self._peers[transport] = peer
        return peer

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        try:
            uid, pid = self._peer(request)
            # the fast path refuses these first; here for a reload that changed allowed_uids
            if not self.peer_allowed(uid):
                logguard.refusals.warn(
                    "forbidden",
                    "refused a request from uid %d (pid %s): not the daemon's uid nor in allowed_uids",
                    uid,
                    pid,
                )
                raise refused_peer(uid, self.uid)
            if uid != self.uid and request.path.startswith("/v1/admin/"):
                raise ApiError(
                    403,
                    "forbidden",
                    "only the daemon's own user may lock, unlock or reload it",
                    "run the command as the user who runs coactive-credd",
                )
            if apiproxy.is_proxied(request):  # the API proxy: /api/... to Coactive
                return await self.proxy.handle(request, self._client(request))
            route = self._routes.get((request.method, request.path))
            if route is None:
                if any(path == request.path for _, path in self._routes):
                    raise ApiError(
                        405,
                        "bad_request",
                        f"{escape(request.method, 20)} is not allowed on {escape(request.path, 120)}",
                        "see docs/PROTOCOL.md",
                    )
                raise ApiError(
                    404,
                    "not_found",
                    f"no such path: {escape(request.path, 120)}",
                    "the API is GET /v1/token, POST /v1/token/refresh, GET /v1/status, GET /healthz",
                )
            return await route(request)
        except ApiError as exc:
            self.d.stats.refused[exc.code] += 1
            return exc.response()
        except ConnectionError:  # the caller went away mid-request: nobody to answer
            log.debug("connection lost answering %s %s", request.method, request.path)
            return web.Response(status=499)
        except Exception:
            log.exception("internal error answering %s %s", request.method, request.path)
            return ApiError(
                500, "internal", "internal error in coactive-credd", "see the daemon's log"
            ).response()

    @staticmethod
    def _query(request: web.BaseRequest) -> dict[str, str]:
        """The query as the fast path reads it (:func:`request.parse_query`), not yarl's."""
        return parse_query(request.rel_url.raw_query_string)

    def _profile(self, request: web.BaseRequest) -> Profile:
        name = self._query(request).get("profile") or "default"
        try:
            config.check_profile_name(name)
        except ValueError as exc:
            raise ApiError(400, "bad_request", str(exc), "pass ?profile=NAME") from None
        p = self.d.profiles.get(name)
        if p is None:
            raise ApiError(
                404,
                "unknown_profile",
                f"no profile named {name!r}",
                f"run `coactive-credd login --profile {name}`",
            )
        if self.d.locked:
            raise ApiError(423, "locked", "the vault is locked", unlock_hint(self.d.key_source))
        return p

    def connected(self, uid: int, pid: int | None) -> audit.Client:
        """Record a new connection in the audit trail (once per connection); the entry its
        tokens are counted on."""
        self.d.stats.connections += 1
        return self.audit.connected(uid, pid)

    def handed_over(self, transport: Any, entry: audit.Client) -> None:
        """A connection the fast path recorded (:meth:`connected`) goes to aiohttp: its
        handlers count on the same entry, and its peer, read once when it connected, is not
        asked of the kernel again. Only hand-overs pay for the weak references."""
        with contextlib.suppress(TypeError):  # a transport that takes no weak reference
            self._clients[transport] = entry
            self._peers[transport] = (entry.uid, entry.pid)

    def _client(self, request: web.BaseRequest) -> audit.Client:
        transport = request.transport
        try:
            return self._clients[transport]
        except (KeyError, TypeError):
            uid, pid = self._peer(request)
            entry = self.connected(uid, pid)
            self.handed_over(transport, entry)
            return entry

    def _answer(self, request: web.BaseRequest, p: Profile, now: float) -> web.Response:
        tok = p.rt.token
        assert tok is not None
        self._client(request).slow[p.cfg.name] += 1
        if wants_plain_text(",".join(request.headers.getall("Accept", ()))):
            return web.Response(text=tok.access_token)
        return web.Response(
            body=p.render(now, self.d.boot_clock()), content_type="application/json"
        )

    @staticmethod
    def _relogin_hint(p: Profile) -> str:
        """A refused credential is replaced (a personal token made anew first); none stored,
        or stored ones that are malformed, are stored again with the same login."""
        name, auth, base_url = p.cfg.name, p.cfg.auth, p.cfg.base_url
        if (p.rt.last_error or "").startswith("Coactive refused"):
            return config.reauth_fix(name, auth, p.client_id, base_url)
        return f"run `{config.login_command(name, auth, p.client_id, base_url)}`"

    def _failure(self, p: Profile, now: float) -> ApiError:
        name = p.cfg.name
        if p.rt.reauth:
            return ApiError(
                424,
                "reauth_required",
                # why: Coactive's refusal, or none stored, or stored ones that are malformed
                f"profile {name!r} needs new credentials: {p.rt.last_error}",
                credfile.fix_hint(p.cfg) or self._relogin_hint(p),
            )
        tok, boot = p.rt.token, self.d.boot_clock()
        retry_in = p.rt.retry_in(now, boot)
        retry = "" if retry_in is None else f"; next attempt in {max(0, int(retry_in))} s"
        # Within a backoff or Coactive's Retry-After a forced refresh is refused too: say when.
        when = "then" if retry_in is None or retry_in <= 0 else f"in {int(retry_in) + 1} s"
        if tok is not None and engine.servable(tok, now, self.d.policy, boot=boot):
            # A forced refresh that failed: the token being served is still good.
            left = int(engine.serve_until(tok, self.d.policy, now, boot) - now)
            return ApiError(
                503,
                "upstream_unavailable",
                f"no new token for profile {name!r}: Coactive cannot be reached "
                f"({p.rt.last_error}){retry}; the current token is still served for {left} s",
                f"check the network and `coactive-credd status`; `coactive-credd refresh --profile {name}` works {when}",
            )
        return ApiError(
            503,
            "upstream_unavailable",
            f"no valid token for profile {name!r} and Coactive cannot be reached ({p.rt.last_error}){retry}",
            f"check the network and `coactive-credd status`; `coactive-credd refresh --profile {name}` works {when}",
        )

    async def get_token(self, request: web.BaseRequest) -> web.Response:
        return await self._serve(request, self._profile(request))

    async def get_credential(self, request: web.BaseRequest) -> web.Response:
        """The git helper's one call: the token of the profile :mod:`gitcred` picks for the
        origin git asks about (``protocol``, ``host``, ``username``, and the client's
        ``profile`` from COACTIVE_PROFILE), like ``/v1/token`` plus ``password_expiry_utc``
        (epoch seconds: the serving deadline, ``expires_at - skew``); 404 ``no_match`` when
        no profile answers."""
        q = self._query(request)
        protocol, host = q.get("protocol", ""), q.get("host", "")
        if protocol.lower() not in gitcred.DEFAULT_PORTS or not host:
            raise ApiError(
                400,
                "bad_request",
                "protocol (https or http) and host are needed",
                "pass ?protocol=https&host=HOST[:PORT]",
            )
        wanted = gitcred.git_origin(protocol, host)
        name = gitcred.choose(
            (
                n
                for n, p in self.d.profiles.items()
                if wanted is not None and gitcred.base_url_origin(p.cfg.base_url) == wanted
            ),
            q.get("username"),
            q.get("profile"),
        )
        if name is None:
            raise ApiError(
                404,
                "no_match",
                f"no profile answers for {protocol}://{host[:256]!r}",
                "`coactive-credd status` lists the profiles and their base URLs",
            )
        if self.d.locked:
            raise ApiError(423, "locked", "the vault is locked", unlock_hint(self.d.key_source))
        p = self.d.profiles[name]
        resp = await self._serve(request, p)
        tok = p.rt.token  # the one just rendered: nothing awaited since
        if resp.status != 200 or tok is None or resp.content_type != "application/json":
            return resp
        doc = json.loads(cast(bytes, resp.body))
        doc["password_expiry_utc"] = int(
            engine.serve_until(tok, self.d.policy, self.d.clock(), self.d.boot_clock())
        )
        return web.Response(body=json.dumps(doc).encode(), content_type="application/json")

    async def _serve(self, request: web.BaseRequest, p: Profile) -> web.Response:
        try:
            min_ttl = parse_min_ttl(self._query(request).get("min_ttl"))
        except BadQuery as exc:
            raise ApiError(400, "bad_request", exc.message, exc.hint) from None
        now = self.d.last_use = self.d.clock()
        action = engine.decide(p.rt, now, self.d.policy, min_ttl, self.d.boot_clock())
        if action is engine.Action.SERVE:
            return self._answer(request, p, now)
        if action is engine.Action.SERVE_AND_REFRESH:
            self.d.start_refresh(p)
            return self._answer(request, p, now)
        if action is engine.Action.WAIT_FOR_REFRESH:
            await asyncio.shield(self.d.start_refresh(p))
            return self._after_refresh(request, p, min_ttl)
        if action is engine.Action.FAIL_UNSATISFIABLE and p.rt.token is not None:
            raise _too_long(min_ttl, p.rt.token)  # no login: no token Coactive issues would do
        raise self._failure(p, now)

    def _after_refresh(self, request: web.BaseRequest, p: Profile, min_ttl: int) -> web.Response:
        now, boot = self.d.clock(), self.d.boot_clock()
        tok = p.rt.token
        if tok is not None and engine.servable(tok, now, self.d.policy, min_ttl, boot):
            return self._answer(request, p, now)
        if (
            tok is not None
            and p.rt.failures == 0
            and not p.rt.reauth
            and engine.servable(tok, now, self.d.policy, boot=boot)
        ):
            raise _too_long(min_ttl, tok)
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
        if rejected is not None:
            # One rule for every report (the API proxy's 401s too): no login in
            # reauth_required, nor inside a backoff or Retry-After window, whoever asks; the
            # answer says so rather than passing the old token off as new.
            if not await self.d.replace_rejected(p, rejected.lower()):
                raise self._failure(p, self.d.clock())
            return self._after_refresh(request, p, 0)
        now = self.d.clock()
        if p.inflight is None and self._peer(request)[0] == self.uid:
            # The owner's own refresh tries rejected credentials again; an allowed uid's never
            # does (it cannot fix them, and each try is a failed login).
            p.rt.on_explicit_refresh()
        if p.inflight is None and (p.rt.reauth or p.rt.in_backoff(now, self.d.boot_clock())):
            raise self._failure(p, now)  # and, when the token is still served, for how long
        await asyncio.shield(self.d.start_refresh(p))
        if p.rt.reauth or p.rt.failures:  # the caller asked for a new token and got none
            raise self._failure(p, self.d.clock())
        return self._after_refresh(request, p, 0)

    async def _json_body(self, request: web.BaseRequest, shape: str) -> dict[str, Any] | None:
        """The request's JSON object body, None if there is none; 400/413 otherwise. A
        ``Content-Length`` over :data:`MAX_BODY` bytes is refused before reading; a body is
        read to its end however it arrives (one read may return only its first part)."""
        too_large = ApiError(
            413, "bad_request", "request body too large", f"send at most {MAX_BODY} bytes"
        )
        if (request.content_length or 0) > MAX_BODY:
            raise too_large
        body = b""
        while len(body) <= MAX_BODY:
            chunk = await request.content.read(MAX_BODY + 1 - len(body))
            if not chunk:
                break
            body += chunk
        if len(body) > MAX_BODY:
            raise too_large
        if not body.strip():
            return None
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            doc = None
        if not isinstance(doc, dict):
            raise ApiError(400, "bad_request", "body is not a JSON object", f"send {shape}")
        return doc

    async def post_lock(self, request: web.BaseRequest) -> web.Response:
        if self.d.key_source != "passphrase":
            raise ApiError(
                409,
                "bad_request",
                "the vault has no passphrase, so it cannot be locked",
                "protect it first: `coactive-credd rekey --passphrase-stdin`",
            )
        if not self.d.locked:
            self.d.lock_now("lock requested")
        return web.json_response({"ok": True, "locked": True})

    async def post_unlock(self, request: web.BaseRequest) -> web.Response:
        doc = await self._json_body(request, '{"passphrase": "..."}')
        passphrase = doc.get("passphrase") if doc else None
        if not isinstance(passphrase, str) or not passphrase:
            raise ApiError(400, "bad_request", "no passphrase given", 'send {"passphrase": "..."}')
        try:
            await self.d.unlock(passphrase)
        except WrongPassphrase:
            raise ApiError(
                401,
                "wrong_passphrase",
                "wrong passphrase; the vault stays locked",
                "run `coactive-credd unlock` again",
            ) from None
        except VaultError as exc:
            raise ApiError(409, "bad_request", str(exc), "see `coactive-credd status`") from None
        return web.json_response(
            {"ok": True, "locked": self.d.locked, "profiles": len(self.d.profiles)}
        )

    async def post_credentials(self, request: web.BaseRequest) -> web.Response:
        """The CLI's vault writes, made here when only the daemon holds the key (admin.py)."""
        doc = await self._json_body(request, '{"profile": "...", "secret": "..."}') or {}
        fn = admin.remove_credentials if request.path.endswith("/remove") else admin.put_credentials
        try:
            return web.json_response(await fn(self.d, doc))
        except admin.AdminError as exc:
            raise ApiError(exc.status, exc.code, exc.message, exc.hint) from None

    async def get_status(self, request: web.BaseRequest) -> web.Response:
        body = statusdoc.status_document(self.d)
        return web.Response(body=json.dumps(body).encode(), content_type="application/json")

    async def get_metrics(self, request: web.BaseRequest) -> web.Response:
        """Prometheus text exposition (see :mod:`metrics`); 503 without prometheus-client."""
        from coactive_credd.server import metrics

        try:
            body, content_type = metrics.render(self.d, self.audit)
        except metrics.MetricsUnavailable as exc:
            raise ApiError(503, "metrics_unavailable", str(exc), metrics.INSTALL_HINT) from None
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def get_audit(self, request: web.BaseRequest) -> web.Response:
        """``{"max_clients", "clients": [{uid, pid, exe, first_seen, last_seen, connections,
        tokens, profiles}]}`` — who took tokens, the most recently seen last; never a token.
        Only for the daemon's own user: an app container in ``allowed_uids`` takes tokens but
        does not see which other programs do."""
        if self._peer(request)[0] != self.uid:
            raise ApiError(
                403,
                "forbidden",
                "only the daemon's own user may read the audit trail",
                "run `coactive-credd audit` as the user who runs coactive-credd",
            )
        body = {
            "max_clients": self.audit.max_clients,
            "clients": [c.as_dict() for c in self.audit.clients()],
        }
        return web.Response(body=json.dumps(body).encode(), content_type="application/json")

    async def get_events(self, request: web.BaseRequest) -> web.StreamResponse:
        """``/v1/events``, at most :data:`EVENT_STREAMS_PER_UID` open per uid (429 beyond):
        a program that leaks streams (a dead one lingers until its next heartbeat fails)
        uses up its own streams, not the connections the other uids need."""
        uid, _ = self._peer(request)
        held = self._streams.get(uid, 0)
        if held >= EVENT_STREAMS_PER_UID:
            raise ApiError(
                429,
                "too_many_streams",
                f"uid {uid} already holds {held} event streams, the most one uid may",
                "close the event streams this user no longer reads",
            )
        self._streams[uid] = held + 1
        try:
            return await self.events.handle(request)
        finally:
            left = self._streams[uid] - 1
            if left:
                self._streams[uid] = left
            else:
                del self._streams[uid]

    async def get_healthz(self, request: web.BaseRequest) -> web.Response:
        return web.Response(text="ok")

    async def post_reload(self, request: web.BaseRequest) -> web.Response:
        self.d.reload()
        return web.Response(
            body=json.dumps({"ok": True, "profiles": len(self.d.profiles)}).encode(),
            content_type="application/json",
        )
