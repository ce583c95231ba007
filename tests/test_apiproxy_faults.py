"""The API proxy's faults, against an in-process daemon whose timeouts the test shortens.

Each fault gets a clear answer and costs nothing else: before Coactive's head, the socket
protocol's error body (502 bad_gateway, 503 upstream_unavailable, 423, 424, 404); after it,
a cut connection (the caller sees a truncated answer, never a complete-looking one).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from coactive_credd.testing.fakeupstream import FakeCoactive

from .conftest import CLIENT_ID, CLIENT_SECRET, PERSONAL_TOKEN, FakeClock, leaked, logged_in

MiB = 1024 * 1024


@dataclass
class Proxied:
    api: Any
    daemon: Any
    fake: FakeCoactive
    clock: FakeClock
    socket: Path
    session: aiohttp.ClientSession

    async def call(self, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        async with self.session.request(method, "http://localhost" + path, **kw) as r:
            body = await r.read()
            if r.content_type == "application/json":
                return r.status, json.loads(body)
            return r.status, body


@pytest.fixture
async def px(
    home: Path, logged_in_home: Path, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[Proxied]:
    """The fake Coactive and a daemon in this event loop, served as production serves
    (fast path in front of aiohttp), with its :class:`apiproxy.ApiProxy` at hand."""
    caplog.set_level(logging.DEBUG)
    from coactive_credd.core import paths
    from coactive_credd.server import api, refresh
    from coactive_credd.server import process as server

    f = FakeCoactive(expires_in=3600)
    f.add_personal_token(PERSONAL_TOKEN)
    f.add_client(CLIENT_ID, CLIENT_SECRET)
    await f.start()
    logged_in(logged_in_home, home, f.base_url)
    clock = FakeClock()
    p = paths.resolve()
    d = refresh.Daemon(p, clock=clock, boot_clock=clock.boot_time, rand=lambda: 0.5)
    d.load()
    sock = server.bind_socket(p.socket)
    a = api.Api(d)
    runner = await server.make_runner(a)
    await server.start_sites(runner, a, [sock])
    sched = asyncio.create_task(d.scheduler())
    session = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(p.socket)))
    for _ in range(200):
        if d.profiles["default"].rt.token is not None:
            break
        await asyncio.sleep(0.01)
    try:
        yield Proxied(a, d, f, clock, p.socket, session)
    finally:
        sched.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sched
        await session.close()
        await runner.cleanup()
        await a.proxy.close()
        await d.flush()
        await d.upstream.close()
        await f.stop()
        assert not leaked(caplog.text, set(f.issued)), "a secret appeared in the daemon log"


async def raw(sock: Path, data: bytes, read_for: float = 2.0) -> bytes:
    """Send ``data`` on a fresh connection; everything that comes back within ``read_for``
    seconds or until the daemon closes."""
    reader, writer = await asyncio.open_unix_connection(str(sock))
    writer.write(data)
    await writer.drain()
    got = b""
    with contextlib.suppress(TimeoutError, ConnectionError):
        async with asyncio.timeout(read_for):
            while chunk := await reader.read(65536):
                got += chunk
    writer.close()
    return got


async def test_coactive_unreachable_is_a_502_bad_gateway(px: Proxied) -> None:
    await px.fake.stop()  # the token stays valid; Coactive is gone
    status, body = await px.call("GET", "/api/v1/echo")
    assert status == 502 and body["error"]["code"] == "bad_gateway"
    assert "could not be reached" in body["error"]["message"]


async def test_no_token_and_coactive_down_is_a_503(px: Proxied) -> None:
    px.fake.fault = "503"
    px.clock.jump(4000)  # the token is dead; the login fails
    status, body = await px.call("GET", "/api/v1/echo")
    assert status == 503 and body["error"]["code"] == "upstream_unavailable"
    assert px.fake.api_requests == []


async def test_coactive_stalling_before_its_head_is_a_502(px: Proxied) -> None:
    px.api.proxy.read_timeout = 0.5
    status, body = await px.call("GET", "/api/v1/stall")
    assert status == 502 and body["error"]["code"] == "bad_gateway"
    assert "no answer within 0.5 s" in body["error"]["message"]
    status, _ = await px.call("GET", "/api/v1/echo")  # and the next request is served
    assert status == 200


async def test_coactive_resetting_mid_body_cuts_the_callers_answer(px: Proxied) -> None:
    with pytest.raises(aiohttp.ClientPayloadError):
        await px.call("GET", "/api/v1/reset?bytes=300000")
    assert px.daemon.stats.proxy.cut["default"] == 1
    status, _ = await px.call("GET", "/api/v1/echo")
    assert status == 200


async def test_a_caller_that_stops_reading_is_cut_and_others_are_served(px: Proxied) -> None:
    px.api.proxy.send_timeout = 1.0
    reader, writer = await asyncio.open_unix_connection(str(px.socket))
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    writer.write(b"GET /api/v1/stream?bytes=104857600 HTTP/1.1\r\nHost: localhost\r\n\r\n")
    await writer.drain()
    await asyncio.sleep(0.3)
    for _ in range(5):  # meanwhile, every other caller is answered
        status, _ = await px.call("GET", "/api/v1/echo")
        assert status == 200
    for _ in range(100):
        if px.daemon.stats.proxy.cut["default"]:
            break
        await asyncio.sleep(0.05)
    assert px.daemon.stats.proxy.cut["default"] == 1
    got = 0
    with contextlib.suppress(ConnectionError, TimeoutError):
        async with asyncio.timeout(5):
            while chunk := await reader.read(1 << 20):
                got += len(chunk)
    assert got < 100 * MiB  # the answer was cut, not completed
    writer.close()


async def test_a_body_larger_than_declared_forwards_only_what_was_declared(px: Proxied) -> None:
    got = await raw(
        px.socket,
        b"POST /api/v1/echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\r\n"
        b"helloEXTRA-BYTES-THAT-ARE-NO-REQUEST",
    )
    first, _, rest = got.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200")
    assert b'"body": "hello"' in rest and b"EXTRA" not in rest.split(b"HTTP/1.1")[0]
    assert b" 400 Bad Request" in rest and b"bad_request" in rest  # the rest: a malformed request
    assert len(px.fake.api_requests) == 1


async def test_a_body_that_stops_arriving_is_a_408(px: Proxied) -> None:
    px.api.proxy.body_idle = 0.5
    got = await raw(
        px.socket,
        b"POST /api/v1/echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\nabc",
        read_for=3,
    )
    assert got.startswith(b"HTTP/1.1 408") and b"stopped arriving" in got
    assert px.fake.api_requests == []


async def test_the_vault_locked_is_a_423_and_reauth_required_a_424(px: Proxied) -> None:
    p = px.daemon.profiles["default"]
    p.rt.on_rejected("Coactive refused the login with HTTP 401")
    p.rt.token = None
    status, body = await px.call("GET", "/api/v1/echo")
    assert status == 424 and body["error"]["code"] == "reauth_required"
    px.daemon.lock_now("test")
    status, body = await px.call("GET", "/api/v1/echo")
    assert status == 423 and body["error"]["code"] == "locked"
    assert px.fake.api_requests == []


async def test_a_head_request_and_a_204_carry_no_body(px: Proxied) -> None:
    got = await raw(
        px.socket, b"HEAD /api/v1/stream?bytes=1000 HTTP/1.1\r\nHost: localhost\r\n\r\n", 1.0
    )
    head, _, rest = got.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"Content-Length: 1000" in head and rest == b""


async def test_a_coactive_401_storm_costs_one_login_per_interval(px: Proxied) -> None:
    logins = px.fake.logins
    px.fake.api_401 = 50
    for _ in range(10):
        status, _ = await px.call("GET", "/api/v1/echo")
        assert status == 401
    assert px.fake.logins == logins + 1


@pytest.mark.parametrize("cut", [1, 3, 7, 12, 40])
def test_the_scrubber_masks_a_secret_however_the_chunks_cut_it(cut: int) -> None:
    from coactive_credd.core.proxyrules import Scrubber

    text = b'{"a": "cat_SECRET", "b": "cat_SECRET!", "c": "cat_SECRE"}'
    s = Scrubber(["cat_SECRET"])
    out = b"".join(s.feed(text[i : i + cut]) for i in range(0, len(text), cut)) + s.end()
    assert out == text.replace(b"cat_SECRET", b"**********") and len(out) == len(text)


async def test_a_caller_hanging_up_mid_answer_costs_one_quiet_line(
    px: Proxied, caplog: pytest.LogCaptureFixture
) -> None:
    # Twelve hang-ups: where the cut lands (the daemon writing, the fake writing, between
    # reads) differs each time, and a line logged for any of them is a failure.
    for _ in range(12):
        reader, writer = await asyncio.open_unix_connection(str(px.socket))
        writer.write(b"GET /api/v1/stream?bytes=52428800 HTTP/1.1\r\nHost: localhost\r\n\r\n")
        await writer.drain()
        await reader.read(100000)
        writer.transport.abort()
        await asyncio.sleep(0.2)
    status, _ = await px.call("GET", "/api/v1/echo")
    assert status == 200
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
