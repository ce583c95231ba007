"""Differential fuzzing of the socket protocol: the daemon as shipped (the fast path in front
of aiohttp) against the same daemon with the fast path off (aiohttp alone).

Hypothesis generates request heads — pipelined, split at random byte boundaries, with
duplicated, folded and odd fields, odd targets and digits — and the same bytes go to both
sockets of one daemon (one state, one fixed clock). Both must give the same statuses and
bodies, never a 5xx, never drop a connection without answering, and never hand out a token
the daemon would not serve.

``COACTIVE_CREDD_FUZZ_EXAMPLES`` sets the number of examples (default 300, about half a
minute); a long run: ``COACTIVE_CREDD_FUZZ_EXAMPLES=20000 python3 -m pytest tests/test_fuzz.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from coactive_credd.testing.fakeupstream import FakeCoactive
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from .conftest import PERSONAL_TOKEN, FakeClock, run_cli

EXAMPLES = int(os.environ.get("COACTIVE_CREDD_FUZZ_EXAMPLES", "300"))
READ_TIMEOUT = 2.0  # seconds to wait for the answers to one example
RAN = {"examples": 0, "requests": 0}


@dataclass
class Served:
    fast: Path  # the daemon as shipped
    slow: Path  # the same daemon, fast path off
    daemon: Any
    clock: FakeClock
    fake: FakeCoactive


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    """One in-process daemon on its own event loop (a thread), served on two sockets."""
    home = Path(tempfile.mkdtemp(prefix="ccf-", dir="/tmp"))
    home.chmod(0o700)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COACTIVE_CREDD_HOME", str(home))
        mp.delenv("COACTIVE_CREDD_SOCKET", raising=False)
        mp.delenv("COACTIVE_PROFILE", raising=False)
        ready: dict[str, Any] = {}
        started = threading.Event()
        stop: list[asyncio.Event] = []

        async def main() -> None:
            from coactive_credd.core import paths
            from coactive_credd.server import api, refresh
            from coactive_credd.server import process as server

            fake = FakeCoactive(expires_in=3600)
            fake.add_personal_token(PERSONAL_TOKEN)
            await fake.start()
            proc = await asyncio.to_thread(
                run_cli,
                "login",
                "--base-url",
                fake.base_url,
                "--personal-token-stdin",
                "--no-verify",
                input=PERSONAL_TOKEN + "\n",
            )
            assert proc.returncode == 0, proc.stderr
            clock = FakeClock()
            p = paths.resolve()
            d = refresh.Daemon(p, clock=clock, rand=lambda: 0.5)
            d.load()
            a = api.Api(d)
            runner = await server.make_runner(a)
            fast, slow = p.socket, p.socket.with_name("slow.sock")
            await server.start_sites(runner, a, [server.bind_socket(fast)])
            await server.start_sites(runner, a, [server.bind_socket(slow)], fast=False)
            sched = asyncio.create_task(d.scheduler())
            while d.profiles["default"].rt.token is None:
                await asyncio.sleep(0.01)
            stop.append(asyncio.Event())
            ready["served"] = Served(fast, slow, d, clock, fake)
            started.set()
            await stop[0].wait()
            sched.cancel()
            await runner.cleanup()
            await d.flush()
            await d.upstream.close()
            await fake.stop()

        try:  # the loop `serve` runs on when uvloop is installed, as the test extra does
            import uvloop

            loop = uvloop.new_event_loop()
        except ImportError:
            loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
        thread.start()
        assert started.wait(30), "the in-process daemon did not start"
        yield ready["served"]
        loop.call_soon_threadsafe(stop[0].set)
        thread.join(30)
    print(f"\nfuzz: {RAN['examples']} examples, {RAN['requests']} requests, each on both paths")


# ---- what is generated ---------------------------------------------------------------------

DIGITS = ["0", "1", "60", "3599", "86400", "86401", "007", "99999999999", ""]
ODD_DIGITS = ["%C2%B2", "%D9%A3", "%EF%BC%91", "+1", "-1", "%201", "1%20", "1.0", "1e3", "%31"]
PROFILES = ["default", "", "nope", "DEFAULT", "%64efault", "def%00ault", "-x", "a" * 70, "%ff"]
PATHS = [
    "/v1/token",
    "/v1/token",
    "/v1/token",
    "/healthz",
    "/v1/status",
    "/nope",
    "//v1/token",
    "/v1/token/",
    "/v1/%74oken",
    "/V1/TOKEN",
    "/v1/credential",
    "*",
    "http://localhost/v1/token",
]
FIELDS = [
    b"Host: x",
    b"Host: x",
    b"Host: y",
    b"host:x",
    b"Host:",
    b"Content-Length: 0",
    b"Content-Length: 00",
    b"Content-Length: -0",
    b"Content-Length: 0, 0",
    b"Connection: close",
    b"Connection: keep-alive",
    b"Connection: Keep-Alive",
    b"Connection: upgrade",
    b"Connection: close, keep-alive",
    b"Accept: text/plain",
    b"Accept: TEXT/PLAIN",
    b"Accept: */*",
    b"Accept: application/json",
    b"Expect: 100-continue",
    b"Upgrade: websocket",
    b"Transfer-Encoding: identity",
    b"X-Odd: a\x01b",
    b"X-Odd: \xc3\xa9",
    b"X-Odd: a\tb",
    b"Bad Name: x",
    b": empty-name",
    b"X-Fold: a",
    b" folded",
    b"\tfolded",
    b"X-Long: " + b"a" * 5000,
    b"User-Agent: fuzz",
]
VERSIONS = [b"HTTP/1.1"] * 8 + [b"HTTP/1.0", b"HTTP/1.2", b"HTTP/2.0", b"http/1.1", b"HTTP/1.1 "]
METHODS = [b"GET"] * 8 + [b"POST", b"PUT", b"get", b"GET /x"]


@st.composite
def targets(draw: st.DrawFn) -> bytes:
    path = draw(st.sampled_from(PATHS))
    params = []
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["profile", "min_ttl", "min_ttl", "other", "raw"]))
        if kind == "profile":
            params.append("profile=" + draw(st.sampled_from(PROFILES)))
        elif kind == "min_ttl":
            params.append("min_ttl=" + draw(st.sampled_from(DIGITS + ODD_DIGITS)))
        elif kind == "other":
            params.append(draw(st.sampled_from(["protocol=https", "host=x", "a", "a=b=c", ""])))
        else:
            params.append(draw(st.sampled_from(["%", "%zz", "\x01", "\x7f", "é", " ", "#f"])))
    target = path.encode() + (b"?" + "&".join(params).encode() if params else b"")
    if draw(st.integers(0, 9)) == 0:
        target += draw(st.sampled_from([b"#frag", b"?", b"&", b";x"]))
    return target


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    method = draw(st.sampled_from(METHODS))
    version = draw(st.sampled_from(VERSIONS))
    fields = draw(st.lists(st.sampled_from(FIELDS), max_size=5))
    if draw(st.integers(0, 3)):
        fields.insert(draw(st.integers(0, len(fields))), b"Host: x")
    eol = b"\r\n" if draw(st.integers(0, 15)) else b"\n"
    head = [method + b" " + draw(targets()) + b" " + version, *fields]
    if draw(st.integers(0, 15)) == 0:  # one line ended by a bare LF
        i = draw(st.integers(0, len(head) - 1))
        head[i] += b"\n" + b"X-After: lf"
    return eol.join(head) + eol + eol


@st.composite
def exchanges(draw: st.DrawFn) -> tuple[list[bytes], list[bytes]]:
    """Chunks to send, in order, and the requests they hold."""
    reqs = draw(st.lists(requests(), min_size=1, max_size=4))
    data = b"".join(reqs)
    cuts = sorted(draw(st.lists(st.integers(1, max(1, len(data) - 1)), max_size=4, unique=True)))
    chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    return [c for c in chunks if c], reqs


# ---- sending and reading -------------------------------------------------------------------


def parse_answers(raw: bytes) -> list[tuple[int, bytes]]:
    """The whole answers in ``raw`` (interim 1xx answers left out)."""
    out, pos = [], 0
    while True:
        end = raw.find(b"\r\n\r\n", pos)
        if end < 0:
            return out
        lines = raw[pos:end].split(b"\r\n")
        status = int(lines[0].split()[1])
        fields = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            fields[name.strip().lower()] = value.strip()
        length = int(fields.get(b"content-length", b"0"))
        if end + 4 + length > len(raw):
            return out
        if status >= 200:
            out.append((status, raw[end + 4 : end + 4 + length]))
        pos = end + 4 + length


def send(path: Path, chunks: list[bytes], expected: int) -> tuple[list[tuple[int, bytes]], bool]:
    """The answers to ``chunks`` sent in order on one connection, and whether the daemon
    closed it; reads until ``expected`` answers came, it closed, or READ_TIMEOUT passed."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(READ_TIMEOUT)
    s.connect(str(path))
    raw, closed = b"", False
    try:
        for i, chunk in enumerate(chunks):
            if i:
                time.sleep(0.001)  # apart, so they arrive in separate reads
            try:
                s.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break  # refused and closed early: read the answer that came
        while len(parse_answers(raw)) < expected:
            got = s.recv(65536)
            if not got:
                closed = True
                break
            raw += got
    except ConnectionResetError:  # closed with requests unread: after a refusal
        closed = True
    except TimeoutError:
        pass
    finally:
        s.close()
    return parse_answers(raw), closed


