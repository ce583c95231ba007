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
    bare_lf,
    parse_head,
    parse_min_ttl,
    parse_query,
)
from coactive_credd.server import audit, logguard
from coactive_credd.server.api import Api, peer_credentials

__all__ = ["IDLE", "MAX_HEADERS", "MAX_LINE", "FastConnection", "FastSite"]

log = logging.getLogger("coactive_credd")

MAX_HEAD = MAX_LINE * 2
IDLE = 60.0  # seconds an idle keep-alive connection is kept, as aiohttp's keepalive_timeout
# Bytes of answers queued for a caller who does not read them before reading its requests
# stops (asyncio's pause_writing): a few hundred answers, not the whole burst it sent.
WRITE_HIGH = 16 * 1024
WRITE_LOW = 4 * 1024
KERNEL_SNDBUF = 32 * 1024  # SO_SNDBUF of each connection (Linux doubles it for bookkeeping)
_UNCOUNTED: dict[str, int] = {}  # for a connection not yet made (tests call answer())
_OK_HEALTHZ = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 2\r\n\r\nok"
)


def _eviction_order(conn: FastConnection) -> tuple[bool, float]:
    """Which connection makes room at the cap: first those that never had an answer or do
    not read theirs (held open, or flooding), then the rest; the longest idle first."""
    return (conn.answered > 0 and not conn.writing_paused, conn.active)


class FastConnection(asyncio.Protocol):
    def __init__(
        self,
        api: Api,
        fallback: web.Server,
        live: set[FastConnection],
        fast: bool,
        cap: int,
    ) -> None:
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
        self.tokens: dict[str, int] = _UNCOUNTED

    # ---- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        if self.cap and len(self.live) + len(self.fallback.connections) >= self.cap:
            # At the cap, a fast-path connection makes room (nginx does the same with idle
            # keep-alive connections): one never answered or not reading its answers first,
            # the longest idle first, so a program that opens connections and leaves them
            # open cannot lock the others out, nor push out callers that use theirs. Only
            # when every open connection is aiohttp's (each in a request) is the new one
            # refused.
            idle = min(self.live, key=_eviction_order, default=None)
            if idle is None:
                logguard.refusals.warn(
                    "cap",
                    "refusing connections: %d are open, the most this daemon keeps, all "
                    "busy; some local program opens connections without closing them",
                    self.cap,
                )
                self.transport.abort()
                self.transport = None
                return
            logguard.refusals.warn(
                "evict",
                "%d connections are open, the most this daemon keeps: closing an idle one "
                "for each new one (never answered or not reading first, the longest idle "
                "first); some local program opens connections without closing them",
                self.cap,
            )
            self.live.discard(idle)
            idle.close()
        self.live.add(self)
        self.transport.set_write_buffer_limits(WRITE_HIGH, WRITE_LOW)
        if not self.fast:
            self.hand_over()  # the fast path switched off: aiohttp answers everything
            return
        sock = self.transport.get_extra_info("socket")
        uid, pid = peer_credentials(sock) if sock is not None else (-1, None)
        # The audit trail looks at each connection once, here; a token served adds one to
        # its client's count (answer), nothing more per request.
        self.client = self.api.connected(uid, pid)
        self.tokens = self.client.fast
        if not self.api.peer_allowed(uid):
            self.hand_over()  # aiohttp answers 403 and logs the pid
            return
        self.active = self.loop.time()

    def data_received(self, data: bytes) -> None:
        self.buf = self.buf + data if self.buf else data
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
                # Too long for us, or lines ended by a bare LF (aiohttp refuses those at once).
                if len(buf) - pos > MAX_HEAD or bare_lf(buf, pos):
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
        transport.set_protocol(handler)
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
        **kwargs: Any,
    ) -> None:
        super().__init__(runner, sock, **kwargs)
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
            lambda: FastConnection(self._api, server, self._live, self._fast, self._cap),
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
