"""A fake of Coactive's ``POST /api/v0/login``: a real aiohttp server on loopback.

Tests, the demo and the benchmarks log in against it. It checks every request exactly as
Coactive's documented API expects and answers a wrong shape with an error saying what was
wrong (400; 404 for another path, 405 for another method), so a client that drifts from the
contract fails loudly. Faults are switched by plain attributes (``fault``, ``delay``, ...),
or over HTTP by processes that cannot reach the object::

    POST /_fake/control   {"fault": "503", "delay": 0.5, "expires_in": 60, "retry_after": "2"}
    GET  /_fake/stats     {"logins": n, "requests": n}
    GET  /_fake/ledger    {"issued": [{"access_token", "credential", "issued_at", "expires_in",
                                       "requested_at"}]}

It also serves an API surface under ``/api/v1/`` (see :meth:`FakeCoactive._api`), for the
daemon's API proxy: every request there must carry ``Authorization: Bearer <a token this
fake issued>`` (else 401), and::

    ANY  /api/v1/echo...        {"method", "path", "query", "headers", "body_bytes",
                                 "body_sha256", "body" (text, when at most 64 KiB)}
    GET  /api/v1/stream?bytes=N N bytes (a repeating pattern), streamed 64 KiB at a time,
                                 with Content-Length unless &chunked=1
    GET  /api/v1/redirect       302 to https://elsewhere.invalid/
    GET  /api/v1/gzip           the request's Authorization, gzip-compressed whatever was accepted
    GET  /api/v1/stall          the head after an hour (a Coactive that stalls)
    GET  /api/v1/reset?bytes=N  N bytes of a longer announced body, then a reset
    GET  /api/v1/datasets       an empty page of datasets, the shape Coactive's SDK reads
    ANY  /api/v1/datasets/ID    the echo (what the SDK's dataset.delete reads as it is)

``api_401`` (an attribute, or ``{"api_401": K}`` to ``/_fake/control``) makes the next K API
requests answer 401 whatever their token; ``api_requests`` records each one.

The ledger (``FakeCoactive.ledger``) is what a soak checks answers against: every token the
fake issued, for which credential (:func:`credential_id`), when (epoch seconds, the fake's
wall clock) and for how long (seconds).

Run it alone with ``python -m coactive_credd.testing.fakeupstream --personal-token T``; it prints its
base URL on one line and serves until SIGTERM or SIGINT.

The parts, one module each in this room: :mod:`.fakerecords` (what it keeps of requests and
tokens), :mod:`.fakelogin` (the login shape it demands), :mod:`.fakefaults` (the faults and
their answers), :mod:`.fakeapi` (the API surface's answers). This module is their public face:
the fake, its thread wrapper and the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import ssl
import sys
import threading
import time
from typing import Any

from aiohttp import web

from .fakeapi import answer as answer_api
from .fakeapi import pattern as pattern  # re-exported: tests check streamed bodies with it
from .fakefaults import FAULTS, SLOW_DEFAULT, fault_answer
from .fakelogin import LOGIN_PATH, Refused, check_shape
from .fakerecords import Issued, RecordedRequest, credential_id, credential_of, new_token, peer_of

__all__ = [
    "FAULTS",
    "FakeCoactive",
    "FakeCoactiveThread",
    "Issued",
    "RecordedRequest",
    "credential_id",
]


class FakeCoactive:
    """Coactive's login endpoint, with switchable faults. See the module docstring."""

    def __init__(
        self,
        *,
        expires_in: int = 3600,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.expires_in = expires_in
        self.delay = 0.0
        self.fault: str | None = None
        self.retry_after: str | None = "1"
        self.next_tokens: list[str] = []
        self.logins = 0
        self.requests: list[RecordedRequest] = []
        self.issued: list[str] = []
        self.ledger: list[Issued] = []
        self._host = host
        self._port = port
        self._ssl_context = ssl_context
        # add_*/revoke may be called from another thread than the server's (FakeCoactiveThread).
        self._lock = threading.Lock()
        self._personal_tokens: set[str] = set()
        self._clients: dict[str, str] = {}
        self._revoked: set[str] = set()
        self._runner: web.AppRunner | None = None
        self._base_url: str | None = None
        self._stopping: asyncio.Event | None = None
        self.api_401 = 0  # the next this many API requests answer 401
        self.api_requests: list[RecordedRequest] = []

    def add_personal_token(self, token: str) -> None:
        with self._lock:
            self._personal_tokens.add(token)
            self._revoked.discard(token)

    def add_client(self, client_id: str, client_secret: str) -> None:
        with self._lock:
            self._clients[client_id] = client_secret
            self._revoked.discard(client_secret)

    def revoke(self, secret: str) -> None:
        """Later logins with this personal token or client secret get 401."""
        with self._lock:
            self._revoked.add(secret)

    @property
    def base_url(self) -> str:
        if self._base_url is None:
            raise RuntimeError("FakeCoactive is not started")
        return self._base_url

    async def start(self) -> str:
        if self._runner is not None:
            raise RuntimeError("FakeCoactive is already started")
        self._stopping = asyncio.Event()
        app = web.Application()
        app.router.add_post("/_fake/control", self._control)
        app.router.add_get("/_fake/stats", self._stats)
        app.router.add_get("/_fake/ledger", self._ledger)
        app.router.add_route("*", "/api/v1/{tail:.*}", self._api)
        app.router.add_route("*", "/{tail:.*}", self._login)
        # handler_cancellation: a client that hangs up stops its handler (the "timeout" fault).
        runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0
        )
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port, ssl_context=self._ssl_context)
        await site.start()
        self._runner = runner
        host, port = runner.addresses[0][:2]
        scheme = "https" if self._ssl_context else "http"
        shown = f"[{host}]" if ":" in host else host
        self._base_url = f"{scheme}://{shown}:{port}"
        return self._base_url

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if self._stopping is not None:
            self._stopping.set()  # wakes handlers sleeping on "slow" or "timeout"
        if runner is not None:
            await runner.cleanup()

    async def _sleep(self, seconds: float) -> None:
        assert self._stopping is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response({"logins": self.logins, "requests": len(self.requests)})

    async def _ledger(self, request: web.Request) -> web.Response:
        with self._lock:
            issued = [
                {
                    "access_token": i.access_token,
                    "credential": i.credential,
                    "issued_at": i.issued_at,
                    "expires_in": i.expires_in,
                    "requested_at": i.requested_at,
                }
                for i in self.ledger
            ]
        return web.json_response({"issued": issued})

    async def _control(self, request: web.Request) -> web.Response:
        try:
            settings = await request.json()
            if not isinstance(settings, dict):
                raise ValueError("the body must be a JSON object")
            self._apply(settings)
        except (ValueError, TypeError) as exc:
            return web.json_response({"detail": str(exc)}, status=400)
        return web.json_response(
            {
                "fault": self.fault,
                "delay": self.delay,
                "expires_in": self.expires_in,
                "retry_after": self.retry_after,
            }
        )

    def _apply(self, settings: dict[str, Any]) -> None:
        unknown = set(settings) - {"fault", "delay", "expires_in", "retry_after", "api_401"}
        if unknown:
            raise ValueError(f"unknown settings: {', '.join(sorted(unknown))}")
        fault = settings.get("fault", self.fault)
        if fault is not None and fault not in FAULTS:
            raise ValueError(f"fault must be null or one of {', '.join(FAULTS)}")
        delay = settings.get("delay", self.delay)
        if isinstance(delay, bool) or not isinstance(delay, int | float) or delay < 0:
            raise ValueError("delay must be a number of seconds >= 0")
        expires_in = settings.get("expires_in", self.expires_in)
        if isinstance(expires_in, bool) or not isinstance(expires_in, int):
            raise ValueError("expires_in must be an integer")
        retry_after = settings.get("retry_after", self.retry_after)
        if retry_after is not None and not isinstance(retry_after, str):
            raise ValueError("retry_after must be a string or null")
        api_401 = settings.get("api_401", self.api_401)
        if isinstance(api_401, bool) or not isinstance(api_401, int) or api_401 < 0:
            raise ValueError("api_401 must be an integer >= 0")
        self.api_401 = api_401
        self.fault, self.delay = fault, float(delay)
        self.expires_in, self.retry_after = expires_in, retry_after

    async def _login(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        text = raw.decode("utf-8", "replace")
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = text
        authorization = request.headers.get("Authorization", "")
        record = RecordedRequest(
            method=request.method,
            path=request.path,
            headers=dict(request.headers),
            body=body,
            auth=authorization.split(" ", 1)[0].lower() or None,
            peer=peer_of(request),
            credential=credential_of(authorization),
        )
        with self._lock:
            self.requests.append(record)
        response = await self._answer(request, record)
        if response is None:
            # The transport is gone on purpose; aiohttp quietly drops what is returned.
            return web.Response()
        record.status = response.status
        return response

    async def _answer(
        self, request: web.Request, record: RecordedRequest
    ) -> web.StreamResponse | None:
        if request.path != LOGIN_PATH:
            record.detail = f"no route {request.path}; the login endpoint is {LOGIN_PATH}"
            return web.json_response({"detail": record.detail}, status=404)
        if request.method != "POST":
            record.detail = f"method {request.method} not allowed; use POST"
            return web.json_response(
                {"detail": record.detail}, status=405, headers={"Allow": "POST"}
            )
        fault = self.fault
        wait = self.delay if not (fault == "slow" and self.delay == 0) else SLOW_DEFAULT
        if wait > 0:
            await self._sleep(wait)
        if fault is not None and fault != "slow":
            record.fault = fault
            if fault in ("429", "503"):
                record.retry_after = self.retry_after
            return await fault_answer(
                request,
                fault,
                retry_after=self.retry_after,
                expires_in=self.expires_in,
                sleep=self._sleep,
            )
        try:
            kind, secret, client_id = check_shape(request, record.body)
        except Refused as refused:
            record.detail = refused.detail
            return web.json_response({"detail": refused.detail}, status=refused.status)
        return self._issue(kind, secret, client_id, record)

    def _issue(
        self, kind: str, secret: str, client_id: str | None, record: RecordedRequest
    ) -> web.Response:
        """A token for a known, unrevoked credential (a 401 otherwise), written in the ledger."""
        with self._lock:
            if kind == "bearer":
                known = secret in self._personal_tokens
            else:
                known = self._clients.get(client_id or "") == secret
            if not known or secret in self._revoked:
                return web.json_response({"detail": "Invalid or revoked credentials"}, status=401)
            token = self.next_tokens.pop(0) if self.next_tokens else new_token()
            self.issued.append(token)
            self.ledger.append(
                Issued(
                    token,
                    credential_id(client_id or secret),
                    time.time(),
                    self.expires_in,
                    record.at,
                )
            )
            self.logins += 1
        return web.json_response(
            {"access_token": token, "token_type": "Bearer", "expires_in": self.expires_in}
        )

    # ---- the API surface (for the daemon's API proxy) ------------------------------------

    async def _api(self, request: web.Request) -> web.StreamResponse:
        authorization = request.headers.get("Authorization", "")
        record = RecordedRequest(
            method=request.method,
            path=request.path_qs,
            headers=dict(request.headers),
            body=None,
            auth=authorization.split(" ", 1)[0].lower() or None,
            peer=peer_of(request),
        )
        with self._lock:
            self.api_requests.append(record)
            del self.api_requests[:-1000]
            refuse = self.api_401 > 0
            if refuse:
                self.api_401 -= 1
            scheme, _, token = authorization.partition(" ")
            known = scheme.lower() == "bearer" and token in self.issued
        if refuse or not known:
            record.status = 401
            record.detail = "api_401 switch" if refuse else "bearer is not a token this fake issued"
            return web.json_response({"detail": "Invalid or expired token"}, status=401)
        resp = await answer_api(request, record, self._sleep)
        record.status = resp.status
        return resp


class FakeCoactiveThread:
    """Runs a FakeCoactive on its own event loop in a daemon thread, for synchronous tests.

    ``with FakeCoactiveThread(expires_in=60) as fake: ...`` gives the started fake.
    """

    def __init__(self, **kwargs: Any) -> None:
        self.fake = FakeCoactive(**kwargs)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="fake-coactive", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()
        self._loop.run_until_complete(self._loop.shutdown_asyncgens())
        self._loop.close()

    def __enter__(self) -> FakeCoactive:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.fake.start(), self._loop).result(timeout=10)
        return self.fake

    def __exit__(self, *exc_info: object) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.fake.stop(), self._loop).result(timeout=10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)


async def _serve(args: argparse.Namespace) -> None:
    fake = FakeCoactive(expires_in=args.expires_in, host=args.host, port=args.port)
    for token in args.personal_token:
        fake.add_personal_token(token)
    for client in args.client:
        client_id, _, client_secret = client.partition(":")
        fake.add_client(client_id, client_secret)
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, done.set)
    print(await fake.start(), flush=True)
    try:
        await done.wait()
    finally:
        await fake.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m coactive_credd.testing.fakeupstream",
        description="Serve a fake of Coactive's login endpoint on loopback "
        "(for tests and demos only).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--expires-in", type=int, default=3600, metavar="SECONDS")
    parser.add_argument("--personal-token", action="append", default=[], metavar="TOKEN")
    parser.add_argument("--client", action="append", default=[], metavar="ID:SECRET")
    args = parser.parse_args(argv)
    for client in args.client:
        if ":" not in client:
            parser.error("--client takes ID:SECRET")
    asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