@pytest.mark.timeout(max(120, EXAMPLES // 2))  # a long run gets the time it needs
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(exchange=exchanges())
@example(  # found by a long run: a head's CRLF CRLF split across two reads, then a bad one
    exchange=(
        [
            b"GET /v1/token?profile= HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r",
            b"\nGET /v1/token HTTP/1.1\nX-After: lf\n\n",
        ],
        [
            b"GET /v1/token?profile= HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
            b"GET /v1/token HTTP/1.1\nX-After: lf\n\n",
        ],
    )
)
def test_fast_path_and_aiohttp_answer_every_request_alike(
    served: Served, exchange: tuple[list[bytes], list[bytes]]
) -> None:
    chunks, reqs = exchange
    n = len(reqs)
    fast, fast_closed = send(served.fast, chunks, n)
    slow, slow_closed = send(served.slow, chunks, n)
    RAN["examples"] += 1
    RAN["requests"] += n
    data = b"".join(chunks)
    assert fast == slow, f"{data!r}: fast path {fast!r} != aiohttp {slow!r}"
    assert fast, f"{data!r}: no answer at all (closed: {fast_closed})"
    if len(fast) < n:  # fewer answers than requests: only after a refusal or a close
        last, asked = fast[-1], reqs[len(fast) - 1].lower()
        assert fast_closed and slow_closed, f"{data!r}: left waiting after {last!r}"
        line = asked.split(b"\n", 1)[0].rstrip(b"\r")
        closing = b"connection: close" in asked or not line.endswith(b" http/1.1")
        assert last[0] == 400 or closing, f"{data!r}: dropped after {last!r}"
    for status, body in fast:
        assert status < 500, f"{data!r}: {status} {body!r}"
        if status == 200 and body.startswith(b"{") and b"access_token" in body:
            doc = json.loads(body)
            tok = served.daemon.profiles["default"].rt.token
            assert doc["access_token"] == tok.access_token
            assert doc["expires_in"] > served.daemon.policy.skew
