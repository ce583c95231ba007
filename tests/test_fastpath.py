"""The hot path in front of aiohttp: what it answers itself, and that everything else reaches
aiohttp unchanged, in order, on the same connection."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest
from aiohttp import web
from coactive_credd.server import api, fastpath, logguard
from coactive_credd.server import process as server
from coactive_credd.server.fastpath import FastSite

from .conftest import InProc


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One whole answer from ``reader``: (status, fields by lower-case name, body); 10 s at
    most for each part."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    fields = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
    body = await asyncio.wait_for(reader.readexactly(int(fields.get("content-length", "0"))), 10)
    return status, fields, body


class Site:
    def __init__(self, path: Path, calls: list[str], sites: list[FastSite]) -> None:
        self.path, self.calls, self.sites = path, calls, sites

    async def exchange(self, data: bytes, answers: int) -> list[tuple[int, dict[str, str], bytes]]:
        """Send ``data`` on one connection and read ``answers`` whole answers."""
        reader, writer = await asyncio.open_unix_connection(str(self.path))
        writer.write(data)
        out = [await read_answer(reader) for _ in range(answers)]
        writer.close()
        return out


class CountingApi(api.Api):
    """The daemon's Api, noting every request that reaches aiohttp's handler."""

    calls: list[str]

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        self.calls.append(f"{request.method} {request.path_qs}")
        return await super().handle(request)


@pytest.fixture
async def site(
    inproc: InProc, request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[Site]:
    """The in-process daemon served a second time, as `serve` serves it (fast path in front of
    aiohttp, production's limits), counting what aiohttp handles. Parametrized indirectly
    with a dict, the keywords of :func:`server.start_sites` (``fast``, ``max_connections``)."""
    a = CountingApi(inproc.daemon)
    a.calls = []
    runner = await server.make_runner(a)
    path = inproc.socket.with_name("fast.sock")  # beside the daemon's own, in its private folder
    sock = server.bind_socket(path)
    sites = await server.start_sites(runner, a, [sock], **getattr(request, "param", {}))
    yield Site(path, a.calls, sites)
    await runner.cleanup()
    assert sites[0]._sweeper is None  # the idle sweep stops with the site
    # a request the fast path hands over must be one it chose to, never one it failed on
    failed = [r for r in caplog.get_records("call") if "the fast path failed" in r.getMessage()]
    assert not failed, failed


GET = b"GET /v1/token HTTP/1.1\r\nHost: x\r\n\r\n"


async def test_the_token_is_answered_without_aiohttp_and_matches_its_answer(
    site: Site, inproc: InProc
) -> None:
    [(status, headers, body)] = await site.exchange(GET, 1)
    assert status == 200 and site.calls == []
    assert headers["content-type"].startswith("application/json")
    fast = json.loads(body)
    # the same request with a (legal, empty-bodied) twist goes to aiohttp: same answer
    [(status2, _, body2)] = await site.exchange(
        b"GET /v1/token HTTP/1.1\r\nHost: x\r\nExpect: nothing\r\n\r\n", 1
    )
    assert site.calls == ["GET /v1/token"]
    slow = json.loads(body2)
    assert status2 == 200 and {k: v for k, v in fast.items() if k != "expires_in"} == {
        k: v for k, v in slow.items() if k != "expires_in"
    }
    assert fast["access_token"] == inproc.fake.issued[-1]


async def test_pipelined_requests_keep_their_order_across_the_hand_over(
    site: Site, inproc: InProc
) -> None:
    data = (
        GET
        + b"POST /v1/token/refresh HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
        + GET
        + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    answers = await site.exchange(data, 4)
    assert [a[0] for a in answers] == [200, 200, 200, 200]
    first, refreshed, after = (json.loads(a[2])["access_token"] for a in answers[:3])
    assert first != refreshed == after == inproc.fake.issued[-1]
    assert answers[3][2] == b"ok"
    # once aiohttp has the connection it keeps it: the last two were its too
    assert site.calls == ["POST /v1/token/refresh", "GET /v1/token", "GET /healthz"]


async def test_a_head_split_across_reads_and_connection_close(site: Site) -> None:
    reader, writer = await asyncio.open_unix_connection(str(site.path))
    writer.write(b"GET /v1/to")
    await writer.drain()
    await asyncio.sleep(0.05)
    writer.write(b"ken HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    # to EOF: the server closed as asked (bounded: an idle close comes only after 60 s)
    raw = await asyncio.wait_for(reader.read(), 2)
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and head.endswith(b"\r\nConnection: close")
    assert json.loads(body)["token_type"] == "Bearer"  # a well-formed answer, then EOF
    assert site.calls == []


@pytest.mark.parametrize(
    ("request_bytes", "statuses", "handled"),
    [
        (b"GET /v1/token?profile=nope HTTP/1.1\r\nHost: x\r\n\r\n", {404}, 1),
        (b"GET /v1/token?min_ttl=-1 HTTP/1.1\r\nHost: x\r\n\r\n", {400}, 1),
        (b"GET /v1/token HTTP/1.0\r\n\r\n", {200}, 1),
        (b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", {404}, 1),
        (b"GET /v1/token HTTP/1.1\r\n\r\n", {400}, 0),  # no Host,
        # malformed: aiohttp's parser refuses them before any handler runs
        (b"GET /v1/token HTTP/1.1\r\nX-Big: " + b"a" * 5000 + b"\r\n\r\n", {400, 431}, 0),
        (b"GET /v1/token HTTP/1.1\r\nHost: x\r\nBad Header: x\r\n\r\n", {400}, 0),
    ],
)
async def test_everything_else_is_aiohttps_to_answer(
    site: Site, request_bytes: bytes, statuses: set[int], handled: int
) -> None:
    [(got, _, _)] = await site.exchange(request_bytes, 1)
    assert got in statuses
    assert len(site.calls) == handled


async def test_a_fault_in_the_fast_path_costs_the_caller_nothing(
    site: Site, inproc: InProc, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug that raises while the fast path reads a request (planted: its query parser fails
    once; nothing real makes it raise) is logged with its traceback, and aiohttp answers the
    request on the same connection: the caller sees one ordinary answer."""
    real, calls = fastpath.parse_query, []

    def fails_once(query: str) -> dict[str, str]:
        calls.append(query)
        if len(calls) == 1:
            raise RuntimeError("planted")
        return real(query)

    monkeypatch.setattr(fastpath, "parse_query", fails_once)
    answers = await site.exchange(GET + GET, 2)
    assert [a[0] for a in answers] == [200, 200]
    assert json.loads(answers[0][2])["access_token"] == inproc.fake.issued[-1]
    assert site.calls == ["GET /v1/token", "GET /v1/token"]  # aiohttp keeps the connection
    [failed] = [r for r in caplog.records if "fast path failed" in r.getMessage()]
    assert failed.getMessage() == "the fast path failed on a request; aiohttp answers it"
    assert failed.exc_info is not None and str(failed.exc_info[1]) == "planted"
    caplog.clear()  # planted: the site's check for failed hand-overs is not about this one


async def test_a_token_that_needs_a_refresh_is_left_to_aiohttp(site: Site, inproc: InProc) -> None:
    inproc.clock.jump(3600)  # dead: callers must wait for the refresh
    [(status, _, body)] = await site.exchange(GET, 1)
    assert status == 200 and json.loads(body)["access_token"] == inproc.fake.issued[-1]
    assert site.calls == ["GET /v1/token"] and inproc.fake.logins == 2


async def test_a_caller_that_reads_nothing_gets_a_bounded_queue_then_every_answer(
    site: Site,
) -> None:
    """Thousands of pipelined requests and no reading: the fast path stops reading them once
    WRITE_HIGH bytes of answers are queued, answers the rest as they are read, and forgets the
    connection when it closes."""
    n = 20000  # 740 KB of requests, about 6 MB of answers
    reader, writer = await asyncio.open_unix_connection(str(site.path))
    writer.write(GET * n)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while not site.sites[0]._live:
        assert loop.time() < deadline, "the connection never reached the fast path"
        await asyncio.sleep(0.01)
    [conn] = site.sites[0]._live
    while not conn.writing_paused:  # the kernel's buffers fill first
        assert loop.time() < deadline, "the fast path never paused"
        await asyncio.sleep(0.01)
    for _ in range(20):  # and it stays paused, the queue bounded, while nobody reads
        await asyncio.sleep(0.01)
        assert conn.writing_paused
        assert conn.transport is not None
        # above WRITE_HIGH, where writing paused, by at most one chunk of answers
        queued = conn.transport.get_write_buffer_size()
        assert fastpath.WRITE_HIGH // 2 < queued <= fastpath.WRITE_HIGH + 4096
        assert not conn.transport.is_reading()  # the rest of the burst waits in the kernel
    got = b""
    while got.count(b"HTTP/1.1 200 OK") < n:
        chunk = await asyncio.wait_for(reader.read(1 << 16), 30)
        assert chunk, f"closed after {got.count(b'HTTP/1.1 200 OK')} answers"
        got += chunk
    assert got.count(b"HTTP/1.1 ") == n and site.calls == []
    # the caller reads at last, and asks again: reading was resumed, it is answered
    writer.write(GET)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 200 OK")
    writer.close()
    await writer.wait_closed()
    while site.sites[0]._live:
        assert loop.time() < deadline, "a closed connection is still counted as live"
        await asyncio.sleep(0.01)


@pytest.fixture
def short_idle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fastpath, "IDLE", 0.5)  # before the site starts its idle sweep


