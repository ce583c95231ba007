"""``coactive-credd exec --proxy -- CMD``: CMD calls Coactive through a placeholder it holds.

CMD gets, in its environment::

    COACTIVE_BASE_URL        http://127.0.0.1:PORT, a listener of this process (a free port)
    COACTIVE_ACCESS_TOKEN    a random placeholder that this listener alone accepts
    COACTIVE_PROFILE         the profile

and never the real token: not in its environment (``COACTIVE_ACCESS_TOKEN_FILE``,
``COACTIVE_TOKEN_EXPIRES_AT`` and ``COACTIVE_CREDD_SOCKET`` are taken out of what it
inherits), not in a file, not in an answer. Anything that takes a base URL and a bearer token
(Coactive's SDK, ``requests``, ``curl``) works unchanged.

The listener lives as long as CMD. It forwards a request to the daemon's socket ``/api/``
route (:mod:`apiproxy`, which sets the real token) only when it carries
``Authorization: Bearer <placeholder>`` (compared in constant time, ``hmac.compare_digest``),
names this listener in its Host (no DNS-rebound page of a browser gets through), and targets
a path under ``/api/`` (:func:`proxyrules.target_problem`); anything else is answered here
(401, 400 or 404, the socket protocol's error body) and forwarded nowhere. It asks the daemon
(:data:`proxyrules.WITHHOLD_HEADER`) to mask the token wherever Coactive's answer repeats it,
and asks Coactive for an uncompressed answer, so that the mask can be applied. Bodies stream both
ways with backpressure, as on the socket.

It is a relay, not a second HTTP server and client: each caller's connection gets one of its
own to the socket, request heads are read with llhttp (httptools: the parser of Node.js,
strict about framing, RFC 9112) and rewritten, and bodies and answers pass as bytes. That
keeps the hop cheap (docs/BENCHMARKS.md, "The API proxy"). The daemon answers
``Expect: 100-continue`` itself. The relay runs on an event loop in a thread of its own, so
the process's main thread keeps relaying signals to CMD exactly as plain ``exec`` does
(:func:`execchild.wait`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hmac
import json
import os
import secrets
import signal
import sys
import threading
from typing import Any, cast

import coactive_token
import httptools

from coactive_credd.cli import execchild
from coactive_credd.cli.common import new_event_loop
from coactive_credd.core.proxyrules import WITHHOLD_HEADER, end_to_end, target_problem

__all__ = ["PLACEHOLDER_PREFIX", "Listener", "run"]

PLACEHOLDER_PREFIX = "ccdp_"  # so a placeholder seen in a log or a bug report is recognised
# Never handed to CMD in proxy mode: each would lead it to the real token.
WITHHELD = ("COACTIVE_ACCESS_TOKEN_FILE", "COACTIVE_TOKEN_EXPIRES_AT", "COACTIVE_CREDD_SOCKET")
# Accept-Encoding too: the daemon masks the token in the answer, which it can only do in
# bytes it can read.
_NOT_FORWARDED = (
    "host",
    "authorization",
    "coactive-profile",
    "accept-encoding",
    "content-length",  # the framing is written again from what llhttp read, below
    WITHHOLD_HEADER,
)
# A Connection header may not name these: a hop that drops a field Connection names would
# send a body without its framing, and the daemon would read the body as a request of its
# own, one this listener never checked.
_FRAMING = frozenset({b"content-length", b"transfer-encoding", b"host"})


_REASONS = {
    505: "HTTP Version Not Supported",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}
HEAD_TIMEOUT = 30.0  # seconds for a whole request head to arrive, however slowly it trickles
# bytes of one request's target and headers (aiohttp's own limit is 8 KiB a line)
MAX_HEAD = 64 * 1024
IDLE = 75.0  # seconds a connection may sit with no request under way (aiohttp's keep-alive default)
HIGH_WATER = 256 * 1024  # bytes held for the daemon before the caller is read no further


def _error(status: int, code: str, message: str, hint: str, **headers: str) -> bytes:
    """A whole answer in the socket protocol's error body, ending the connection."""
    body = json.dumps({"error": {"code": code, "message": message, "hint": hint}}).encode()
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    head = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


