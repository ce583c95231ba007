"""Odd requests against the real daemon: both ways of answering (the fast path in front and
aiohttp behind it) give the same answer, malformed ones a 400 at once, in one log line each."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from coactive_credd.core import request
from coactive_credd.testing.fakeupstream import FakeCoactive

from .conftest import Daemon, login, start_daemon

GET = b"GET /v1/token HTTP/1.1\r\nHost: x\r\n\r\n"


def exchange(
    sock: Path, data: bytes, answers: int = 1, *, timeout: float = 5.0
) -> tuple[list[int], bytes, bool]:
    """Send ``data`` on one connection and read until ``answers`` whole answers came, the
    daemon closed the connection or ``timeout`` passed; returns the status codes in order,
    the raw bytes and whether the daemon closed."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(str(sock))
    s.sendall(data)
    raw, closed = b"", False
    try:
        while len(statuses(raw)) < answers:
            chunk = s.recv(65536)
            if not chunk:
                closed = True
                break
            raw += chunk
    except TimeoutError:
        pass
    finally:
        s.close()
    return statuses(raw), raw, closed


def statuses(raw: bytes) -> list[int]:
    out, pos = [], 0
    while (start := raw.find(b"HTTP/1.", pos)) >= 0:
        end = raw.find(b"\r\n\r\n", start)
        if end < 0:
            break
        head = raw[start:end].split(b"\r\n")
        length = next(
            (int(h.split(b":")[1]) for h in head[1:] if h.lower().startswith(b"content-length:")),
            0,
        )
        if end + 4 + length > len(raw):
            break  # not whole yet
        out.append(int(head[0].split()[1]))
        pos = end + 4 + length
    return out


@pytest.fixture
def both(home: Path, fake: FakeCoactive) -> Iterator[tuple[Daemon, Daemon]]:
    """The daemon as shipped, and a second one on its own socket with the fast path off."""
    login(fake)
    shipped = start_daemon(home)
    slow = start_daemon(
        home,
        "--socket",
        str(home / "slow.sock"),
        env={"COACTIVE_CREDD_FAST_PATH": "0"},
        wait=False,
    )
    slow.socket = home / "slow.sock"
    from .conftest import wait_ready

    wait_ready(slow)
    yield shipped, slow
    for d in (shipped, slow):
        d.stop()
        text = d.log_text()
        assert "Traceback" not in text and "Fatal error" not in text, text
        assert "Task exception was never retrieved" not in text, text