async def test_an_idle_connection_closes_idle_seconds_after_its_last_request(
    short_idle: None, site: Site
) -> None:
    """One sweep closes idle connections, no timer per connection: requests keep a
    connection open past IDLE, and it closes IDLE to 1.25 IDLE after the last one. Four
    connections go quiet 0.4 s apart, so some sweep phase would show a slower sweep."""
    loop = asyncio.get_running_loop()

    async def one(quiet_after: float) -> float:
        reader, writer = await asyncio.open_unix_connection(str(site.path))
        started = loop.time()
        while True:  # a request every 0.15 s until quiet_after
            writer.write(GET)
            assert (await read_answer(reader))[0] == 200
            last = loop.time()
            if last - started >= quiet_after:
                break
            await asyncio.sleep(0.15)
        assert await asyncio.wait_for(reader.read(1), 30) == b""  # closed by the daemon
        writer.close()
        return loop.time() - last

    async def silent() -> float:  # connects and never sends a byte
        reader, writer = await asyncio.open_unix_connection(str(site.path))
        started = loop.time()
        assert await asyncio.wait_for(reader.read(1), 30) == b""
        writer.close()
        return loop.time() - started

    *waited, quiet = await asyncio.gather(
        *(one(1.0 + 0.4 * i) for i in range(4)), silent()
    )  # the busy ones past 2 IDLEs
    assert 0.5 <= quiet <= 0.5 * 1.25 + 0.5, quiet
    # after IDLE (0.5 s), by the sweep every IDLE / 4; the bound leaves the loop 0.5 s
    assert all(0.5 <= w <= 0.5 * 1.25 + 0.5 for w in waited), waited
    assert site.calls == []