_UNAUTHORIZED = _error(
    401,
    "unauthorized",
    "this listener forwards only requests that carry its placeholder token",
    "send Authorization: Bearer $COACTIVE_ACCESS_TOKEN, as exec --proxy set it",
    **{"WWW-Authenticate": "Bearer"},
)
_TOO_LARGE = _error(431, "bad_request", "the request's head is too large", "send smaller headers")
_UNREACHABLE = _error(
    503,
    "unreachable",
    "coactive-credd cannot be reached on its socket",
    "start it: coactive-credd serve",
)


class Listener(threading.Thread):
    """The loopback listener: an event loop in its own thread. :meth:`begin` binds it
    (``port`` is then set) and raises OSError when it cannot; :meth:`end` stops it.

    Each caller's connection is relayed byte for byte over a connection of its own to the
    daemon's socket (:class:`_Caller`): the request heads are read with llhttp (httptools,
    the parser Node.js uses), checked, and rewritten; bodies and answers pass through."""

    def __init__(self, sock: str, profile: str, placeholder: str) -> None:
        super().__init__(name="coactive-exec-proxy", daemon=True)
        self.sock, self.profile = sock, profile
        self._placeholder = placeholder.encode()
        self.port = 0
        self.hosts: frozenset[bytes] = frozenset()
        self.callers: set[_Caller] = set()
        self._ready = threading.Event()
        self._failed: BaseException | None = None
        self._loop = new_event_loop()
        self._quit: asyncio.Event | None = None

    def begin(self) -> None:
        self.start()
        self._ready.wait()
        if self._failed is not None:
            raise self._failed

    def end(self) -> None:
        if self._quit is not None and self.is_alive():
            self._loop.call_soon_threadsafe(self._quit.set)
            self.join(timeout=5)

    def run(self) -> None:
        try:
            self._loop.run_until_complete(self._serve())
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        self._quit = asyncio.Event()
        try:
            listening = await self._loop.create_server(
                lambda: _Caller(self), "127.0.0.1", 0, reuse_address=True
            )
        except BaseException as exc:
            self._failed = exc
            self._ready.set()
            raise
        self._loop.set_exception_handler(_quiet)
        self.port = listening.sockets[0].getsockname()[1]
        self.hosts = frozenset(
            {f"127.0.0.1:{self.port}".encode(), f"localhost:{self.port}".encode()}
        )
        self._ready.set()
        try:
            await self._quit.wait()
        finally:
            listening.close()
            for caller in list(self.callers):
                caller.abort()
            await listening.wait_closed()

    def allowed(self, values: list[bytes]) -> bool:
        """Do the request's Authorization ``values`` say exactly ``Bearer <placeholder>``?
        Compared in constant time, whatever else the request carries."""
        if len(values) != 1:
            return False
        scheme, _, given = values[0].strip().partition(b" ")
        ok = hmac.compare_digest(given.strip(), self._placeholder)
        return ok and scheme.lower() == b"bearer"

    def problem(
        self, method: bytes, target: bytes, headers: list[tuple[bytes, bytes]]
    ) -> bytes | None:
        """The answer to a request that goes no further (401, 400 or 404), or None."""
        auth = [v for k, v in headers if k.lower() == b"authorization"]
        if not self.allowed(auth):
            return _UNAUTHORIZED
        hosts = [v.strip().lower() for k, v in headers if k.lower() == b"host"]
        if len(hosts) != 1 or hosts[0] not in self.hosts:
            return _error(
                400,
                "bad_request",
                "the Host header does not name this listener",
                "send requests to $COACTIVE_BASE_URL",
            )
        try:
            why = target_problem(method.decode("ascii"), target.decode("ascii"))
        except UnicodeDecodeError:
            why = "malformed API target: it must be a path under /api/ without . or .. segments"
        if why == "login":
            return _error(
                404,
                "not_found",
                "logins are not forwarded: the daemon logs in itself",
                "no login is needed here: send API requests under /api/ with $COACTIVE_ACCESS_TOKEN",
            )
        if why is not None:
            return _error(400, "bad_request", why, "send a path under /api/")
        return None


