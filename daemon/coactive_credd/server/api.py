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
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, cast

from aiohttp import web

from coactive_credd.core import config, engine, gitcred
from coactive_credd.core.escape import escape
from coactive_credd.core.request import BadQuery, parse_min_ttl, parse_query, wants_plain_text
from coactive_credd.server import apiproxy, audit, events, logguard, statusdoc
from coactive_credd.server.adminroutes import AdminRoutes, json_body
from coactive_credd.server.errors import ApiError, no_token, refused_peer, too_long
from coactive_credd.server.peer import peer_credentials
from coactive_credd.server.profile import Profile
from coactive_credd.server.refresh import Daemon
from coactive_credd.vault import unlock_hint

log = logging.getLogger("coactive_credd")

EVENT_STREAMS_PER_UID = 32  # /v1/events streams one uid may hold open at once
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


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
        self.admin = AdminRoutes(daemon)
        self._routes: dict[
            tuple[str, str], Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
        ] = {
            ("GET", "/v1/token"): self.get_token,
            ("GET", "/v1/credential"): self.get_credential,
            ("POST", "/v1/token/refresh"): self.post_refresh,
            ("GET", "/v1/status"): self.get_status,
            ("GET", "/healthz"): self.get_healthz,
            ("GET", "/v1/events"): self.get_events,
            ("POST", "/v1/admin/reload"): self.admin.post_reload,
            ("POST", "/v1/admin/lock"): self.admin.post_lock,
            ("POST", "/v1/admin/unlock"): self.admin.post_unlock,
            ("POST", "/v1/admin/credentials"): self.admin.post_credentials,
            ("POST", "/v1/admin/credentials/remove"): self.admin.post_credentials,
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

    def _failure(self, p: Profile, now: float) -> ApiError:
        return no_token(p, now, self.d.boot_clock(), self.d.policy)

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
            raise too_long(min_ttl, p.rt.token)  # no login: no token Coactive issues would do
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
            raise too_long(min_ttl, tok)
        raise self._failure(p, now)

    async def post_refresh(self, request: web.BaseRequest) -> web.Response:
        p = self._profile(request)
        rejected = None
        doc = await json_body(request, '{"rejected_token_sha256": "<hex>"}')
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
