"""The API proxy: ``/api/...`` on the socket, forwarded to the profile's Coactive with its token.

A program sends Coactive's own API request to the socket (any method, path under ``/api/``,
query, end-to-end headers, body) and gets Coactive's answer back as Coactive sent it, without
ever holding a token (Vault Proxy's ``use_auto_auth_token``, per user). What is forwarded::

    profile     the Coactive-Profile request header, else ``default``
    where       the profile's base_url + the request target, nowhere else: an absolute-form
                target, CONNECT, or a Host naming another host is a 400; redirects are
                passed back, never followed; POST /api/v0/login is a 404 (logins are ours)
    headers     end-to-end ones only (RFC 9110 §7.6.1: Connection, the fields it names,
                Keep-Alive, Proxy-*, TE, Trailer, Transfer-Encoding, Upgrade are dropped),
                Authorization replaced by ``Bearer <current token>``
    bodies      streamed both ways, 64 KiB at a time, with backpressure: memory stays
                bounded whatever their size and however slowly either side reads
    a 401       a rejected-token report (as ``rejected_token_sha256`` would be, polite: no
                login in a backoff or Retry-After window); a request whose body is empty or
                at most :data:`REPLAY_MAX` bytes (held while sent) is replayed once with the
                new token, otherwise the 401 passes through

Errors before Coactive answers are the socket protocol's error bodies (:class:`~coactive_credd.server.errors.ApiError`):
``unknown_profile`` 404, ``locked`` 423, ``reauth_required`` 424, ``upstream_unavailable``
503 (no token can be had), ``bad_gateway`` 502 (Coactive cannot be reached, or stalls or
resets before its answer's head). A fault after the head (a reset or stall mid-body, a
caller who stops reading) can no longer change the status: the caller's connection is cut,
so the answer shows as truncated rather than complete.

One aiohttp client session per profile (its own connection pool, keep-alive to Coactive),
with the profile's proxy (:func:`profile.proxy_url`) and ``ca_bundle`` (the same TLS context
its logins use), no cookie jar, no automatic decompression or added headers.

No log line carries a body, a header value or a token: a proxied request is counted
(:class:`stats.ProxyStats`, the audit's ``proxied``), and a failure logged with its profile,
method, status and reason only.

One thing, kept in one module though long: forwarding one request, the target check, the
headers, the body streamed both ways, the 401 report and replay, and the answer passed back
are one request's life, sharing its held body and its per-profile session; cut apart, each
piece would need the others' state.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from coactive_credd.core import config, engine
from coactive_credd.core.proxyrules import (
    PREFIX,
    WITHHOLD_HEADER,
    Scrubber,
    end_to_end,
    host_of,
    is_local_host,
    target_problem,
)
from coactive_credd.server.errors import ApiError
from coactive_credd.server.profile import Profile, proxy_url
from coactive_credd.server.refresh import Daemon
from coactive_credd.upstream.exchange import UpstreamError

if TYPE_CHECKING:
    from coactive_credd.server.audit import Client

__all__ = [
    "CHUNK",
    "PROFILE_HEADER",
    "REPLAY_MAX",
    "ApiProxy",
    "is_proxied",
]

log = logging.getLogger("coactive_credd.server.apiproxy")

PROFILE_HEADER = "Coactive-Profile"
CHUNK = 64 * 1024  # bytes read and written at a time, each way
REPLAY_MAX = 1024 * 1024  # a request body up to this is held, so a 401 can be replayed
HELD_401_MAX = 64 * 1024  # a 401's body held while deciding to replay (larger: passed through)
CONNECT_TIMEOUT = 10.0  # seconds to connect to Coactive (or the proxy)
READ_TIMEOUT = 300.0  # seconds Coactive may stay silent, before its head or within its body
SEND_TIMEOUT = 60.0  # seconds a caller may leave a chunk of the answer unread
BODY_IDLE = 60.0  # seconds a caller may leave its request body unsent
REPORT_INTERVAL = 10.0  # a token replaced after a proxied 401 is not replaced again sooner
# Besides the hop-by-hop ones, this hop sets Host and Authorization itself, answers Expect,
# and reads Coactive-Profile.
_NOT_FORWARDED = ("host", "authorization", "expect", PROFILE_HEADER, WITHHOLD_HEADER)


def is_proxied(request: web.BaseRequest) -> bool:
    """Is ``request`` the API proxy's? Its path (raw or decoded) is under ``/api/``, or it is
    a CONNECT (refused by the proxy, never by a 404 that would suggest another route)."""
    return (
        request.method == "CONNECT"
        or request.raw_path.startswith(PREFIX)
        or request.path.startswith(PREFIX)
    )


def forwarded_headers(headers: CIMultiDictProxy[str], token: str) -> CIMultiDict[str]:
    """The end-to-end request headers, with ``Authorization: Bearer <token>``."""
    out = CIMultiDict(end_to_end(headers.items(), _NOT_FORWARDED))
    out["Authorization"] = f"Bearer {token}"
    return out


def passed_back_headers(headers: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    """Coactive's answer headers without the hop-by-hop ones (and Content-Length, which the
    answer sets itself)."""
    return CIMultiDict(end_to_end(headers.items(), ("content-length",)))


@dataclass
class _Held:
    """A request body read whole (it can be sent twice), or None for one that streams.

    ``reader`` is the task that reads a streamed body (aiohttp's client sends it from a task
    of its own): Coactive may answer before it has read the whole body, and the caller's
    request must have no reader left when its handler returns, since aiohttp then reads what
    is left of the body itself (two readers are an error, and the connection is lost)."""

    body: bytes | None
    stream: AsyncIterator[bytes] | None
    reader: asyncio.Task[Any] | None = None

    async def stop_reading(self) -> None:
        task = self.reader
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


class ApiProxy:
    """Forwards the socket's ``/api/`` requests of the daemon's routes (see module doc).

    The timeouts are attributes (seconds), so a test can shorten them."""

    def __init__(self, daemon: Daemon, failure: Callable[[Profile, float], ApiError]) -> None:
        """``failure(profile, now)`` is the routes' answer when a profile has no token to
        serve (423, 424 or 503, as ``GET /v1/token`` gives it)."""
        self.d = daemon
        self._failure = failure
        self.connect_timeout = CONNECT_TIMEOUT
        self.read_timeout = READ_TIMEOUT
        self.send_timeout = SEND_TIMEOUT
        self.body_idle = BODY_IDLE
        self._sessions: dict[
            str, tuple[tuple[str, str | None, str], aiohttp.ClientSession, str | None, Any]
        ] = {}
        self._replaced_at: dict[str, tuple[str, float]] = {}  # profile -> (token, loop time)

    async def close(self) -> None:
        """Close every profile's connection pool."""
        sessions, self._sessions = self._sessions, {}
        for _, session, _, _ in sessions.values():
            await session.close()

    # ---- the request --------------------------------------------------------------------

    async def handle(self, request: web.BaseRequest, client: Client) -> web.StreamResponse:
        """Forward ``request``; Coactive's answer, or an :class:`~coactive_credd.server.errors.ApiError` raised before it."""
        started = time.monotonic()
        self._check_target(request)
        p = self._profile(request)
        name = p.cfg.name
        client.proxied[name] += 1
        status = 0
        try:
            resp = await self._forward(request, p)
            status = resp.status
            return resp
        except ApiError as exc:
            status = exc.status
            raise
        finally:
            self.d.stats.proxy.observe(name, request.method, status, time.monotonic() - started)

    def _check_target(self, request: web.BaseRequest) -> None:
        problem = target_problem(request.method, request.raw_path)
        if problem == "login":
            raise ApiError(
                404,
                "not_found",
                "the API proxy does not forward logins: the daemon logs in itself",
                "call the API directly; `coactive-credd token` gives a token if you need one",
            )
        if problem is not None:
            raise ApiError(
                400,
                "bad_request",
                problem,
                "send the path alone, like GET /api/v1/datasets, with Coactive-Profile: NAME",
            )
        hosts = request.headers.getall("Host", ())
        if len(hosts) > 1:
            raise ApiError(400, "bad_request", "more than one Host header", "send one Host")
        host = host_of(hosts[0]) if hosts else ""
        # "%2f": a socket path as the host, as requests-unixsocket and its kin send it.
        if host and not is_local_host(host) and "%2f" not in host:
            name = request.headers.get(PROFILE_HEADER) or "default"
            p = self.d.profiles.get(name)
            if p is None or URL(p.cfg.base_url).host != host:
                raise ApiError(
                    400,
                    "bad_request",
                    "the Host header names another host; the API proxy forwards only to the "
                    "profile's base URL",
                    "send Host: localhost (or none)",
                )

    def _profile(self, request: web.BaseRequest) -> Profile:
        values = request.headers.getall(PROFILE_HEADER, ())
        name = values[0].strip() if values else "default"
        try:
            if len(values) > 1:
                raise ValueError(f"more than one {PROFILE_HEADER} header")
            config.check_profile_name(name)
        except ValueError as exc:
            raise ApiError(
                400, "bad_request", str(exc), f"send {PROFILE_HEADER}: NAME, once"
            ) from None
        p = self.d.profiles.get(name)
        if p is None:
            raise ApiError(
                404,
                "unknown_profile",
                f"no profile named {name!r}",
                f"run `coactive-credd login --profile {name}`",
            )
        if self.d.locked:
            raise ApiError(423, "locked", "the vault is locked", "run `coactive-credd unlock`")
        return p

    async def _token(self, p: Profile) -> str:
        """The profile's current token, waiting for a refresh when it must (as /v1/token)."""
        d = self.d
        now = d.last_use = d.clock()
        action = engine.decide(p.rt, now, d.policy, 0, d.boot_clock())
        if action is engine.Action.SERVE_AND_REFRESH:
            d.start_refresh(p)
        elif action is engine.Action.WAIT_FOR_REFRESH:
            await asyncio.shield(d.start_refresh(p))
            now = d.clock()
            tok = p.rt.token
            if tok is None or not engine.servable(tok, now, d.policy, boot=d.boot_clock()):
                raise self._failure(p, now)
        elif action is not engine.Action.SERVE:
            raise self._failure(p, now)
        assert p.rt.token is not None
        return p.rt.token.access_token

    async def _forward(self, request: web.BaseRequest, p: Profile) -> web.StreamResponse:
        if request.headers.get("Expect", "").lower() == "100-continue":
            # The caller waits for this before sending its body (curl does, over 1 MiB).
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        held = await self._hold(request)
        try:
            return await self._forward_held(request, p, held)
        finally:
            await held.stop_reading()

    async def _forward_held(
        self, request: web.BaseRequest, p: Profile, held: _Held
    ) -> web.StreamResponse:
        token = await self._token(p)
        resp: aiohttp.ClientResponse | _Canned = await self._send(request, p, token, held)
        if resp.status == 401 and isinstance(resp, aiohttp.ClientResponse):
            resp = await self._after_401(request, p, token, held, resp)
        scrub = None
        if WITHHOLD_HEADER in request.headers:  # exec --proxy: the token never reaches CMD
            scrub = Scrubber([token, p.rt.token.access_token if p.rt.token else ""])
            coding = resp.headers.get("Content-Encoding", "identity").strip().lower()
            if coding not in ("", "identity"):
                if isinstance(resp, aiohttp.ClientResponse):
                    resp.close()
                raise ApiError(
                    502,
                    "bad_gateway",
                    f"Coactive answered in {coding}, which cannot be checked for the token",
                    "the request asked for an uncompressed answer; report it to Coactive",
                )
        return await self._pass_back(request, p, resp, scrub)

    async def _hold(self, request: web.BaseRequest) -> _Held:
        """The request body: read whole when it is at most :data:`REPLAY_MAX` bytes (a 401
        can then be replayed), else streamed with backpressure (an idle caller times out)."""
        if not request.body_exists:
            return _Held(b"", None)
        declared = request.content_length
        head = b""
        if declared is None or declared <= REPLAY_MAX:
            while len(head) <= REPLAY_MAX:
                chunk = await self._read_body(request, REPLAY_MAX + 1 - len(head))
                if not chunk:
                    return _Held(head, None)
                head += chunk
        held = _Held(None, None)
        held.stream = self._stream_body(request, head, held)
        return held

    async def _read_body(self, request: web.BaseRequest, n: int) -> bytes:
        try:
            return await asyncio.wait_for(request.content.read(min(n, CHUNK)), self.body_idle)
        except TimeoutError:
            raise ApiError(
                408,
                "bad_request",
                f"the request body stopped arriving for {self.body_idle:g} s",
                "send the whole body Content-Length announces",
            ) from None

    async def _stream_body(
        self, request: web.BaseRequest, head: bytes, held: _Held
    ) -> AsyncIterator[bytes]:
        held.reader = asyncio.current_task()  # the task aiohttp's client sends the body from
        if head:
            yield head
        while chunk := await self._read_body(request, CHUNK):
            yield chunk

    def _session(self, p: Profile) -> tuple[aiohttp.ClientSession, str | None, Any]:
        """The profile's connection pool, its proxy (None: direct) and TLS setting, made once
        for its base URL, proxy and ca_bundle (again when a reload changes them). Raises
        UpstreamError for a malformed proxy variable or a ca_bundle that does not load."""
        pc = p.cfg
        key = (pc.base_url, pc.ca_bundle, repr(pc.proxy))
        known = self._sessions.get(pc.name)
        if known is not None and known[0] == key and not known[1].closed:
            return known[1], known[2], known[3]
        proxy = proxy_url(pc)
        ssl_arg = (
            self.d.upstream._ssl_for(pc.ca_bundle) if pc.base_url.startswith("https:") else True
        )
        if known is not None:
            asyncio.get_running_loop().create_task(known[1].close())  # its answers finish first
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=100, keepalive_timeout=30.0),
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=self.connect_timeout, sock_read=self.read_timeout
            ),
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,  # Content-Encoding passes through as Coactive sent it
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
        )
        self._sessions[pc.name] = (key, session, proxy, ssl_arg)
        return session, proxy, ssl_arg

    async def _send(
        self, request: web.BaseRequest, p: Profile, token: str, held: _Held
    ) -> aiohttp.ClientResponse:
        """Send the request to Coactive; its answer with the head read. 502/503 otherwise."""
        pc = p.cfg
        url = URL(pc.base_url + request.raw_path, encoded=True)
        headers = forwarded_headers(request.headers, token)
        if WITHHOLD_HEADER in request.headers:
            # The token is masked in the answer, which needs bytes that can be read: no
            # Accept-Encoding would allow any coding (RFC 9110 §12.5.3).
            headers["Accept-Encoding"] = "identity"
        if held.body is not None and "Content-Length" not in headers and held.body:
            headers["Content-Length"] = str(len(held.body))
        data: Any = held.body if held.stream is None else held.stream
        try:
            session, proxy, ssl_arg = self._session(p)
        except UpstreamError as exc:
            raise ApiError(502, "bad_gateway", exc.detail, "fix the setting it names") from None
        try:
            return await session.request(
                request.method,
                url,
                headers=headers,
                data=data if held.body != b"" else None,
                allow_redirects=False,
                proxy=proxy,
                ssl=ssl_arg,
            )
        except ApiError:
            raise
        except (TimeoutError, aiohttp.ServerTimeoutError):
            why = f"no answer within {self.read_timeout:g} s"
        except aiohttp.ClientConnectorError as exc:
            why = f"cannot connect to {exc.host}:{exc.port} ({_why(exc)})"
        except aiohttp.ServerDisconnectedError:
            why = "the connection closed before an answer came"
        except (aiohttp.ClientError, OSError) as exc:
            why = f"connection failed ({_why(exc)})"
        log.warning("profile=%s %s /api/... not forwarded: %s", pc.name, request.method, why)
        raise ApiError(
            502,
            "bad_gateway",
            f"Coactive could not be reached for profile {pc.name!r}: {why}",
            "check the network and `coactive-credd doctor`, then try again",
        )

    async def _after_401(
        self,
        request: web.BaseRequest,
        p: Profile,
        token: str,
        held: _Held,
        resp: aiohttp.ClientResponse,
    ) -> aiohttp.ClientResponse | _Canned:
        """Coactive refused ``token``: report it; replay once when the body was held."""
        name = p.cfg.name
        if held.body is None:  # streamed: nothing to replay; the report goes on behind
            asyncio.get_running_loop().create_task(self._report(p, token))
            return resp
        canned = await _Canned.read(resp)
        if canned is None:
            asyncio.get_running_loop().create_task(self._report(p, token))
            return resp
        if not await self._report(p, token):
            return canned
        new = p.rt.token
        if new is None or new.access_token == token:
            return canned
        self.d.stats.proxy.replays[name] += 1
        return await self._send(request, p, new.access_token, held)

    async def _report(self, p: Profile, token: str) -> bool:
        """A rejected-token report for ``token`` (:meth:`refresh.Daemon.replace_rejected`);
        True when another token is current after it. A token replaced after a proxied 401
        is not replaced again for :data:`REPORT_INTERVAL` s, so a Coactive that refuses
        every token costs a login per interval, not one per request."""
        name = p.cfg.name
        loop = asyncio.get_running_loop()
        last = self._replaced_at.get(name)
        cur = p.rt.token
        if (
            last is not None
            and cur is not None
            and cur.access_token == token == last[0]
            and loop.time() - last[1] < REPORT_INTERVAL
        ):
            return False
        ok = await self.d.replace_rejected(p, hashlib.sha256(token.encode()).hexdigest())
        new = p.rt.token
        if ok and new is not None and new.access_token != token:
            self._replaced_at[name] = (new.access_token, loop.time())
        return ok

    # ---- the answer ---------------------------------------------------------------------

    async def _pass_back(
        self,
        request: web.BaseRequest,
        p: Profile,
        resp: aiohttp.ClientResponse | _Canned,
        scrub: Scrubber | None = None,
    ) -> web.StreamResponse:
        headers = passed_back_headers(resp.headers)
        if scrub is not None:
            headers = CIMultiDict(
                (k, scrub.mask(v.encode("latin-1", "replace")).decode("latin-1"))
                for k, v in headers.items()
            )
        reason = resp.reason
        if scrub is not None and reason:
            reason = scrub.mask(reason.encode("latin-1", "replace")).decode("latin-1")
        out = web.StreamResponse(status=resp.status, reason=reason, headers=headers)
        if isinstance(resp, _Canned):
            out.content_length = len(resp.body)
            await out.prepare(request)
            await out.write(resp.body if scrub is None else scrub.mask(resp.body))
            await out.write_eof()
            return out
        length = resp.headers.get("Content-Length")
        if length is not None and length.isdigit() and "Transfer-Encoding" not in resp.headers:
            out.content_length = int(length)
        try:
            await out.prepare(request)
            if request.method == "HEAD" or resp.status in (204, 304):
                await out.write_eof()
                return out
            loop = asyncio.get_running_loop()
            # One deadline, moved for each write (not a task per chunk, as wait_for makes):
            # a caller may leave a chunk unread for send_timeout seconds, no longer.
            async with asyncio.timeout(None) as deadline:
                while True:
                    try:
                        chunk = await resp.content.readany()
                    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                        self._cut(request, p, f"Coactive's answer broke off ({_why(exc)})")
                        return out
                    last = not chunk
                    if scrub is not None:
                        chunk = scrub.end() if last else scrub.feed(chunk)
                    deadline.reschedule(loop.time() + self.send_timeout)
                    try:
                        if chunk:
                            await out.write(chunk)
                        if last:
                            await out.write_eof()
                    except ConnectionError:  # the caller hung up: nobody to finish it for
                        log.debug("profile=%s the caller left mid-answer", p.cfg.name)
                        return out
                    deadline.reschedule(None)
                    if last:
                        break
        except TimeoutError:
            self._cut(request, p, f"the caller read nothing for {self.send_timeout:g} s")
        finally:
            resp.release()  # back to the pool when read to its end; closed otherwise
        return out

    def _cut(self, request: web.BaseRequest, p: Profile, why: str) -> None:
        """End the caller's connection mid-answer: the status is sent, so a truncated body is
        the one honest way to say the answer is incomplete."""
        log.warning(
            "profile=%s %s /api/...: %s; the answer was cut", p.cfg.name, request.method, why
        )
        self.d.stats.proxy.cut[p.cfg.name] += 1
        if request.transport is not None:
            request.transport.abort()


def _why(exc: BaseException) -> str:
    """A short reason for a network error that repeats none of Coactive's bytes (aiohttp's
    parse errors quote them): the OS error's text, or the exception's type."""
    if isinstance(exc, TimeoutError):
        return "timeout"
    os_error = getattr(exc, "os_error", exc)
    if isinstance(os_error, OSError) and os_error.strerror:
        return str(os_error.strerror)
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"{type(exc).__name__}: a malformed answer"
    return type(exc).__name__


@dataclass
class _Canned:
    """A small answer read whole (a 401 kept while deciding whether to replay)."""

    status: int
    reason: str | None
    headers: CIMultiDictProxy[str]
    body: bytes

    @classmethod
    async def read(cls, resp: aiohttp.ClientResponse) -> _Canned | None:
        """``resp`` read whole, or None (``resp`` untouched) when it may be larger than
        :data:`HELD_401_MAX` bytes or breaks off."""
        length = resp.headers.get("Content-Length")
        if length is None or not length.isdigit() or int(length) > HELD_401_MAX:
            return None
        try:
            body = await resp.read()
        except (TimeoutError, aiohttp.ClientError, OSError):
            return None
        finally:
            resp.release()
        return cls(resp.status, resp.reason, resp.headers, body)