async def test_a_connection_that_asks_twice_gets_a_small_kernel_buffer(site: Site) -> None:
    """At its second request (one setsockopt fewer for a caller that asks once and goes)."""
    reader, writer = await asyncio.open_unix_connection(str(site.path))
    sizes = []
    for _ in range(2):
        writer.write(GET)
        await read_answer(reader)
        [conn] = site.sites[0]._live
        assert conn.transport is not None
        sock = conn.transport.get_extra_info("socket")
        sizes.append(sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF))
    # Linux reports twice what was set (its bookkeeping); its default is over 200 KB.
    assert sizes[0] > 2 * fastpath.KERNEL_SNDBUF >= sizes[1]
    writer.close()


async def test_a_socket_that_refuses_a_smaller_buffer_is_left_as_it_is() -> None:
    """``setsockopt`` failing (here EBADF, from a real socket already closed) is no fault of
    the caller's: the buffer stays as it is and the answer goes out."""
    closed = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    closed.close()

    class Transport:
        def get_extra_info(self, name: str) -> socket.socket | None:
            return closed if name == "socket" else None

    conn = fastpath.FastConnection(cast(Any, None), cast(Any, None), set(), True, 0)
    conn._small_kernel_buffer(cast(asyncio.Transport, Transport()))  # raises nothing


def cap_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The daemon's log lines about its connection cap, in order."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelname == "WARNING" and "the most this daemon keeps" in r.getMessage()
    ]