def _quiet(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """One line on stderr for what goes wrong in the relay, never a traceback (and never a
    header or body: the exception's type and message only)."""
    exc = context.get("exception")
    what = f"{type(exc).__name__}: {exc}" if exc is not None else context.get("message", "")
    print(f"coactive-credd: exec --proxy listener: {what}", file=sys.stderr)


class _Request:
    """One request of a caller: what is to go to the daemon, or the answer that ends it here."""

    __slots__ = ("complete", "http10", "method", "out", "refusal", "started")

    def __init__(self) -> None:
        self.method = b""
        self.http10 = False
        self.out = bytearray()
        self.complete = False
        self.refusal: bytes | None = None
        self.started = False


class _Caller(asyncio.Protocol):
    """One connection to the listener (RFC 9112 framing by llhttp).

    Requests go to the daemon one at a time over this caller's own connection to the socket,
    opened at its first forwarded request (a refused caller reaches nothing). A request
    waits, with the caller no further read, until the answer before it has come back whole,
    so the listener's own answers (401, 400, 404, 431) keep their place; each ends the
    connection. Memory stays bounded both ways: the caller is not read while the daemon's
    side is full, and the daemon is not read while the caller's is."""

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.parser = httptools.HttpRequestParser(self)
        self.caller: asyncio.Transport | None = None
        self.daemon: asyncio.Transport | None = None
        self.answer = _Answer(self)
        self.connect_task: asyncio.Future[None] | None = None
        self.requests: collections.deque[_Request] = collections.deque()
        self.current: _Request | None = None  # being read
        self.target = bytearray()
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_bytes = 0
        self.progress = False  # a callback came of the bytes just read
        self.held = 0  # bytes read since the last callback: llhttp holds an unended field
        self.head_timer: asyncio.TimerHandle | None = None
        self.chunked = False
        self.stopped = False  # the caller is read no further: a refusal is queued
        self.waiting = False  # a request went to the daemon; its answer is not whole yet
        self.caller_done = False  # the caller half-closed: it sends nothing more
        self.paused: set[str] = set()
        self.idle: asyncio.TimerHandle | None = None

    # ---- the caller's side --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.caller = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self.listener.callers.add(self)
        self._arm_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self.listener.callers.discard(self)
        for timer in (self.idle, self.head_timer):
            if timer is not None:
                timer.cancel()
        if self.daemon is not None:
            self.daemon.abort()
        self.caller = None

    def data_received(self, data: bytes) -> None:
        self._arm_idle()
        if self.stopped:
            return
        self.progress = False
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # refused in on_headers_complete; what follows is not read
        except httptools.HttpParserError:
            if not self.stopped:
                self._refuse(_error(400, "bad_request", "malformed HTTP request", "send HTTP/1.1"))
        if self.progress:
            self.held = 0
        elif not self.stopped:
            # Nothing came of these bytes: they are in a field (of a head, or a trailer) whose
            # end llhttp has not seen yet, held unbounded before any callback counts them.
            self.held += len(data)
            if self.held > MAX_HEAD:
                if self.current is not None and self.current.started:
                    self.abort()  # trailers of a request under way: no answer can follow
                    return
                self._refuse(_TOO_LARGE)
        self._pump()

    def eof_received(self) -> bool:
        self.caller_done = True  # its last answer may still be on its way
        self._end_if_done()
        return True

    def pause_writing(self) -> None:  # the caller reads slower than the daemon answers
        if self.daemon is not None:
            self.daemon.pause_reading()

    def resume_writing(self) -> None:
        if self.daemon is not None:
            self.daemon.resume_reading()

    def abort(self) -> None:
        if self.caller is not None:
            self.caller.abort()

    # ---- llhttp's callbacks (the request) ------------------------------------------------

    def on_message_begin(self) -> None:
        self.progress = True
        if self.head_timer is None:
            self.head_timer = asyncio.get_running_loop().call_later(HEAD_TIMEOUT, self._slow_head)
        self.current = _Request()
        self.requests.append(self.current)
        self.target.clear()
        self.headers = []
        self.head_bytes = 0

    def on_url(self, url: bytes) -> None:
        self.target += url
        self._count(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self.progress = True
        self.headers.append((name, value))
        self._count(len(name) + len(value) + 4)

    def _count(self, n: int) -> None:
        self.head_bytes += n
        if self.head_bytes > MAX_HEAD and not self.stopped:
            self._refuse(_TOO_LARGE)

    def on_headers_complete(self) -> None:
        req = self.current
        self.progress = True
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None
        if self.stopped or req is None:
            return
        method = self.parser.get_method()
        refusal = self.listener.problem(method, bytes(self.target), self.headers)
        version = self.parser.get_http_version()
        if refusal is None and version not in ("1.0", "1.1"):
            refusal = _error(
                505, "bad_request", f"HTTP/{version} is not spoken here", "send HTTP/1.1"
            )
        if refusal is None and any(
            k.lower() == b"connection" and any(t.strip().lower() in _FRAMING for t in v.split(b","))
            for k, v in self.headers
        ):
            refusal = _error(
                400,
                "bad_request",
                "a Connection header may not name Content-Length, Transfer-Encoding or Host",
                "send the request without that Connection option",
            )
        if refusal is None and self.parser.should_upgrade():
            refusal = _error(
                400, "bad_request", "upgrades are not forwarded", "send plain HTTP/1.1"
            )
        if refusal is not None:
            self._refuse(refusal)
            return
        req.method = method
        self.chunked = any(
            k.lower() == b"transfer-encoding" and b"chunked" in v.lower() for k, v in self.headers
        )
        kept = end_to_end(
            [(k.decode("latin-1"), v.decode("latin-1")) for k, v in self.headers], _NOT_FORWARDED
        )
        lengths = [v for k, v in self.headers if k.lower() == b"content-length"]
        req.http10 = version == "1.0"
        lines = [
            f"{method.decode('ascii')} {self.target.decode('ascii')} HTTP/{version}",
            "Host: localhost",
            f"Coactive-Profile: {self.listener.profile}",
            f"{WITHHOLD_HEADER}: 1",
            *(f"{k}: {v}" for k, v in kept),
        ]
        if self.chunked:
            lines.append("Transfer-Encoding: chunked")
        elif lengths:  # one value: llhttp refuses two that differ
            lines.append(f"Content-Length: {int(lengths[0].split(b',')[0])}")
        if req.http10 or not self.parser.should_keep_alive():
            # HTTP/1.0: an answer of unknown length ends with the connection, so it must end
            lines.append("Connection: close")
        req.out += ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def on_body(self, body: bytes) -> None:
        self.progress = True
        req = self.current
        if self.stopped or req is None:
            return
        if self.chunked:
            req.out += b"%x\r\n" % len(body) + body + b"\r\n"
        else:
            req.out += body
        if len(req.out) > HIGH_WATER:
            self.pause("held")

    def on_message_complete(self) -> None:
        self.progress = True
        req = self.current
        if self.stopped or req is None:
            return
        if self.chunked:
            req.out += b"0\r\n\r\n"
        req.complete = True
        self.current = None

    # ---- to the daemon, in order -------------------------------------------------------

    def _refuse(self, answer: bytes) -> None:
        self.stopped = True
        self.pause("stopped")
        if self.current is None:
            self.current = _Request()
            self.requests.append(self.current)
        self.current.refusal = answer

    def _pump(self) -> None:
        """Send what can go now: the first request's bytes once the daemon has answered the
        one before, or its refusal once every earlier answer is whole."""
        while self.requests and self.caller is not None:
            req = self.requests[0]
            if req.refusal is not None:
                if req.started:  # refused halfway through its body: no answer can follow
                    self.caller.abort()
                elif self.waiting:
                    self.pause("order")
                else:
                    self.caller.write(req.refusal)
                    self.caller.close()
                return
            if not req.started:
                if self.waiting:
                    self.pause("order")
                    return
                if not req.out:
                    return  # its head is still arriving
                if self.daemon is None:
                    self._connect()
                    return
                req.started = self.waiting = True
                self.answer.expect(req)
            if req.out:
                assert self.daemon is not None
                self.daemon.write(bytes(req.out))
                req.out.clear()
            if not req.complete:
                break
            self.requests.popleft()
        self.resume("order")
        self.resume("held")

    def _connect(self) -> None:
        if self.connect_task is not None:
            return
        self.pause("connecting")
        self.connect_task = asyncio.ensure_future(self._open())

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await loop.create_unix_connection(
                lambda: self.answer, self.listener.sock
            )
        except OSError:
            if self.caller is not None:
                self.caller.write(_UNREACHABLE)
                self.caller.close()
            return
        if self.caller is None:
            transport.abort()
            return
        self.daemon = transport
        self.resume("connecting")
        self._pump()

    def answered(self) -> None:
        """The daemon's answer to the request under way came back whole."""
        self.waiting = False
        self._pump()
        self._end_if_done()

    def daemon_gone(self, req: _Request | None, relayed: bool) -> None:
        """The daemon ended its connection; ``req`` was under way (None: none was), and
        ``relayed``: some of its answer reached the caller."""
        self.daemon = None
        if self.caller is None:
            return
        if req is None or (relayed and req.http10):
            self.caller.close()  # a keep-alive ended, or an answer delimited by the close
        elif not relayed:
            self.caller.write(_UNREACHABLE)
            self.caller.close()
        else:
            self.caller.abort()  # an answer cut short must not look whole

    def _end_if_done(self) -> None:
        if self.caller_done and not self.waiting and not self.requests and self.caller is not None:
            self.caller.close()

    # ---- reading the caller, or not ---------------------------------------------------------

    def pause(self, why: str) -> None:
        """Read the caller no further until every reason given is withdrawn (:meth:`resume`)."""
        if not self.paused and self.caller is not None:
            self.caller.pause_reading()
        self.paused.add(why)

    def resume(self, why: str) -> None:
        if why in self.paused:
            self.paused.discard(why)
            if not self.paused and self.caller is not None:
                self.caller.resume_reading()

    def _slow_head(self) -> None:
        """A request head that took :data:`HEAD_TIMEOUT` seconds and is still not whole."""
        self.head_timer = None
        if self.paused - {"stopped"}:
            # It is this side that reads no further (an answer before it is still coming):
            # the caller is not late.
            self.head_timer = asyncio.get_running_loop().call_later(HEAD_TIMEOUT, self._slow_head)
            return
        if self.caller is not None and not self.stopped:
            self._refuse(
                _error(
                    408, "bad_request", "the request's head did not arrive in time", "send it whole"
                )
            )
            self._pump()

    def _arm_idle(self) -> None:
        if self.idle is not None:
            self.idle.cancel()
        self.idle = asyncio.get_running_loop().call_later(IDLE, self._idle)

    def _idle(self) -> None:
        if self.caller is None:
            return
        if self.waiting or self.requests:
            self._arm_idle()
        else:
            self.caller.close()


class _Answer(asyncio.Protocol):
    """The daemon's side of one caller's connection. Answers are written to the caller as
    they arrive, and read by llhttp only to see where each ends (an answer to ``HEAD``:
    after its head, which llhttp cannot be told)."""

    def __init__(self, owner: _Caller) -> None:
        self.owner = owner
        self.req: _Request | None = None
        self.parser: Any = None
        self.head = bytearray()
        self.relayed = False
        self.status = 0

    def expect(self, req: _Request) -> None:
        """The answer to come is to ``req``."""
        self.req, self.relayed, self.status = req, False, 0
        self.head.clear()
        self.parser = None if req.method == b"HEAD" else httptools.HttpResponseParser(self)

    def data_received(self, data: bytes) -> None:
        owner = self.owner
        if self.req is None:
            # Nothing is asked: bytes now would answer a request this listener did not
            # check. Pass none of them, and end both connections.
            owner.abort()
            if owner.daemon is not None:
                owner.daemon.abort()
            return
        if owner.caller is not None:
            owner.caller.write(data)
        self.relayed = True
        if self.parser is None:
            self._head_only(data)
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            owner.abort()

    def _head_only(self, data: bytes) -> None:
        self.head += data
        while (end := self.head.find(b"\r\n\r\n")) >= 0:
            status, self.head = bytes(self.head[9:12]), self.head[end + 4 :]
            if not (status.startswith(b"1") and status != b"101"):
                self._done()
                return
        if len(self.head) > MAX_HEAD:
            self.owner.abort()

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()

    def on_message_complete(self) -> None:
        if 100 <= self.status < 200 and self.status != 101:
            return  # 100 Continue: the final answer follows
        self._done()

    def _done(self) -> None:
        self.req = None
        self.owner.answered()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner.daemon_gone(self.req, self.relayed)

    def pause_writing(self) -> None:  # the daemon reads slower than the caller sends
        self.owner.pause("daemon")

    def resume_writing(self) -> None:
        self.owner.resume("daemon")


def child_env(base: dict[str, str], port: int, placeholder: str, profile: str) -> dict[str, str]:
    """CMD's environment: ``base`` without :data:`WITHHELD`, with the listener's URL, the
    placeholder and the profile."""
    env = {k: v for k, v in base.items() if k not in WITHHELD}
    env.update(
        COACTIVE_BASE_URL=f"http://127.0.0.1:{port}",
        COACTIVE_ACCESS_TOKEN=placeholder,
        COACTIVE_PROFILE=profile,
    )
    return env


def run(sock: str, profile: str, min_ttl: int, command: list[str]) -> int:
    """Run ``command`` behind the listener (module doc); its exit status, as plain exec.

    Raises coactive_token.CredddError before the command runs: the profile must be able to
    serve now (unknown, locked, reauth_required, unavailable: the usual exit codes)."""
    with coactive_token.Client(sock) as client:
        name = client.token(profile, min_ttl).profile  # checked, then dropped: CMD never sees it
    coactive_token.verify_daemon(sock)
    placeholder = PLACEHOLDER_PREFIX + secrets.token_urlsafe(32)
    waited = {*execchild.RELAYED, signal.SIGCHLD}
    # Blocked before the listener's thread starts, so the signals wait for the main thread.
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, waited)
    listener = Listener(sock, name, placeholder)
    try:
        try:
            listener.begin()
        except OSError as exc:
            print(
                f"coactive-credd: cannot listen on 127.0.0.1 ({exc.strerror}); check the "
                "loopback interface",
                file=sys.stderr,
            )
            return 1
        env = child_env(dict(os.environ), listener.port, placeholder, name)
        try:
            pid = os.posix_spawnp(
                command[0],
                command,
                env,
                setsigmask=old_mask,
                setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),
            )
        except OSError as exc:
            print(
                f"coactive-credd: cannot run {command[0]!r}: {exc.strerror}; check the command and PATH",
                file=sys.stderr,
            )
            return 127 if isinstance(exc, FileNotFoundError) else 126
        status_code = execchild.wait(pid)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        listener.end()
    if os.WIFSIGNALED(status_code):
        sig = os.WTERMSIG(status_code)
        with contextlib.suppress(OSError, ValueError):
            signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
        return 128 + sig
    return os.waitstatus_to_exitcode(status_code)