ODD = [
    # (request, the status both must answer)
    (b"GET /v1/token HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400),
    (b"GET /v1/token HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n", 400),
    (b"GET /v1/token?profile=def\x01ault HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"GET /v1/token?min_ttl=1\x7f HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"GET /v1/token?min_ttl=%C2%B2 HTTP/1.1\r\nHost: x\r\n\r\n", 400),  # superscript two
    (b"GET /v1/token?min_ttl=%D9%A3 HTTP/1.1\r\nHost: x\r\n\r\n", 400),  # Arabic-Indic three
    (b"GET /v1/token?min_ttl=\xd9\xa3 HTTP/1.1\r\nHost: x\r\n\r\n", 400),  # the same, raw
    (b"GET /v1/token?min_ttl=%EF%BC%91 HTTP/1.1\r\nHost: x\r\n\r\n", 400),  # fullwidth one
    (b"GET /v1/token?min_ttl=+1 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"GET /v1/token?min_ttl=86401 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"GET /v1/token?min_ttl=99999999999999999999 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"GET /v1/token HTTP/1.1\nHost: x\n\n", 400),  # bare LF line ends
    (b"GET /v1/token HTTP/1.1\r\nHost: x\n\r\n", 400),
    (b"GET /v1/token HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", 400),
    (b"GET /v1/token?min_ttl=60 HTTP/1.1\r\nHost: x\r\n\r\n", 200),
    (b"GET /v1/token?min_ttl=060&min_ttl=x HTTP/1.1\r\nHost: x\r\n\r\n", 200),  # first wins
    (b"GET /v1/token HTTP/1.1\r\nhost: x\r\nConnection: close\r\n\r\n", 200),
]


def test_both_paths_answer_odd_requests_alike_at_once(both: tuple[Daemon, Daemon]) -> None:
    shipped, slow = both
    for data, status in ODD:
        answers = []
        for d in (shipped, slow):
            start = time.monotonic()
            got, raw, _closed = exchange(d.socket, data)
            assert time.monotonic() - start < 3, f"{data!r} was held unanswered"
            assert got[:1] == [status], f"{data!r}: {raw[:300]!r}"
            body = raw.partition(b"\r\n\r\n")[2]
            answers.append(
                json.loads(body)["error"]["code"] if status == 400 and body[:1] == b"{" else None
            )
        assert answers[0] == answers[1], data


def test_bare_lf_is_refused_at_once_not_after_the_idle_timeout(daemon: Daemon) -> None:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(str(daemon.socket))
    s.sendall(b"GET /v1/token HTTP/1.1\nHost: x\n\n")  # and the connection stays open
    start = time.monotonic()
    first = s.recv(4096)
    s.close()
    assert first.startswith(b"HTTP/1.") and b" 400 " in first.split(b"\r\n")[0]
    assert time.monotonic() - start < 2


def test_min_ttl_takes_ascii_digits_only_on_both_paths() -> None:
    assert request.parse_min_ttl(None) == 0
    assert request.parse_min_ttl("0") == 0 and request.parse_min_ttl("86400") == 86400
    for bad in ("", "²", "٣", "\uff11", "-1", "+1", " 1", "1 ", "1.0", "86401", "1e3", "9" * 30):
        with pytest.raises(request.BadQuery):
            request.parse_min_ttl(bad)


def test_connection_close_then_a_pipelined_request(both: tuple[Daemon, Daemon]) -> None:
    data = (
        b"GET /v1/token HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        + GET
        + b"POST /v1/token/refresh HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
    )
    results = [exchange(d.socket, data, 3) for d in both]
    assert results[0][0] == results[1][0] and len(results[0][0]) == 1
    assert all(closed for _, _, closed in results)
    # in two writes, the first answered before the second arrives: one 200, then closed
    for d in both:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        s.connect(str(d.socket))
        s.sendall(b"GET /v1/token HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        time.sleep(0.05)
        with contextlib.suppress(OSError):  # the daemon may have closed already
            s.sendall(GET)
        raw = b""
        while chunk := s.recv(65536):
            raw += chunk
        s.close()
        assert statuses(raw) == [200]


def test_reading_resumes_after_an_unread_burst_is_handed_over(daemon: Daemon) -> None:
    """A caller sends thousands of requests in one write, the last one for aiohttp, and reads
    the answers only afterwards: every answer arrives, and so does the answer to a request
    sent after that on the same connection."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(str(daemon.socket))
    n = 3000  # ~100 KiB of requests, one read for the daemon; ~700 KiB of answers
    status = b"GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n"
    s.sendall(GET * n + status)
    time.sleep(0.5)  # the answers pile up unread: the daemon stops reading
    raw = b""
    while len(statuses(raw)) < n + 1:
        raw += s.recv(1 << 20)
    assert set(statuses(raw)) == {200} and b'"profiles"' in raw[-2000:]
    s.sendall(status)  # and later, on the same connection
    raw = b""
    try:
        while not statuses(raw):
            raw += s.recv(65536)
    except TimeoutError:
        pass
    s.close()
    assert statuses(raw) == [200], "the connection stopped reading"


def test_malformed_requests_log_one_line_rate_limited(daemon: Daemon) -> None:
    for _ in range(40):
        got, _, _ = exchange(daemon.socket, b"GET /v1/token HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n")
        assert got == [400]
    daemon.stop()
    text = daemon.log_text()
    lines = [ln for ln in text.splitlines() if "malformed request" in ln]
    assert 1 <= len(lines) <= 2, text
    assert "Traceback" not in text and "Host: y" not in text
