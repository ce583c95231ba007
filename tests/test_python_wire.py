"""The Python client's hand-written HTTP/1.1 over the socket, against scripted answers."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import coactive_token
import pytest

TOKEN = b'{"profile":"default","access_token":"tok","token_type":"Bearer","expires_at":"2030-01-01T00:00:00Z","expires_in":60}'


def head(status: str, *lines: str) -> bytes:
    return ("\r\n".join([f"HTTP/1.1 {status}", *lines]) + "\r\n\r\n").encode()


class Scripted:
    """A Unix-socket server that answers each accepted connection's requests from a script."""

    def __init__(self, path: Path, answers: list[list[bytes]]) -> None:
        self.path, self.answers, self.requests, self.connections = path, answers, [], 0
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(str(path))
        self.srv.listen(8)
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        for script in self.answers:
            conn, _ = self.srv.accept()
            self.connections += 1
            with conn:
                for answer in script:
                    data = b""
                    while b"\r\n\r\n" not in data:
                        chunk = conn.recv(4096)
                        if not chunk:
                            return
                        data += chunk
                    self.requests.append(data.split(b"\r\n", 1)[0].decode())
                    conn.sendall(answer)

    def close(self) -> None:
        self.srv.close()


@pytest.fixture
def sock(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "s"


def ok(body: bytes = TOKEN, *extra: str) -> bytes:
    return (
        head("200 OK", "Content-Type: application/json", f"Content-Length: {len(body)}", *extra)
        + body
    )


def test_keep_alive_carries_several_requests_on_one_connection(sock: Path) -> None:
    server = Scripted(sock, [[ok(), ok(), ok()]])
    with coactive_token.Client(str(sock), autostart=False) as c:
        assert [c.token().access_token for _ in range(3)] == ["tok"] * 3
    assert server.connections == 1 and len(server.requests) == 3
    server.close()


def test_chunked_and_close_delimited_answers(sock: Path) -> None:
    chunked = (
        head("200 OK", "Transfer-Encoding: chunked")
        + b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (TOKEN[:10], TOKEN[10:]))
        + b"0\r\n\r\n"
    )
    delimited = head("200 OK", "Connection: close") + TOKEN
    server = Scripted(sock, [[chunked, delimited], [ok()]])
    with coactive_token.Client(str(sock), autostart=False) as c:
        assert c.token().access_token == "tok"  # chunked, connection kept
        assert c.token().access_token == "tok"  # read to the end, connection dropped
        assert c.token().access_token == "tok"  # so a new one is opened
    assert server.connections == 2
    server.close()


def test_an_idle_connection_the_daemon_closed_is_replaced_once(sock: Path) -> None:
    server = Scripted(sock, [[ok()], [ok()]])  # the first connection ends after one answer
    with coactive_token.Client(str(sock), autostart=False) as c:
        assert c.token().access_token == "tok"
        assert c.token().access_token == "tok"
    assert server.connections == 2
    server.close()


@pytest.mark.parametrize(
    "answer",
    [
        b"garbage\r\n\r\n",
        head("200 OK", "Content-Length: 999") + b"short",
        head("200 OK", "Content-Length: x"),
    ],
)
def test_a_malformed_answer_is_daemon_unreachable(sock: Path, answer: bytes) -> None:
    server = Scripted(sock, [[answer]])
    with (
        coactive_token.Client(str(sock), autostart=False) as c,
        pytest.raises(coactive_token.DaemonUnreachable),
    ):
        c.token()
    server.close()


def test_error_answers_keep_their_code(sock: Path) -> None:
    body = b'{"error":{"code":"unknown_profile","message":"no profile named \'x\'","hint":"run login"}}'
    server = Scripted(
        sock,
        [
            [
                head(
                    "404 Not Found",
                    "Content-Type: application/json",
                    f"Content-Length: {len(body)}",
                )
                + body
            ]
        ],
    )
    with (
        coactive_token.Client(str(sock), autostart=False) as c,
        pytest.raises(coactive_token.UnknownProfile) as info,
    ):
        c.token("x")
    assert info.value.exit_code == 4 and server.requests == ["GET /v1/token?profile=x HTTP/1.1"]
    server.close()
