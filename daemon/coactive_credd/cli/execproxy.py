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

It runs aiohttp on an event loop in a thread of its own, so the process's main thread keeps
relaying signals to CMD exactly as plain ``exec`` does (:func:`execchild.wait`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import os
import secrets
import signal
import sys
import threading
from typing import Any

import coactive_token

from coactive_credd.cli import execchild
from coactive_credd.cli.common import new_event_loop
from coactive_credd.core.proxyrules import WITHHOLD_HEADER, end_to_end, target_problem

__all__ = ["PLACEHOLDER_PREFIX", "Listener", "run"]

PLACEHOLDER_PREFIX = "ccdp_"  # so a placeholder seen in a log or a bug report is recognised
CHUNK = 64 * 1024
# Never handed to CMD in proxy mode: each would lead it to the real token.
WITHHELD = ("COACTIVE_ACCESS_TOKEN_FILE", "COACTIVE_TOKEN_EXPIRES_AT", "COACTIVE_CREDD_SOCKET")
# Accept-Encoding too: the daemon masks the token in the answer, which it can only do in
# bytes it can read.
_NOT_FORWARDED = (
    "host",
    "authorization",
    "coactive-profile",
    "expect",
    "accept-encoding",
    WITHHOLD_HEADER,
)


def _error(status: int, code: str, message: str, hint: str, **headers: str) -> Any:
    from aiohttp import web

    body = {"error": {"code": code, "message": message, "hint": hint}}
    return web.Response(
        status=status,
        body=json.dumps(body).encode(),
        content_type="application/json",
        headers=headers,
    )


class Listener(threading.Thread):
    """The loopback listener: an event loop in its own thread. :meth:`begin` binds it
    (``port`` is then set) and raises OSError when it cannot; :meth:`end` stops it."""

    def __init__(self, sock: str, profile: str, placeholder: str) -> None:
        super().__init__(name="coactive-exec-proxy", daemon=True)
        self.sock, self.profile = sock, profile
        self._placeholder = placeholder.encode()
        self.port = 0
        self._hosts: frozenset[str] = frozenset()
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
        import aiohttp
        from aiohttp import web

        self._quit = asyncio.Event()
        try:
            session = aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(path=self.sock),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            )
            server = web.Server(self._handle, access_log=None)
            listening = await self._loop.create_server(server, "127.0.0.1", 0)
        except BaseException as exc:
            self._failed = exc
            self._ready.set()
            raise
        self.port = listening.sockets[0].getsockname()[1]
        self._hosts = frozenset({f"127.0.0.1:{self.port}", f"localhost:{self.port}"})
        self._session = session
        self._ready.set()
        try:
            await self._quit.wait()
        finally:
            listening.close()
            await server.shutdown(1.0)
            await session.close()

    def allowed(self, headers: Any) -> bool:
        """Does the request carry exactly ``Authorization: Bearer <placeholder>``? Compared
        in constant time, whatever else it carries."""
        values = headers.getall("Authorization", ())
        if len(values) != 1:
            return False
        scheme, _, given = values[0].strip().partition(" ")
        ok = hmac.compare_digest(given.strip().encode(), self._placeholder)
        return ok and scheme.lower() == "bearer"

    async def _handle(self, request: Any) -> Any:
        from aiohttp import web

        if not self.allowed(request.headers):
            return _error(
                401,
                "unauthorized",
                "this listener forwards only requests that carry its placeholder token",
                "send Authorization: Bearer $COACTIVE_ACCESS_TOKEN, as exec --proxy set it",
                **{"WWW-Authenticate": "Bearer"},
            )
        hosts = request.headers.getall("Host", ())
        if len(hosts) != 1 or hosts[0].strip().lower() not in self._hosts:
            return _error(
                400,
                "bad_request",
                "the Host header does not name this listener",
                "send requests to $COACTIVE_BASE_URL",
            )
        problem = target_problem(request.method, request.raw_path)
        if problem is not None:
            if problem == "login":
                return _error(
                    404,
                    "not_found",
                    "logins are not forwarded: the daemon logs in itself",
                    "call the API directly with $COACTIVE_ACCESS_TOKEN",
                )
            return _error(400, "bad_request", problem, "send a path under /api/")
        if request.headers.get("Expect", "").lower() == "100-continue":
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        headers = end_to_end(request.headers.items(), _NOT_FORWARDED)
        headers.append(("Coactive-Profile", self.profile))
        headers.append((WITHHOLD_HEADER, "1"))
        body = _stream(request) if request.body_exists else None
        import aiohttp

        try:
            resp = await self._session.request(
                request.method,
                "http://localhost" + request.raw_path,
                headers=headers,
                data=body,
                allow_redirects=False,
            )
        except (aiohttp.ClientError, OSError):
            return _error(
                503,
                "unreachable",
                "coactive-credd cannot be reached on its socket",
                "start it: coactive-credd serve",
            )
        try:
            out = web.StreamResponse(
                status=resp.status,
                reason=resp.reason,
                headers=end_to_end(resp.headers.items(), ("content-length",)),
            )
            length = resp.headers.get("Content-Length")
            if length is not None and length.isdigit() and "Transfer-Encoding" not in resp.headers:
                out.content_length = int(length)
            await out.prepare(request)
            if request.method != "HEAD":
                try:
                    while chunk := await resp.content.readany():
                        await out.write(chunk)
                except (aiohttp.ClientError, OSError):
                    if request.transport is not None:  # cut: the answer is incomplete
                        request.transport.abort()
                    return out
            await out.write_eof()
            return out
        finally:
            resp.release()


async def _stream(request: Any) -> Any:
    while chunk := await request.content.read(CHUNK):
        yield chunk


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
