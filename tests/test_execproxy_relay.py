"""``exec --proxy``'s listener at the edges of HTTP/1.1 (RFC 9112): keep-alive, chunked and
``Expect: 100-continue`` bodies, ``HEAD``, HTTP/1.0, pipelined requests, oversized and
malformed heads, and a caller that stops reading a large answer.

Each test runs one real ``coactive-credd exec --proxy`` whose command is a Python script
speaking raw HTTP (or curl) to ``$COACTIVE_BASE_URL``, against a real daemon and the fake
Coactive; the script prints what it saw as JSON.
"""

from __future__ import annotations

import json
import sys
import textwrap
from typing import Any

import pytest
from coactive_credd.testing.fakeupstream import FakeCoactive

from .conftest import Daemon, run_cli

# The child's helpers: `talk(data)` sends raw bytes on one connection and returns all it
# reads until the listener closes (or `idle` seconds pass with nothing), HOST and AUTH are the
# header lines for this listener and its placeholder, `read_response(s)` reads one answer,
# `statuses(text)` lists the status codes in it, `hwm()` is the exec process's peak memory.
PRELUDE = textwrap.dedent(
    """
    import json, os, re, socket, subprocess, sys, time
    URL, PH = os.environ["COACTIVE_BASE_URL"], os.environ["COACTIVE_ACCESS_TOKEN"]
    PORT = int(URL.rsplit(":", 1)[1])
    AUTH = f"Authorization: Bearer {PH}\\r\\n"
    HOST = f"Host: 127.0.0.1:{PORT}\\r\\n"
    def connect():
        s = socket.create_connection(("127.0.0.1", PORT))
        s.settimeout(10)
        return s
    def read_all(s, idle=10.0):
        s.settimeout(idle)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except socket.timeout:
            out += b"<idle>"
        except ConnectionResetError:
            out += b"<reset>"
        return out
    def talk(data, idle=10.0):
        s = connect()
        s.sendall(data)
        out = read_all(s, idle)
        s.close()
        return out.decode("latin-1")
    def hwm():  # the exec process's peak memory, KiB
        for line in open(f"/proc/{os.getppid()}/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    def statuses(text):
        return [int(code) for code in re.findall(r"HTTP/1\\.[01] (\\d{3}) ", text)]
    def read_response(s, head_only=False):
        out = b""
        while b"\\r\\n\\r\\n" not in out:
            out += s.recv(65536)
        head, _, body = out.partition(b"\\r\\n\\r\\n")
        length = 0 if head_only else int(re.search(rb"Content-Length: (\\d+)", head).group(1))
        while len(body) < length:
            body += s.recv(65536)
        return (head + b"\\r\\n\\r\\n" + body).decode("latin-1")
    """
)


