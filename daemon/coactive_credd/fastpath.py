"""The hot path: ``GET /v1/token`` answered without aiohttp's per-request machinery.

Every connection starts on :class:`FastConnection`. A request it understands completely and
can answer at once — ``GET /v1/token`` for a token being served right now, or
``GET /healthz``, HTTP/1.1 with no body and nothing unusual in its head — is answered here
from the profile's pre-rendered body. Anything else (other paths and methods, bodies, a
caller who must wait for a refresh, every error, any header it does not know how to judge,
another uid) hands the connection over to aiohttp's server with every byte not yet answered,
and aiohttp owns it from then on. So aiohttp's parser and handlers see everything but the two
simplest requests, and the answers are the same either way.

The benchmarks showed why: aiohttp's request cycle costs about 31 µs a request on this
machine, six times the daemon's own work, and a task and timers for every new connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from typing import Any, cast
from urllib.parse import parse_qsl

from aiohttp import web

from . import engine
from .api import Api, peer_credentials

# The limits the aiohttp server is given (server.run): a head beyond them is aiohttp's to refuse.
MAX_LINE = 4096
MAX_HEADERS = 32
MAX_HEAD = MAX_LINE * 2
IDLE = 60.0  # seconds an idle keep-alive connection is kept, as aiohttp's keepalive_timeout
_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 field names
_CTL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_OK_HEALTHZ = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 2\r\n\r\nok"
)


class FastConnection(asyncio.Protocol):
    def __init__(self, api: Api, fallback: web.Server, live: set[FastConnection]) -> None:
        self.api = api
        self.fallback = fallback
        self.live = live
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.idle: asyncio.TimerHandle | None = None

    # ---- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.live.add(self)
        sock = self.transport.get_extra_info("socket")
        uid, _pid = peer_credentials(sock) if sock is not None else (-1, None)
        if uid != self.api.uid:
            self.hand_over()  # aiohttp answers 403 and logs the pid
            return
        self._arm()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self._arm()
        while self.transport is not None:
            end = self.buf.find(b"\r\n\r\n", 0, MAX_HEAD + 4)
            if end < 0:
                if len(self.buf) > MAX_HEAD:
                    self.hand_over()
                return
            answer = self.answer(self.buf[:end])
            if answer is None:
                self.hand_over()
                return
            self.buf = self.buf[end + 4 :]
            reply, close = answer
            self.transport.write(reply)
            if close:
                self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self.live.discard(self)
        self.transport = None

    def pause_writing(self) -> None:
        # A caller that sends requests but does not read the answers: stop reading its.
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None:
            self.transport.resume_reading()

    # ---- the requests answered here -----------------------------------------------------

    def answer(self, head: bytes) -> tuple[bytes, bool] | None:
        """The whole answer to a request head, and whether to close after it; None when
        aiohttp should take the request."""
        lines = head.split(b"\r\n")
        if len(lines) > MAX_HEADERS + 1 or max(map(len, lines)) > MAX_LINE:
            return None
        parts = lines[0].split(b" ")
        if len(parts) != 3 or parts[0] != b"GET" or parts[2] != b"HTTP/1.1":
            return None
        close = host = False
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon or not _TOKEN.fullmatch(name) or _CTL.search(value):
                return None
            name, value = name.lower(), value.strip().lower()
            if name == b"host":
                host = True
            elif name == b"connection":
                if value == b"close":
                    close = True
                elif value != b"keep-alive":
                    return None
            elif name == b"accept" and b"text/plain" in value:
                return None  # the token alone: aiohttp's handler writes that answer
            elif name in (b"transfer-encoding", b"expect", b"upgrade") or (
                name == b"content-length" and value != b"0"
            ):
                return None
        if not host:  # HTTP/1.1 requires one; aiohttp says so with a 400
            return None
        target = parts[1]
        if target == b"/healthz":
            return _OK_HEALTHZ, close
        path, _, query = target.partition(b"?")
        if path != b"/v1/token" or not query.isascii():
            return None
        params: dict[str, str] = {}
        try:
            for key, val in parse_qsl(query.decode(), keep_blank_values=True, strict_parsing=False):
                params.setdefault(key, val)
        except ValueError:
            return None
        raw = params.get("min_ttl", "0")
        if not raw.isdigit() or int(raw) > 86400:
            return None
        d = self.api.d
        p = d.profiles.get(params.get("profile") or "default")
        if p is None or d.locked:
            return None
        now = d.last_use = d.clock()
        action = engine.decide(p.rt, now, d.policy, int(raw))
        if action is engine.Action.SERVE_AND_REFRESH:
            d.start_refresh(p)
        elif action is not engine.Action.SERVE:
            return None
        body = p.render(now)
        head_out = (
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\n"
            b"Content-Length: %d\r\n%s\r\n"
            % (len(body), b"Connection: close\r\n" if close else b"")
        )
        return head_out + body, close

    # ---- handing over, closing, idling --------------------------------------------------

    def hand_over(self) -> None:
        """From now on aiohttp's server owns this connection, with the bytes not answered."""
        transport, pending = self.transport, self.buf
        self._disarm()
        self.live.discard(self)
        self.transport, self.buf = None, b""
        if transport is None:
            return
        handler = self.fallback()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        if pending:
            handler.data_received(pending)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _arm(self) -> None:
        self._disarm()
        self.idle = asyncio.get_running_loop().call_later(IDLE, self.close)

    def _disarm(self) -> None:
        if self.idle is not None:
            self.idle.cancel()
            self.idle = None


class FastSite(web.SockSite):
    """aiohttp's SockSite, with every connection starting on :class:`FastConnection`."""

    def __init__(self, runner: web.ServerRunner, sock: Any, api: Api, **kwargs: Any) -> None:
        super().__init__(runner, sock, **kwargs)
        self._api = api
        self._live: set[FastConnection] = set()

    async def start(self) -> None:
        await web.BaseSite.start(self)
        server = self._runner.server
        assert isinstance(server, web.Server)
        self._server = await asyncio.get_running_loop().create_server(
            lambda: FastConnection(self._api, server, self._live),
            sock=self._sock,
            backlog=self._backlog,
        )

    async def stop(self) -> None:
        await super().stop()
        for conn in list(self._live):
            with contextlib.suppress(Exception):
                conn.close()
