"""Floods against the real daemon process: connections past the open-files limit, and
clients that send bursts of requests and never read. The daemon keeps serving others within
milliseconds, its memory stays bounded and its log says so in a line or two."""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

from coactive_credd.testing.fakeupstream import FakeCoactive

from .conftest import Daemon, login, wait_ready

GET = b"GET /v1/token HTTP/1.1\r\nHost: x\r\n\r\n"


def serve_with_nofile(home: Path, limit: int) -> Daemon:
    """`coactive-credd serve` with its open-files limit (soft and hard) set to ``limit``."""
    logf = home / f"daemon-{time.monotonic_ns()}.log"

    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    with open(logf, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "coactive_credd", "serve"],
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=lower,  # only setrlimit, before exec
        )
    d = Daemon(socket=home / "credd.sock", log=logf, proc=proc, home=home)
    wait_ready(d)
    return d


def token_latency(sock: Path) -> float:
    start = time.monotonic()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(str(sock))
    s.sendall(GET)
    head = s.recv(65536)
    s.close()
    assert head.startswith(b"HTTP/1.1 200"), head[:100]
    return time.monotonic() - start


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def settle(pid: int, timeout: float = 60) -> float:
    """Seconds until the daemon uses under 5 % of a CPU over half a second."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        before = cpu_seconds(pid)
        time.sleep(0.5)
        if cpu_seconds(pid) - before < 0.025:
            break
    return time.monotonic() - start


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_connections_past_the_fd_limit_lock_no_one_out_and_cost_one_log_line(
    home: Path, fake: FakeCoactive
) -> None:
    """300 connections opened and left open against an open-files limit of 96: the cap
    (the limit minus 64) closes the idlest for each new one, so a token is still served
    while they are held, with one log line and no traceback."""
    login(fake)
    d = serve_with_nofile(home, 96)
    held = []
    try:
        for _ in range(300):  # far more than 96 descriptors
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(str(d.socket))
            held.append(s)
        time.sleep(1.0)
        assert token_latency(d.socket) < 1.0  # while they are all still held
    finally:
        for s in held:
            s.close()
        d.stop()
    text = d.log_text()
    assert "Traceback" not in text, text[:3000]
    assert len(text) < 4000, text[:3000]
    assert 1 <= text.count("closing an idle one for each new one") <= 2, text


def test_clients_that_never_read_cost_bounded_memory_and_delay_no_one(
    home: Path, fake: FakeCoactive
) -> None:
    login(fake)
    d = serve_with_nofile(home, 4096)
    burst = GET * (128 * 1024 // len(GET))  # 128 KiB of requests: ~3600 answers, ~900 KiB
    hostile = []
    try:
        assert token_latency(d.socket) < 1.0
        before = rss_kib(d.proc.pid)
        for _ in range(300):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.setblocking(False)
            s.connect(str(d.socket))
            with contextlib.suppress(BlockingIOError):  # the daemon stopped reading
                s.send(burst)
            hostile.append(s)
        absorbed = settle(d.proc.pid)
        worst = max(token_latency(d.socket) for _ in range(20))
        grown = rss_kib(d.proc.pid) - before
    finally:
        for s in hostile:
            s.close()
        d.stop()
    print(
        f"\nflood: absorbed in {absorbed:.1f} s, RSS +{grown // 1024} MiB, worst {worst * 1000:.1f} ms"
    )
    # what each of them sent is read and answered up to a small buffer, then left unread
    assert absorbed < 20, f"the daemon worked on the flood for {absorbed:.1f} s"
    assert worst < 0.25, f"a well-behaved client waited {worst:.3f} s"
    # 300 x ~900 KiB of answers would be ~270 MiB; a 16 KiB write buffer each bounds it
    assert grown < 120 * 1024, f"the daemon grew by {grown // 1024} MiB"
    assert "Traceback" not in d.log_text()