def run_child(daemon: Daemon, script: str, timeout: float = 90) -> Any:
    proc = run_cli(
        "exec",
        "--proxy",
        "--",
        sys.executable,
        "-c",
        PRELUDE + textwrap.dedent(script),
        env={"COACTIVE_CREDD_SOCKET": str(daemon.socket)},
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_keep_alive_chunked_head_and_http10_requests_all_arrive_whole(
    daemon: Daemon, fake: FakeCoactive
) -> None:
    out = run_child(
        daemon,
        """
        s = connect()
        got = {}
        # one connection: a GET, a chunked POST, a HEAD of a 5000-byte stream, then a GET
        s.sendall(("GET /api/v1/echo?n=1 HTTP/1.1\\r\\n" + HOST + AUTH + "\\r\\n").encode())
        got["first"] = read_response(s)
        s.sendall(("POST /api/v1/echo HTTP/1.1\\r\\n" + HOST + AUTH +
                   "Transfer-Encoding: chunked\\r\\n\\r\\n3\\r\\nabc\\r\\n4\\r\\ndefg\\r\\n0\\r\\n\\r\\n").encode())
        got["chunked"] = read_response(s)
        s.sendall(("HEAD /api/v1/stream?bytes=5000 HTTP/1.1\\r\\n" + HOST + AUTH + "\\r\\n").encode())
        got["head"] = read_response(s, head_only=True)
        s.sendall(("GET /api/v1/echo?n=2 HTTP/1.1\\r\\n" + HOST + AUTH + "\\r\\n").encode())
        got["after_head"] = read_response(s)
        s.close()
        got["http10"] = talk(("GET /api/v1/echo?n=3 HTTP/1.0\\r\\n" + HOST + AUTH + "\\r\\n").encode())
        print(json.dumps(got))
        """,
    )
    first = out["first"]
    assert first.startswith("HTTP/1.1 200 ") and '"query": "n=1"' in first
    chunked = out["chunked"]
    assert chunked.startswith("HTTP/1.1 200 ") and '"body": "abcdefg"' in chunked
    head = out["head"]
    assert head.startswith("HTTP/1.1 200 ") and "Content-Length: 5000" in head
    assert head.endswith("\r\n\r\n")  # the head alone, and the connection still in step:
    assert out["after_head"].startswith("HTTP/1.1 200 ") and '"query": "n=2"' in out["after_head"]
    http10 = out["http10"]
    assert http10.startswith("HTTP/1.") and '"query": "n=3"' in http10
    assert not http10.endswith(("<idle>", "<reset>"))  # closed cleanly after the answer
    echo, stream = "/api/v1/echo", "/api/v1/stream"
    assert [r.path.split("?")[0] for r in fake.api_requests] == [echo, echo, stream, echo, echo]
    tokens = {r.headers.get("Authorization") for r in fake.api_requests}
    assert tokens == {f"Bearer {fake.issued[-1]}"}


def test_a_refused_request_pipelined_after_a_good_one_keeps_its_place(
    daemon: Daemon, fake: FakeCoactive
) -> None:
    out = run_child(
        daemon,
        """
        good = "GET /api/v1/stream?bytes=200000 HTTP/1.1\\r\\n" + HOST + AUTH + "\\r\\n"
        bad = "GET /api/v1/echo HTTP/1.1\\r\\n" + HOST + "Authorization: Bearer nope\\r\\n\\r\\n"
        text = talk((good + bad + good).encode())
        print(json.dumps({"statuses": statuses(text), "size": len(text),
                          "ends": text[-200:]}))
        """,
    )
    # the whole 200 kB answer, then the 401, then the connection ends: the third request,
    # after the refusal, is never read
    assert out["statuses"] == [200, 401], out
    assert out["size"] > 200_000
    assert '"unauthorized"' in out["ends"] and not out["ends"].endswith(("<idle>", "<reset>"))
    assert len(fake.api_requests) == 1


def test_oversized_malformed_and_upgrade_requests_get_one_answer_and_go_nowhere(
    daemon: Daemon, fake: FakeCoactive
) -> None:
    out = run_child(
        daemon,
        """
        big = "GET /api/v1/echo HTTP/1.1\\r\\n" + HOST + AUTH + ("X-Pad: " + "a" * 8000 + "\\r\\n") * 10 + "\\r\\n"
        got = {
            "big": talk(big.encode()),
            "garbage": talk(b"\\x16\\x03\\x01 not http at all\\r\\n\\r\\n"),
            "smuggle": talk(("POST /api/v1/echo HTTP/1.1\\r\\n" + HOST + AUTH +
                             "Content-Length: 3\\r\\nTransfer-Encoding: chunked\\r\\n\\r\\n0\\r\\n\\r\\n").encode()),
            "upgrade": talk(("GET /api/v1/echo HTTP/1.1\\r\\n" + HOST + AUTH +
                             "Connection: Upgrade\\r\\nUpgrade: websocket\\r\\n\\r\\n").encode()),
            "silent_idle": talk(b"GET /api/v1/echo HTTP/1.1\\r\\n", idle=1.0),
        }
        # one header that never ends, 8 MiB of it in 64 KiB writes: llhttp holds a field
        # until its end, so the listener must count the bytes itself
        before = hwm()
        s = connect()
        try:
            s.sendall(("GET /api/v1/echo HTTP/1.1\\r\\n" + HOST + "X-Long: ").encode())
            for _ in range(128):
                s.sendall(b"a" * 65536)
        except (BrokenPipeError, ConnectionResetError):
            pass
        got["endless"] = read_all(s, idle=5).decode("latin-1")
        endless_growth = hwm() - before
        out = {k: [statuses(v), v[-120:]] for k, v in got.items()}
        out["endless_growth_kib"] = endless_growth
        print(json.dumps(out))
        """,
    )
    assert out["big"][0] == [431]
    assert out["garbage"][0] == [400]
    assert out["smuggle"][0] == [400]  # Content-Length with chunked: refused, never guessed
    assert out["upgrade"][0] == [400] and "upgrades are not forwarded" in out["upgrade"][1]
    assert out["silent_idle"][0] == []  # half a head: nothing answered yet, nothing sent on
    # refused at 64 KiB (431, or a reset when the listener closes on bytes still unread),
    # not read to the end, and not held
    endless = out["endless"][1]
    assert out["endless"][0] == [431] or endless.endswith("<reset>"), out["endless"]
    assert not endless.endswith("<idle>")
    assert out["endless_growth_kib"] < 4 * 1024, out
    for name in ("big", "garbage", "smuggle", "upgrade"):
        assert out[name][1].endswith("}"), (name, out[name])  # the error body, then closed
    assert fake.api_requests == []


def test_expect_100_continue_and_a_caller_that_stops_reading_a_large_answer(
    daemon: Daemon, fake: FakeCoactive
) -> None:
    out = run_child(
        daemon,
        """
        # curl sends Expect: 100-continue with a body over 1 MiB and waits for the 100
        body = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"body-{os.getpid()}")
        with open(body, "wb") as f:
            f.write(b"x" * (3 * 1024 * 1024))
        p = subprocess.run(["curl", "-q", "-s", "-H", f"Authorization: Bearer {PH}",
                            "--data-binary", "@" + body, URL + "/api/v1/echo"],
                           capture_output=True, text=True, timeout=60)
        os.unlink(body)
        echoed = json.loads(p.stdout)
        # a caller asks for 200 MiB and reads none of it for 2 s: the listener must not
        # hold the answer for it
        before = hwm()
        s = connect()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.sendall(("GET /api/v1/stream?bytes=209715200 HTTP/1.1\\r\\n" + HOST + AUTH + "\\r\\n").encode())
        time.sleep(2)
        stalled = hwm()
        s.close()
        # and the listener still serves another caller at once
        again = talk(("GET /api/v1/echo HTTP/1.1\\r\\n" + HOST + AUTH + "Connection: close\\r\\n\\r\\n").encode())
        print(json.dumps({"echoed": echoed["body_bytes"], "expect": [h for h in echoed["headers"] if h[0].lower() == "expect"],
                          "growth_kib": stalled - before, "again": statuses(again)}))
        """,
    )
    assert out["echoed"] == 3 * 1024 * 1024
    assert out["expect"] == []  # answered by the daemon, not sent on to Coactive
    assert out["growth_kib"] < 16 * 1024, out  # bounded: far below the 200 MiB asked for
    assert out["again"] == [200]


def test_a_connection_header_cannot_unframe_a_body_into_a_second_request(
    daemon: Daemon, fake: FakeCoactive
) -> None:
    """A body the daemon would read as a request of its own, had the listener dropped the
    Content-Length a Connection header names: /v1/token, the admin routes, or /api/ unmasked."""
    out = run_child(
        daemon,
        """
        got = {}
        for name, inner in (
            ("token", "GET /v1/token HTTP/1.1\\r\\nHost: localhost\\r\\n\\r\\n"),
            ("reload", "POST /v1/admin/reload HTTP/1.1\\r\\nHost: localhost\\r\\nContent-Length: 0\\r\\n\\r\\n"),
            ("unmasked", "GET /api/v1/echo HTTP/1.1\\r\\nHost: localhost\\r\\n\\r\\n"),
        ):
            for connection in ("Content-Length", "keep-alive, content-length", "Transfer-Encoding"):
                req = ("POST /api/v1/echo HTTP/1.1\\r\\n" + HOST + AUTH + f"Connection: {connection}\\r\\n"
                       f"Content-Length: {len(inner)}\\r\\n\\r\\n" + inner)
                got[f"{name} / {connection}"] = talk(req.encode(), idle=3)
        http10 = ("POST /api/v1/echo HTTP/1.0\\r\\n" + HOST + AUTH + "Connection: keep-alive, content-length\\r\\n"
                  "Content-Length: 43\\r\\n\\r\\nGET /v1/token HTTP/1.1\\r\\nHost: localhost\\r\\n\\r\\n")
        got["http10"] = talk(http10.encode(), idle=3)
        print(json.dumps({k: [statuses(v), v] for k, v in got.items()}))
        """,
    )
    for name, (codes, text) in out.items():
        assert codes == [400], (name, codes, text[-300:])
        assert "Connection header may not name" in text, name
        assert not any(t in text for t in fake.issued), name
    assert fake.api_requests == []


def test_trailers_versions_and_http10_answers_of_unknown_length(
    daemon: Daemon, fake: FakeCoactive
) -> None:
    out = run_child(
        daemon,
        """
        before = hwm()
        s = connect()
        try:
            s.sendall(("POST /api/v1/echo HTTP/1.1\\r\\n" + HOST + AUTH +
                       "Transfer-Encoding: chunked\\r\\n\\r\\n5\\r\\nhello\\r\\n0\\r\\nX-Trailer: ").encode())
            for _ in range(128):
                s.sendall(b"a" * 65536)
        except OSError:
            pass
        trailer = read_all(s, idle=5).decode("latin-1")
        got = {"trailer_growth_kib": hwm() - before, "trailer_idle": trailer.endswith("<idle>")}
        got["http2"] = statuses(talk(("GET /api/v1/echo HTTP/2.0\\r\\n" + HOST + AUTH + "\\r\\n").encode()))
        # an answer of unknown length to HTTP/1.0 ends with the connection, keep-alive or not
        text = talk(("GET /api/v1/stream?bytes=1000&chunked=1 HTTP/1.0\\r\\n" + HOST + AUTH +
                     "Connection: keep-alive\\r\\n\\r\\n").encode(), idle=5)
        got["http10_unknown_length"] = [statuses(text), text.endswith("<idle>"), len(text)]
        print(json.dumps(got))
        """,
    )
    assert out["trailer_growth_kib"] < 4 * 1024, out
    assert not out["trailer_idle"], out  # cut, not held
    assert out["http2"] == [505]
    codes, idle, size = out["http10_unknown_length"]
    assert codes == [200] and not idle and size > 1000, out


@pytest.mark.heavy  # long: started first, so it does not end the run alone
def test_a_head_that_trickles_in_is_refused_after_30_s(daemon: Daemon) -> None:
    out = run_child(
        daemon,
        """
        s = connect()
        start = time.monotonic()
        for b in b"GET /api/v1/echo HTTP/1.1\\r\\nX-Slow: abcdefghijklmnopqrstuvwxyz0123456789":
            try:
                s.sendall(bytes([b]))
            except OSError:  # refused and closed: what was answered is still to be read
                break
            time.sleep(0.5)
        text = read_all(s, idle=15).decode("latin-1")
        print(json.dumps({"statuses": statuses(text), "after_s": time.monotonic() - start}))
        """,
        timeout=120,
    )
    assert out["statuses"] == [408], out
    assert out["after_s"] < 45, out


def test_an_answer_the_daemon_cannot_read_for_the_token_does_not_pass(
    daemon: Daemon, fake: FakeCoactive
) -> None:
    """The token is masked in the bytes of the answer; a compressed answer (which repeats the
    bearer here) would carry it past the mask."""
    out = run_child(
        daemon,
        """
        echo = talk(("GET /api/v1/echo HTTP/1.1\\r\\n" + HOST + AUTH + "Accept-Encoding: gzip\\r\\nConnection: close\\r\\n\\r\\n").encode())
        gz = talk(("GET /api/v1/gzip HTTP/1.1\\r\\n" + HOST + AUTH + "Accept-Encoding: gzip\\r\\nConnection: close\\r\\n\\r\\n").encode())
        print(json.dumps({"echo": echo, "gzip": [statuses(gz), gz[-300:]]}))
        """,
    )
    assert 'Accept-Encoding", "identity"' in out["echo"]
    codes, text = out["gzip"]
    assert codes == [502] and "cannot be checked for the token" in text, out["gzip"]


def test_large_posts_coactive_answers_before_reading_keep_the_connection(
    daemon: Daemon, fake: FakeCoactive
) -> None:
    """Forty 3 MiB POSTs on one httpx connection to a route that answers without reading
    the body. A new user's loop lost 2 of 40: the daemon still had a task reading the
    body when its handler returned, aiohttp logged a traceback and closed the connection."""
    out = run_child(
        daemon,
        """
        import httpx
        big = b"x" * (3 * 1024 * 1024)
        c = httpx.Client(base_url=URL, headers={"Authorization": "Bearer " + PH}, timeout=20)
        fails = []
        for i in range(40):
            try:
                c.post("/api/v1/datasets", content=big).raise_for_status()
            except Exception as e:
                fails.append([i, type(e).__name__, str(e)])
        print(json.dumps({"fails": fails}))
        """,
        timeout=120,
    )
    assert out["fails"] == []
    log = daemon.log_text()
    assert "Traceback" not in log and "Unhandled exception" not in log, log[-2000:]
