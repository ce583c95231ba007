"""GET /v1/events: rotations and state changes streamed to followers (Python's iterator and
async iterator, `coactive-credd watch`, `coactive-token --watch`), never a token; heartbeats;
a follower that stops reading cannot grow the daemon's memory."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import coactive_token
import pytest
from coactive_credd.core import engine
from coactive_credd.server import api, events
from coactive_credd.server import process as server
from coactive_credd.testing.fakeupstream import FakeCoactive, FakeCoactiveThread

from .conftest import PERSONAL_TOKEN, Daemon, InProc, login, start_daemon

SHIM = Path(__file__).resolve().parent.parent / "client_shim"
LIFETIME = 24  # served for 12 s, replaced about 10 s in: never lapses on a busy machine


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@pytest.fixture
def short() -> Iterator[FakeCoactive]:
    with FakeCoactiveThread(expires_in=LIFETIME) as f:
        f.add_personal_token(PERSONAL_TOKEN)
        yield f


def follow(argv: list[str], seconds: float) -> tuple[int | None, str]:
    """Run a follower for ``seconds``; its exit code if it ended, and what it printed."""
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as p:
        try:
            out, err = p.communicate(timeout=seconds)
            return p.returncode, out + err
        except subprocess.TimeoutExpired:
            p.terminate()
            out, err = p.communicate()
            return None, out + err


def rotate(d: Daemon, times: int, every: float = 0.7) -> None:
    """Replace the token ``times`` times, as `coactive-credd refresh` does."""
    for _ in range(times):
        time.sleep(every)
        assert d.post("/v1/token/refresh")[0] == 200


def test_followers_see_each_rotation_and_never_a_token(home: Path, short: FakeCoactive) -> None:
    login(short)
    d = start_daemon(home)
    got: list[dict[str, Any]] = []
    argvs = {
        "sh": [str(SHIM / "sh" / "coactive-token"), "--watch"],
        "human": [sys.executable, "-m", "coactive_credd", "watch"],
    }
    procs = {
        name: subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name, argv in argvs.items()
    }
    out: dict[str, list[str]] = {}
    try:
        # every follower has its first event (so it is connected) before the token changes
        for name, p in procs.items():
            assert p.stdout is not None
            out[name] = [p.stdout.readline()]
        stream = coactive_token.watch(socket_path=str(d.socket))
        got.append(next(stream))
        rotate(d, 2, every=0.2)
        while len({e["token_sha256"] for e in got}) < 3:
            got.append(next(stream))
        stream.close()
        for name, p in procs.items():
            assert p.stdout is not None
            while len({ln.split()[-1] for ln in out[name]}) < 3:
                out[name].append(p.stdout.readline())
    finally:
        d.stop()
        for p in procs.values():
            p.kill()
            p.communicate()
    issued = {sha(tok): tok for tok in short.issued}
    first = got[0]
    assert set(first) == {"profile", "state", "expires_at", "token_sha256"}
    assert first["profile"] == "default" and first["state"] in ("valid", "refreshing", "expired")
    rotations = [e["token_sha256"] for e in got if e["token_sha256"]]
    assert all(h in issued for h in rotations) and len(set(rotations)) >= 3
    # a person's view: one line per event, a prefix of the token's SHA-256 only
    assert all(" default " in ln and "token sha256:" in ln for ln in out["human"]), out
    # the sh shim: the JSON data lines
    sh_events = [json.loads(ln) for ln in out["sh"]]
    assert {e["token_sha256"] for e in sh_events} <= set(issued)
    for text in ("".join(out["human"]), "".join(out["sh"]), json.dumps(got)):
        assert not any(tok in text for tok in short.issued), "an event carried a token"


@pytest.mark.heavy  # long: started first, so it does not end the run alone
def test_watch_ends_with_exit_3_when_the_daemon_stops(home: Path, short: FakeCoactive) -> None:
    login(short)
    d = start_daemon(home)
    try:
        with subprocess.Popen(
            [sys.executable, "-m", "coactive_credd", "watch", "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ) as p:
            try:
                assert p.stdout is not None and p.stderr is not None
                first = json.loads(p.stdout.readline())
                assert set(first) == {"profile", "state", "expires_at", "token_sha256"}
                d.stop()
                assert p.wait(40) == 3  # after watch.WATCH_GIVE_UP without a daemon
                assert "serve" in p.stderr.read()
            finally:
                if p.poll() is None:
                    p.kill()
    finally:
        d.stop()
    code, text = follow([str(SHIM / "sh" / "coactive-token"), "--watch"], 10)
    assert code == 3 and "not running" in text


def test_watch_follows_a_daemon_that_restarts(home: Path, short: FakeCoactive) -> None:
    login(short)
    d = start_daemon(home)
    with subprocess.Popen(
        [sys.executable, "-m", "coactive_credd", "watch", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as p:
        try:
            assert p.stdout is not None
            json.loads(p.stdout.readline())
            d.stop()
            d = start_daemon(home)  # a restart, as a service manager does it
            again = json.loads(p.stdout.readline())  # the new daemon's first event
            assert again["profile"] == "default" and p.poll() is None
        finally:
            p.kill()
            d.stop()


@pytest.fixture
async def hub_site(inproc: InProc) -> AsyncIterator[tuple[Path, events.Hub]]:
    """The in-process daemon served again with a Hub whose heartbeat and limits are short."""
    a = api.Api(inproc.daemon)
    inproc.daemon.watchers.remove(a.events.check)
    a.events = events.Hub(inproc.daemon, heartbeat=0.2, queue=4, write_timeout=0.5)
    a._routes["GET", "/v1/events"] = a.events.handle
    runner = await server.make_runner(a)
    path = inproc.socket.with_name("ev.sock")
    await server.start_sites(runner, a, [server.bind_socket(path)])
    yield path, a.events
    a.events.close()
    await runner.cleanup()


async def test_heartbeats_state_changes_and_async_follower(
    inproc: InProc, hub_site: tuple[Path, events.Hub]
) -> None:
    path, _hub = hub_site
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(b"GET /v1/events?profile=default HTTP/1.1\r\nHost: x\r\n\r\n")
    raw = b""
    while raw.count(b": keep-alive") < 2:
        raw += await asyncio.wait_for(reader.read(4096), 5)
    writer.close()
    assert b"text/event-stream" in raw and b"data: " in raw

    seen: list[dict[str, Any]] = []

    async def follower() -> None:
        async for ev in coactive_token.awatch("default", socket_path=str(path)):
            seen.append(ev)
            if ev["state"] == "expired":
                return

    task = asyncio.create_task(follower())
    await asyncio.sleep(0.3)
    old = inproc.daemon.profiles["default"].rt.token.access_token
    status, _ = await inproc.post("/v1/token/refresh")
    assert status == 200
    inproc.fake.fault = "503"
    inproc.clock.jump(3600)  # the new token dies too; Coactive cannot give another
    await inproc.settle()
    await asyncio.wait_for(task, 5)
    hashes = [e["token_sha256"] for e in seen]
    assert hashes[0] == sha(old) and sha(inproc.fake.issued[-1]) in hashes
    assert seen[-1]["state"] == "expired"


async def test_a_follower_that_never_reads_is_bounded_then_dropped(
    inproc: InProc, hub_site: tuple[Path, events.Hub]
) -> None:
    path, hub = hub_site
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(b"GET /v1/events HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.wait_for(reader.readuntil(b"data: "), 5)
    p = inproc.daemon.profiles["default"]
    now = inproc.clock()
    for i in range(10000):  # ~1.5 MB of events: more than the socket buffers hold
        p.rt.token = engine.Token(f"token-{i}", "Bearer", now, now + 3600)
        inproc.daemon.changed()
        assert all(f.queue.qsize() <= 4 for f in hub.followers)
        await asyncio.sleep(0)
    deadline = time.monotonic() + 5
    while hub.followers and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert not hub.followers, "a follower that stopped reading was kept"
    writer.close()


@pytest.fixture(scope="module")
def go_watch_cli(tmp_path_factory: pytest.TempPathFactory) -> Path:
    go = shutil.which("go")
    assert go, "go is not installed: run .ci/setup"
    out = tmp_path_factory.mktemp("go") / "coactive-token"
    subprocess.run(
        [go, "build", "-o", str(out), "./cmd/coactive-token"],
        cwd=SHIM / "go",
        check=True,
        timeout=300,
    )
    return out


@pytest.mark.parametrize("shim", ["go", "node"])
def test_go_and_node_followers(
    home: Path, short: FakeCoactive, shim: str, request: pytest.FixtureRequest
) -> None:
    if shim == "go":
        argv = [str(request.getfixturevalue("go_watch_cli")), "--watch"]
    else:
        node = shutil.which("node")
        assert node, "node is not installed: run .ci/setup"
        argv = [node, str(SHIM / "node" / "bin" / "coactive-token.js"), "--watch"]
    login(short)
    d = start_daemon(home)
    try:
        with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as p:
            assert p.stdout is not None and p.stderr is not None
            seen: list[dict[str, Any]] = [json.loads(p.stdout.readline())]
            rotator = threading.Thread(target=rotate, args=(d, 2), daemon=True)
            rotator.start()
            while len({e["token_sha256"] for e in seen}) < 3:
                seen.append(json.loads(p.stdout.readline()))
            rotator.join(20)
            d.stop()
            rest = p.stdout.read()
            assert p.wait(10) == 3 and "serve" in p.stderr.read()
    finally:
        d.stop()
    issued = {sha(t) for t in short.issued}
    assert set(seen[0]) == {"profile", "state", "expires_at", "token_sha256"}
    assert {e["token_sha256"] for e in seen} <= issued
    assert not any(t in json.dumps(seen) + rest for t in short.issued)


async def _first_event(path: Path) -> tuple[int, dict[str, Any]]:
    """Connect, read the first event (its id and data), disconnect."""
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(b"GET /v1/events?profile=default HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 5\r\n\r\n")
    raw = b""
    while b"\n\n" not in raw.partition(b"data: ")[2]:
        raw += await asyncio.wait_for(reader.read(4096), 5)
    writer.close()
    frame = raw.partition(b"id: ")[2].split(b"\n\n")[0].decode()
    head, _, data = frame.partition("\ndata: ")
    return int(head), json.loads(data)


async def test_event_ids_are_never_reused_for_other_content(
    inproc: InProc, hub_site: tuple[Path, events.Hub]
) -> None:
    """Two rotations nobody watched: a follower that comes back gets the new content under
    a new id, never under the id it saw the old content with."""
    path, hub = hub_site
    first_id, first = await _first_event(path)
    deadline = asyncio.get_running_loop().time() + 5
    while hub.followers:  # the next keep-alive finds the follower gone
        assert asyncio.get_running_loop().time() < deadline, "the follower was never dropped"
        await asyncio.sleep(0.05)
    for _ in range(2):
        assert (await inproc.post("/v1/token/refresh"))[0] == 200
    await inproc.settle()
    again_id, again = await _first_event(path)
    assert again["token_sha256"] != first["token_sha256"]
    assert again_id > first_id
    same_id, same = await _first_event(path)  # nothing changed: the same id, the same content
    assert (same_id, same) == (again_id, again)
