"""Fair to every uid: a uid the daemon refuses costs the allowed uids nothing, and each uid
let in has its own share of the connections and of the event streams.

Every other uid is real (``setpriv`` as root), connecting to the in-process daemon's socket
opened up to everyone, so the kernel's ``SO_PEERCRED`` is what the daemon reads.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from coactive_credd.server import api, logguard
from coactive_credd.server import process as server

from .conftest import InProc

REFUSED = 1003  # in no allowed_uids
APP = 1002  # the app's uid, in allowed_uids
CAP = 8

# Run as another uid: open N connections to SOCK, send REQUEST on each (if any), then
# report, as one JSON line, the status of the first answer on each ("-" for none) and
# whether the daemon closed it; then hold every connection open until stdin closes.
HOLDER = r"""
import json, socket, sys
sock, n, request, wait = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode(), float(sys.argv[4])
conns = []
for _ in range(n):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sock)
    if request:
        try:
            s.sendall(request.decode("unicode_escape").encode("latin-1"))
        except OSError:  # closed by the daemon already (refused at the cap)
            pass
    conns.append(s)
out = []
for s in conns:
    s.settimeout(wait)
    raw = b""
    closed = False
    try:
        while True:
            got = s.recv(65536)
            if not got:
                closed = True
                break
            raw += got
            if b"\r\n\r\n" in raw and not closed and b"event-stream" in raw:
                break
    except (TimeoutError, socket.timeout):
        pass
    except ConnectionResetError:
        closed = True
    status = raw.split(b" ", 2)[1].decode() if raw.startswith(b"HTTP/1.1 ") else "-"
    out.append([status, closed])
