"""The hot path: ``GET /v1/token`` answered without aiohttp's per-request machinery.

Every connection starts on :class:`FastConnection`. A request it understands completely and
can answer at once — ``GET /v1/token`` for a token being served right now, or
``GET /healthz``, HTTP/1.1 with no body and nothing unusual in its head — is answered here
from the profile's pre-rendered body. Anything else (other paths and methods, bodies, a
caller who must wait for a refresh, every error, any header it does not know how to judge,
another uid) hands the connection over to aiohttp's server with every byte not yet answered,
and aiohttp owns it from then on. So aiohttp's parser and handlers see everything but the two
simplest requests, and the answers are the same either way: what a head means is read by :mod:`request`, for
both paths.

The benchmarks showed why: aiohttp's request cycle costs about 31 µs a request on this
machine, six times the daemon's own work, and a task and timers for every new connection.

One thing, kept in one module though long: the connection protocol, its per-uid share of
the connection cap and the site that accepts into it are the token hot path, tuned and
measured together (docs/BENCHMARKS.md); its code stays where the benchmarks measured it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import Any, cast

from aiohttp import web

from coactive_credd.core import engine
from coactive_credd.core.request import (
    MAX_HEADERS,
    MAX_LINE,
    BadQuery,
    could_become_head,
    parse_head,
    parse_min_ttl,
    parse_query,
)
from coactive_credd.server import audit, logguard
from coactive_credd.server.api import Api
from coactive_credd.server.errors import refused_peer
from coactive_credd.server.peer import peer_credentials

__all__ = [
    "IDLE",
    "MAX_HEADERS",
    "MAX_LINE",
    "REFUSED_WAIT",
    "FastConnection",
    "FastSite",
    "Shares",
]

log = logging.getLogger("coactive_credd")

MAX_HEAD = MAX_LINE * 2
IDLE = 60.0  # seconds an idle keep-alive connection is kept, as aiohttp's keepalive_timeout
# Bytes of answers queued for a caller who does not read them before reading its requests
# stops (asyncio's pause_writing): a few hundred answers, not the whole burst it sent.
WRITE_HIGH = 16 * 1024
WRITE_LOW = 4 * 1024
KERNEL_SNDBUF = 32 * 1024  # SO_SNDBUF of each connection (Linux doubles it for bookkeeping)
_CAP = "%d connections are open, the most this daemon keeps"
_SHARE = "uid %d holds %d connections, its share of the %d this daemon keeps"
_WHY = "; some local program opens connections without closing them"
REFUSED_WAIT = 1.0  # seconds a refused peer has to send its head before its 403 comes anyway
_OK_HEALTHZ = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 2\r\n\r\nok"
)


def _eviction_order(conn: FastConnection) -> tuple[bool, float]:
    """Which connection makes room at the cap: first those that never had an answer or do
    not read theirs (held open, or flooding), then the rest; the longest idle first."""
    return (conn.answered > 0 and not conn.writing_paused, conn.active)


class Shares:
    """Open connections per uid, fast path and aiohttp's together, shared by every site.

    Each uid the daemon lets in (its own and ``allowed_uids``) has an equal share of the
    connection cap (:meth:`share`), so no uid, however many connections or event streams it
    holds, can take the connections another allowed uid needs."""

    def __init__(self) -> None:
        self._held: dict[int, int] = {}
        self._for: frozenset[int] | None = None  # the allowed_uids _share was worked out for
        self._cap = 0
        self._share = 0

    def held(self, uid: int) -> int:
        return self._held.get(uid, 0)

    def add(self, uid: int) -> None:
        self._held[uid] = self._held.get(uid, 0) + 1

    def release(self, uid: int) -> None:
        left = self._held.get(uid, 0) - 1
        if left > 0:
            self._held[uid] = left
        else:
            self._held.pop(uid, None)

    def share(self, api: Api, cap: int) -> int:
        """Connections one uid may hold: the cap over the number of uids let in (the
        daemon's own and ``allowed_uids``, as configured now; worked out again only when a
        reload changed them)."""
        allowed = api.d.cfg.daemon.allowed_uids
        if allowed is not self._for or cap != self._cap:
            self._for, self._cap = allowed, cap
            self._share = max(1, cap // (len(allowed - {api.uid}) + 1))
        return self._share


class _Counted(asyncio.Protocol):
    """aiohttp's handler of a handed-over connection, with its place in :class:`Shares`
    given back when the connection ends. Only handed-over connections pay for the call."""

    def __init__(self, handler: asyncio.Protocol, shares: Shares, uid: int) -> None:
        self.handler, self.shares, self.uid = handler, shares, uid

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.handler.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.handler.data_received(data)

    def eof_received(self) -> bool | None:
        return self.handler.eof_received()

    def pause_writing(self) -> None:
        self.handler.pause_writing()

    def resume_writing(self) -> None:
        self.handler.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            self.handler.connection_lost(exc)
        finally:
            self.shares.release(self.uid)


class FastConnection(asyncio.Protocol):
    def __init__(
        self,
        api: Api,
        fallback: web.Server,
        live: set[FastConnection],
        fast: bool,
        cap: int,
        shares: Shares | None = None,
    ) -> None:
        if shares is None:
            shares = Shares()
        self.api = api
        self.fallback = fallback
        self.live = live
        self.fast = fast
        self.cap = cap
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.loop = asyncio.get_running_loop()  # made by the listening server, in its loop
        self.active = 0.0  # loop time of the last bytes read (FastSite's idle sweep reads it)
        self.answered = 0  # requests answered on this connection
        self.writing_paused = False
        self.client: audit.Client | None = None  # its entry in the audit trail
        self.tokens: dict[str, int] = {}  # its audit entry's counts, once the peer is known
        self.shares = shares
        self.uid = -1
        self.counted = False  # in shares (released when the connection ends)
        self.refused = False
        self._refuse_timer: asyncio.TimerHandle | None = None

    # ---- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        sock = self.transport.get_extra_info("socket")
        uid, pid = peer_credentials(sock) if sock is not None else (-1, None)
        self.uid = uid
        if not self.api.peer_allowed(uid):
            # Refused here, for every path: its 403 once its head is in (or after
            # REFUSED_WAIT), then closed. It is never counted against the cap nor any share,
            # so a uid the daemon refuses costs the allowed uids nothing.
            # Not in the audit trail either: a refused uid's executables never push the
            # allowed uids' entries out of its bounded table.
            self.refused = True
            self.api.d.stats.connections += 1
            self.api.d.stats.refused["forbidden"] += 1
            logguard.refusals.warn(
                "forbidden",
                "refused a request from uid %d (pid %s): not the daemon's uid nor in allowed_uids",
                uid,
                pid,
            )
            self._refuse_timer = self.loop.call_later(REFUSED_WAIT, self._refuse)
            return
        if self.cap:
            share = self.shares.share(self.api, self.cap)
            mine = self.shares.held(uid) >= share
            if mine or len(self.live) + len(self.fallback.connections) >= self.cap:
                # At its uid's share (or the cap), a fast-path connection makes room (nginx
                # does the same with idle keep-alive connections): one never answered or
                # not reading its answers first, the longest idle first, so a program that
                # opens connections and leaves them open cannot lock the others out, nor
                # push out callers that use theirs. At its share, only one of the same
                # uid's own connections makes room: one uid's connections never push out
                # another's. When none can, the new one is refused.
                pool = [c for c in self.live if c.uid == uid] if mine else self.live
                idle = min(pool, key=_eviction_order, default=None)
                args: tuple[int, ...]
                if mine:
                    what, args = _SHARE, (uid, self.shares.held(uid), self.cap)
                else:
                    what, args = _CAP, (self.cap,)
                if idle is None:
                    logguard.refusals.warn(
                        "cap", "refusing connections: " + what + ", all busy" + _WHY, *args
                    )
                    self.transport.abort()
                    self.transport = None
                    return
                logguard.refusals.warn(
                    "evict",
                    what + ": closing an idle one for each new one (never answered or not "
                    "reading first, the longest idle first)" + _WHY,
                    *args,
                )
                self.live.discard(idle)
                idle.close()
        # The audit trail looks at each connection once, here; a token served adds one to
        # its client's count (answer), nothing more per request.
        self.client = self.api.connected(uid, pid)
        self.tokens = self.client.fast
        self.shares.add(uid)
        self.counted = True
        self.live.add(self)
        self.transport.set_write_buffer_limits(WRITE_HIGH, WRITE_LOW)
        if not self.fast:
            self.hand_over()  # the fast path switched off: aiohttp answers everything
            return
        self.active = self.loop.time()

    def _refuse(self) -> None:
        """A refused peer's answer (aiohttp's 403 for it, word for word), then the close."""
        if self._refuse_timer is not None:
            self._refuse_timer.cancel()
            self._refuse_timer = None
        transport, self.transport, self.buf = self.transport, None, b""
        if transport is not None and not transport.is_closing():
            body = refused_peer(self.uid, self.api.uid).body()
            transport.write(
                b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
            )
            transport.close()

    def data_received(self, data: bytes) -> None:
        self.buf = self.buf + data if self.buf else data
        if self.refused:  # answered once its head is in: a client still writing gets no EPIPE
            if b"\r\n\r\n" in self.buf or len(self.buf) > MAX_LINE:
                self._refuse()
            return
        self.active = self.loop.time()
        self._process()

    def _process(self) -> None:
        # Stops while writing is paused: a caller who sends a burst of requests and reads
        # no answers gets at most WRITE_HIGH bytes of them queued, not one per request. The
        # buffer is walked with an offset and cut once, not copied after every request.
        buf, pos = self.buf, 0
        while self.transport is not None and not self.writing_paused:
            end = buf.find(b"\r\n\r\n", pos, pos + MAX_HEAD + 4)
            if end < 0:
                # A head still arriving that can no longer become one answered here (a bare
                # CR or LF, a byte no narrow head holds, too long...): aiohttp decides on
                # these bytes now, as it would without the fast path, not after an end
                # that may never come.
                if pos < len(buf) and not could_become_head(buf, pos):
                    self.buf = buf[pos:]
                    self.hand_over()
                    return
                break
            try:
                answer = self.answer(buf[pos:end])
            except Exception:  # a bug here must cost the fast path, not the caller's answer
                log.exception("the fast path failed on a request; aiohttp answers it")
                answer = None
            # Bytes after a "Connection: close" request: aiohttp's parser refuses the lot
            # (400), and it answers so that both paths give the same answer.
            if answer is None or (answer[1] and len(buf) > end + 4):
                self.buf = buf[pos:]
                self.hand_over()
                return
            pos = end + 4
            reply, close = answer
            self.answered += 1
            if self.answered == 2:
                self._small_kernel_buffer(self.transport)
            self.transport.write(reply)
            if close:  # nothing after a "Connection: close" is read (RFC 9112 §9.6)
                self.buf = b""
                self.close()
                return
        self.buf = buf[pos:] if pos else buf

    def connection_lost(self, exc: Exception | None) -> None:
        self.live.discard(self)
        self.transport = None
        if self._refuse_timer is not None:
            self._refuse_timer.cancel()
            self._refuse_timer = None
        if self.counted:
            self.counted = False
            self.shares.release(self.uid)

    def pause_writing(self) -> None:
        # A caller that sends requests but does not read the answers: stop reading its
        # requests until it has read most of what is queued.
        self.writing_paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.transport is not None and self.buf:
            self._process()  # the requests read before the pause
        if self.transport is not None and not self.writing_paused:
            self.transport.resume_reading()

    # ---- the requests answered here -----------------------------------------------------

    def answer(self, head: bytes) -> tuple[bytes, bool] | None:
        """The whole answer to a request head, and whether to close after it; None when
        aiohttp should take the request."""
        parsed = parse_head(head)
        if parsed is None:
            return None
        target, close = parsed
        if target == b"/healthz":
            return _OK_HEALTHZ, close
        path, _, query = target.partition(b"?")
        if path != b"/v1/token":
            return None
        params = parse_query(query.decode("ascii"))
        try:
            min_ttl = parse_min_ttl(params.get("min_ttl"))
        except BadQuery:
            return None  # aiohttp's handler writes the 400
        d = self.api.d
        p = d.profiles.get(params.get("profile") or "default")
        if p is None or d.locked:
            return None
        now = d.last_use = d.clock()
        boot = d.boot_clock()
        action = engine.decide(p.rt, now, d.policy, min_ttl, boot)
        if action is engine.Action.SERVE_AND_REFRESH:
            d.start_refresh(p)
        elif action is not engine.Action.SERVE:
            return None
        body = p.render(now, boot)
        try:  # a plain dict: the cheapest counter Python has (a Counter is ~3x slower)
            self.tokens[p.cfg.name] += 1
        except KeyError:
            self.tokens[p.cfg.name] = 1
        head_out = (
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\n"
            b"Content-Length: %d\r\n%s\r\n"
            % (len(body), b"Connection: close\r\n" if close else b"")
        )
        return head_out + body, close

    # ---- handing over, closing, idling --------------------------------------------------

    def hand_over(self) -> None:
        """From now on aiohttp's server owns this connection, with the bytes not answered.

        Flow control goes with it: reading paused here for a caller who does not read is
        resumed (aiohttp pauses on its own terms), and a transport whose writing is paused
        tells aiohttp so, since it will only ever hear the matching resume."""
        transport, pending = self.transport, self.buf
        self.live.discard(self)
        self.transport, self.buf = None, b""
        if transport is None or transport.is_closing():
            return
        if self.client is not None:
            self.api.handed_over(transport, self.client)
        handler = self.fallback()
        counted, self.counted = self.counted, False
        transport.set_protocol(_Counted(handler, self.shares, self.uid) if counted else handler)
        handler.connection_made(transport)
        if self.writing_paused:
            handler.pause_writing()
            self.writing_paused = False
        transport.resume_reading()
        if pending:
            handler.data_received(pending)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _small_kernel_buffer(self, transport: asyncio.Transport) -> None:
        """Shrink the kernel's send buffer of this connection to :data:`KERNEL_SNDBUF`.

        Done at a connection's second request, not at its start: a caller that asks once and
        hangs up (most shims) never queues more than one answer, and the ``setsockopt`` (a
        socket object made and detached under uvloop) was a fifth of a new connection's cost.
        A caller that sends a burst and never reads has at most one answer queued before it.
        """
        sock = transport.get_extra_info("socket")
        if sock is not None:  # answers are ~250 bytes; Linux doubles the figure for its books
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, KERNEL_SNDBUF)


class FastSite(web.SockSite):
    """aiohttp's SockSite, with every connection starting on :class:`FastConnection`.

    ``fast=False`` hands every connection to aiohttp at once (``COACTIVE_CREDD_FAST_PATH=0``):
    the same daemon without the fast path, to compare answers against or to rule it out.
    ``max_connections`` (0: no cap) bounds the connections open at once, fast and handed
    over together; one more closes a fast-path connection (one never answered or not reading
    first, then the longest idle) or, when every open one is aiohttp's, is refused; one
    rate-limited log line either way.

    A fast-path connection idle for :data:`IDLE` seconds is closed by one sweep over them all,
    every quarter of IDLE (so after 60 to 75 s, aiohttp's own default being 75 s), rather
    than by a timer made for each connection: a caller that connects once per token pays for
    no timer at all."""

    def __init__(
        self,
        runner: web.ServerRunner,
        sock: Any,
        api: Api,
        *,
        fast: bool,
        max_connections: int,
        shares: Shares | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(runner, sock, **kwargs)
        self._shares = shares if shares is not None else Shares()
        self._api = api
        self._fast = fast
        self._cap = max_connections
        self._live: set[FastConnection] = set()
        self._sweeper: asyncio.TimerHandle | None = None

    def _sweep(self) -> None:
        """Close every fast-path connection idle for :data:`IDLE` seconds; come back later."""
        loop = asyncio.get_running_loop()
        quiet_since = loop.time() - IDLE
        for conn in [c for c in self._live if c.active <= quiet_since]:
            conn.close()
        self._sweeper = loop.call_later(IDLE / 4, self._sweep)

    async def start(self) -> None:
        await web.BaseSite.start(self)
        server = self._runner.server
        assert isinstance(server, web.Server)
        loop = asyncio.get_running_loop()
        self._sweeper = loop.call_later(IDLE / 4, self._sweep)
        self._server = await loop.create_server(
            lambda: FastConnection(
                self._api, server, self._live, self._fast, self._cap, self._shares
            ),
            sock=self._sock,
            backlog=self._backlog,
        )

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        await super().stop()
        for conn in list(self._live):
            with contextlib.suppress(Exception):
                conn.close()