@pytest.mark.parametrize("site", [{"max_connections": 3}], indirect=True)
async def test_at_the_cap_an_idle_connection_makes_room(
    site: Site, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A program holding connections open cannot lock others out: at the cap, each new
    connection closes a fast-path one (never answered first, then the longest idle); only
    when every open connection is aiohttp's is the new one refused. Each is one log line,
    rate-limited."""
    monkeypatch.setattr(logguard, "refusals", logguard.RateLimiter())  # none logged before
    status_req = b"GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n"

    async def opened(ask: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_unix_connection(str(site.path))
        writer.write(ask)
        assert (await read_answer(reader))[0] == 200
        await asyncio.sleep(0.01)  # distinct moments of last activity
        return reader, writer

    async def closed_by_daemon(reader: asyncio.StreamReader) -> bool:
        try:
            return await asyncio.wait_for(reader.read(), 10) == b""
        except ConnectionResetError:
            return True

    async def asks_again(conn: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
        conn[1].write(GET)
        assert (await read_answer(conn[0]))[0] == 200
        await asyncio.sleep(0.01)

    a = await opened(GET)
    lurker = await asyncio.open_unix_connection(str(site.path))  # never asks anything
    await asyncio.sleep(0.05)
    c = await opened(status_req)  # handed over: aiohttp's, counted too
    assert len(site.sites[0]._live) == 2
    d = await opened(GET)  # the fourth: served; the lurker makes room, though a is idler
    assert await closed_by_daemon(lurker[0])
    await asks_again(a)
    e = await opened(GET)  # then, all answered, the longest idle: d
    assert await closed_by_daemon(d[0])
    await asks_again(a)
    await asks_again(e)
    evict = (
        "3 connections are open, the most this daemon keeps: closing an idle one for each new "
        "one (never answered or not reading first, the longest idle first); some local "
        "program opens connections without closing them"
    )
    assert cap_lines(caplog) == [evict]  # the second eviction is left out: rate-limited
    for _, writer in (a, lurker, d, e):
        writer.close()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while site.sites[0]._live:
        assert loop.time() < deadline
        await asyncio.sleep(0.01)
    # every open connection aiohttp's: the new one is refused
    held = [c, await opened(status_req), await opened(status_req)]
    reader, writer = await asyncio.open_unix_connection(str(site.path))
    writer.write(GET)
    assert await closed_by_daemon(reader)
    assert cap_lines(caplog) == [
        evict,
        "refusing connections: 3 are open, the most this daemon keeps, all busy; some local "
        "program opens connections without closing them",
    ]
    for _, w in [*held, (reader, writer)]:
        w.close()
        with contextlib.suppress(ConnectionResetError):
            await w.wait_closed()


@pytest.mark.parametrize("site", [{"max_connections": 3}], indirect=True)
async def test_connections_arriving_together_at_the_cap_each_make_room(site: Site) -> None:
    """Two connections accepted in one go, at the cap: each closes an idle one of its own,
    not both the same one, so the daemon keeps no more than the cap."""
    loop = asyncio.get_running_loop()
    idle = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(3)]
    for s in idle:
        s.setblocking(False)
        await loop.sock_connect(s, str(site.path))
    live = site.sites[0]._live
    deadline = loop.time() + 10
    while len(live) < 3:
        assert loop.time() < deadline, len(live)
        await asyncio.sleep(0.01)
    # both wait in the listening socket's backlog, so the daemon accepts them together
    new = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(2)]
    for s in new:
        s.connect(str(site.path))  # a Unix socket connects before it is accepted
        s.setblocking(False)
    closed: list[socket.socket] = []
    while len(closed) < 2:
        assert loop.time() < deadline, closed
        await asyncio.sleep(0.01)
        closed = [s for s in idle if _closed_by_peer(s)]
    await asyncio.sleep(0.05)  # any third close would have come by now
    assert len([s for s in idle if _closed_by_peer(s)]) == 2 and len(live) == 3
    for s in idle:
        s.close()
    for s in new:  # and both are served
        reader, writer = await asyncio.open_unix_connection(sock=s)
        writer.write(GET)
        assert (await read_answer(reader))[0] == 200
        writer.close()
        await writer.wait_closed()


def _closed_by_peer(s: socket.socket) -> bool:
    """Whether the daemon closed this non-blocking socket (EOF or reset; no bytes were due)."""
    try:
        return s.recv(1) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


@pytest.mark.parametrize("site", [{"fast": False}], indirect=True)
async def test_with_the_fast_path_off_aiohttp_answers_and_counts_everything(site: Site) -> None:
    answers = await site.exchange(GET + GET, 2)
    assert [a[0] for a in answers] == [200, 200]
    assert site.calls == ["GET /v1/token", "GET /v1/token"] and not site.sites[0]._live
    [client] = site.sites[0]._api.audit.clients()
    assert client.connections == 1 and client.tokens() == 2


async def test_a_connection_handed_over_stays_aiohttps_counted_once(site: Site) -> None:
    """After a hand-over the connection is aiohttp's for good: later requests on it are
    answered there, the fast path forgets it, and the audit trail counts it once."""
    reader, writer = await asyncio.open_unix_connection(str(site.path))

    async def ask(data: bytes) -> int:
        writer.write(data)
        return (await read_answer(reader))[0]

    assert await ask(GET) == 200
    assert await ask(GET) == 200
    assert len(site.sites[0]._live) == 1 and site.calls == []
    assert await ask(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n") == 200  # hand-over
    assert not site.sites[0]._live
    await asyncio.sleep(0.05)  # a later request, in its own read
    assert await ask(GET) == 200
    assert site.calls == ["GET /v1/status", "GET /v1/token"]
    writer.close()
    [client] = site.sites[0]._api.audit.clients()
    assert client.connections == 1 and client.fast == {"default": 2} and client.tokens() == 3
    assert (client.uid, client.pid) == (os.geteuid(), os.getpid())  # the kernel's word


async def test_a_body_too_large_is_refused_before_it_is_read(site: Site) -> None:
    """A Content-Length past the 4 KiB limit is a 413 at once, not a wait for the body."""
    [(status, _, body)] = await asyncio.wait_for(
        site.exchange(
            b"POST /v1/token/refresh HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n",
            1,
        ),
        10,
    )
    assert status == 413 and json.loads(body)["error"]["message"] == "request body too large"


async def test_a_body_that_arrives_in_parts_is_read_whole(site: Site, inproc: InProc) -> None:
    tok = inproc.daemon.profiles["default"].rt.token
    assert tok is not None
    digest = hashlib.sha256(tok.access_token.encode()).hexdigest()
    body = json.dumps({"rejected_token_sha256": digest}).encode()
    reader, writer = await asyncio.open_unix_connection(str(site.path))
    writer.write(
        b"POST /v1/token/refresh HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body) + body[:20]
    )
    await writer.drain()
    await asyncio.sleep(0.1)  # the rest in a later read
    writer.write(body[20:])
    status, _, raw = await read_answer(reader)
    assert status == 200
    answer = json.loads(raw)
    assert answer["access_token"] != tok.access_token  # the report was read: replaced
    writer.close()


async def test_a_caller_gone_mid_body_is_no_internal_error(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    """A body announced too large and cut short by the caller hanging up: a 413 before any
    read, nothing logged as an internal error."""
    for _ in range(3):
        reader, writer = await asyncio.open_unix_connection(str(site.path))
        writer.write(
            b'POST /v1/token/refresh HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n{"rej'
        )
        await writer.drain()
        writer.write_eof()  # half-close, as `nc -N` does
        with contextlib.suppress(ConnectionResetError):
            await asyncio.wait_for(reader.read(), 10)
        writer.close()
    await asyncio.sleep(0.1)
    assert "internal error" not in caplog.text and "Traceback" not in caplog.text
    assert site.calls == ["POST /v1/token/refresh"] * 3


async def test_the_fast_path_answers_health_and_queries_itself(site: Site) -> None:
    answers = await site.exchange(
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /v1/token?profile=default&min_ttl=60 HTTP/1.1\r\nHost: x\r\n\r\n",
        2,
    )
    assert [a[0] for a in answers] == [200, 200] and answers[0][2] == b"ok"
    assert site.calls == []  # neither reached aiohttp
    # an unknown profile is aiohttp's to answer (404), by choice, not by a failure
    [(status, _, _)] = await site.exchange(
        b"GET /v1/token?profile=nope HTTP/1.1\r\nHost: x\r\n\r\n", 1
    )
    assert status == 404 and site.calls == ["GET /v1/token?profile=nope"]


async def test_a_bare_lf_head_is_refused_at_once_in_process(site: Site) -> None:
    [(status, _, _)] = await asyncio.wait_for(
        site.exchange(b"GET /v1/token HTTP/1.1\nHost: x\n\n", 1), 5
    )
    assert status == 400


async def test_the_fast_path_answers_in_the_advisory_window_and_starts_the_refresh(
    site: Site, inproc: InProc
) -> None:
    p = inproc.daemon.profiles["default"]
    first = p.rt.token
    assert first is not None and p.rt.refresh_at is not None
    inproc.fake.delay = 1  # Coactive is slow: the caller must not wait for it
    inproc.clock.now = p.rt.refresh_at
    [(status, _, body)] = await site.exchange(GET, 1)
    assert status == 200 and json.loads(body)["access_token"] == first.access_token
    assert site.calls == [] and p.inflight is not None  # answered here; the login under way
    await asyncio.wait_for(asyncio.shield(p.inflight), 30)
    assert p.rt.token is not first


async def test_an_empty_head_is_handed_over_not_waited_on(site: Site) -> None:
    """CRLF CRLF first: an empty head the fast path cannot read goes to aiohttp at once, with
    the request after it, rather than waiting for bytes that will not come."""
    answers = await asyncio.wait_for(site.exchange(b"\r\n\r\n" + GET, 1), 5)
    assert answers[0][0] in (200, 400)