print(json.dumps(out), flush=True)
sys.stdin.read()
"""


def as_uid(uid: int, *argv: str) -> list[str]:
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", *argv]


class Holder:
    """Connections held open by another uid, until :meth:`close`."""

    def __init__(self, uid: int, sock: Path, n: int, request: str, wait: float = 3.0) -> None:
        self.proc = subprocess.Popen(
            as_uid(uid, sys.executable, "-c", HOLDER, str(sock), str(n), request, str(wait)),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    async def answers(self) -> list[tuple[str, bool]]:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), 60)
        return [(s, c) for s, c in json.loads(line)]

    def close(self) -> None:
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()
        self.proc.wait(30)


@pytest.fixture
def root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to act as another uid (CI runs as root)")


def allow(inproc: InProc, *uids: int) -> None:
    d = inproc.daemon
    d.cfg = dataclasses.replace(
        d.cfg, daemon=dataclasses.replace(d.cfg.daemon, allowed_uids=frozenset(uids))
    )


@pytest.fixture
async def capped(
    inproc: InProc, root: None, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Path]:
    """The in-process daemon served a second time with at most CAP connections, its socket
    and folders opened to every uid; no refusal logged before."""
    monkeypatch.setattr(logguard, "refusals", logguard.RateLimiter())
    a = api.Api(inproc.daemon)
    runner = await server.make_runner(a)
    path = inproc.socket.with_name("capped.sock")
    sites = await server.start_sites(runner, a, [server.bind_socket(path)], max_connections=CAP)
    for folder in {path.parent, Path(os.environ["COACTIVE_CREDD_HOME"])}:
        folder.chmod(0o711)
    path.chmod(0o666)
    yield path
    await runner.cleanup()
    assert sites


async def owner_token(path: Path) -> int:
    """The status of one token request of the owner's, on a new connection."""
    reader, writer = await asyncio.open_unix_connection(str(path))
    try:
        writer.write(b"GET /v1/token HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        return int(head.split(b" ", 2)[1])
    except (asyncio.IncompleteReadError, ConnectionResetError):
        return 0  # closed without an answer: locked out
    finally:
        writer.close()


@pytest.mark.parametrize("request_line", [r"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", ""])
async def test_a_refused_uid_gets_its_403_and_holds_no_place(
    inproc: InProc, capped: Path, request_line: str
) -> None:
    """Issue 23: uid 1003 held the cap plus 20 connections and the owner was locked out.
    Now each gets its 403 (at once, or after REFUSED_WAIT when it sends nothing) and is
    closed, and the owner is served throughout."""
    holder = Holder(REFUSED, capped, CAP + 20, request_line)
    try:
        await asyncio.sleep(0.2)  # all connected, none answered yet when nothing was sent
        statuses = [await owner_token(capped) for _ in range(3)]
        answers = await holder.answers()
        assert statuses == [200, 200, 200]
        assert answers == [("403", True)] * (CAP + 20), answers
        assert [await owner_token(capped) for _ in range(CAP + 2)] == [200] * (CAP + 2)
    finally:
        holder.close()


async def test_a_refused_flood_is_one_log_line(
    inproc: InProc, capped: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 23: 3,000 pipelined requests from a refused uid wrote 3,000 WARNING lines."""
    pipelined = r"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" * 3000
    holders = [Holder(REFUSED, capped, 1, pipelined), Holder(REFUSED, capped, 40, "")]
    try:
        for h in holders:
            assert {s for s, _ in await h.answers()} == {"403"}
    finally:
        for h in holders:
            h.close()
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings[:5]]
    # nor in the audit trail: its entries would push the allowed uids' out of the table
    reader, writer = await asyncio.open_unix_connection(str(capped))
    writer.write(b"GET /v1/audit HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    raw = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    clients = json.loads(raw.split(b"\r\n\r\n", 1)[1])["clients"]
    assert clients and REFUSED not in {c["uid"] for c in clients}, clients
    assert warnings[0].getMessage().startswith(f"refused a request from uid {REFUSED} (pid ")
    assert inproc.daemon.stats.refused["forbidden"] == 41


async def test_an_allowed_uid_cannot_take_the_owners_connections(
    inproc: InProc, capped: Path
) -> None:
    """Each uid let in has CAP / (uids let in) connections: the app holding event streams on
    every connection it can get leaves the owner its own share."""
    allow(inproc, APP)
    holder = Holder(APP, capped, CAP + 4, r"GET /v1/events HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        answers = await holder.answers()
        served = [a for a in answers if a[0] == "200"]
        assert len(served) == CAP // 2, answers  # its share, the rest closed
        assert [await owner_token(capped) for _ in range(CAP)] == [200] * CAP
        # the owner's own share held open (keep-alive), and still the app gets no more
        held = [await asyncio.open_unix_connection(str(capped)) for _ in range(CAP // 2)]
        for _, w in held:
            w.write(b"GET /v1/token HTTP/1.1\r\nHost: x\r\n\r\n")
        for r, _ in held:
            assert (await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 10)).startswith(
                b"HTTP/1.1 200"
            )
        more = Holder(APP, capped, 2, r"GET /v1/token HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            assert [a[0] for a in await more.answers()] == ["-", "-"]
        finally:
            more.close()
        for _, w in held:
            w.close()
    finally:
        holder.close()


async def test_one_uid_holds_at_most_its_event_streams(inproc: InProc, root: None) -> None:
    """Without a cap too: one uid holds at most api.EVENT_STREAMS_PER_UID streams; the next
    gets 429, and another uid (the owner) still gets its own."""
    allow(inproc, APP)
    sock = inproc.socket
    for folder in {sock.parent, Path(os.environ["COACTIVE_CREDD_HOME"])}:
        folder.chmod(0o711)
    sock.chmod(0o666)
    n = api.EVENT_STREAMS_PER_UID
    holder = Holder(APP, sock, n + 2, r"GET /v1/events HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        answers = await holder.answers()
        assert [a[0] for a in answers] == ["200"] * n + ["429", "429"], answers
        async with inproc.session.get("http://localhost/v1/events") as r:
            assert r.status == 200
    finally:
        holder.close()


async def test_only_the_owners_refresh_tries_rejected_credentials_again(
    inproc: InProc, root: None
) -> None:
    """Issue 23: in reauth_required, each POST /v1/token/refresh from an allowed uid tried
    the rejected credential at Coactive again (5 calls, 5 attempts). Only the owner's does."""
    allow(inproc, APP)
    sock = inproc.socket
    for folder in {sock.parent, Path(os.environ["COACTIVE_CREDD_HOME"])}:
        folder.chmod(0o711)
    sock.chmod(0o666)
    rt = inproc.daemon.profiles["default"].rt
    inproc.fake.fault = "401"
    inproc.clock.now = (rt.refresh_at or 0) + 1
    await inproc.settle()
    assert rt.reauth
    attempts = len(inproc.fake.requests)
    for _ in range(5):
        out = await asyncio.to_thread(
            subprocess.run,
            as_uid(
                APP,
                "curl", "-q", "-s", "-X", "POST", "--unix-socket", str(sock),
                "-w", "\n%{http_code}", "http://localhost/v1/token/refresh",
            ),
            capture_output=True,
            text=True,
            timeout=30,
        )  # fmt: skip
        assert out.stdout.rsplit("\n", 1)[1] == "424", out
    assert len(inproc.fake.requests) == attempts and rt.reauth
    status, _ = await inproc.post("/v1/token/refresh")  # the owner's: one try
    assert status == 424 and len(inproc.fake.requests) == attempts + 1
