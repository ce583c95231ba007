"""The ceiling for a Python server on this machine: asyncio, a Unix socket, a canned answer.

It parses nothing beyond finding the end of each request's headers and answers every request
with the same pre-rendered HTTP/1.1 response, keeping the connection open unless the client
asked for ``Connection: close``. Whatever coactive-credd does per request costs on top of this.

    python bench/ceiling_server.py --socket PATH [--api streams|protocol|parser|aiohttp] [--uvloop]
                                   [--max-seconds S]

Prints ``ready`` on stdout once listening; stops by itself after ``--max-seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from typing import Any, cast

BODY = json.dumps(
    {
        "profile": "default",
        "access_token": "tok-0123456789abcdef0123456789abcdef",
        "token_type": "Bearer",
        "expires_at": "2030-01-01T00:00:00Z",
        "expires_in": 3000,
    }
).encode()
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\n"
    b"Content-Length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY
)


class CannedHTTP(asyncio.Protocol):
    """Answers each complete request head with ``RESPONSE``."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no asyncio.Transport

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head, self.buf = self.buf[:end], self.buf[end + 4 :]
            self.transport.write(RESPONSE)
            if b"connection: close" in head.lower():
                self.transport.close()
                return


class ParsedHTTP(asyncio.Protocol):
    """aiohttp's C request parser (llhttp) under a bare Protocol, writing pre-rendered bytes.

    What a server could cost that keeps aiohttp's well-tested parser but skips its
    Request/Response objects: it reads the query and the Accept header of every request the
    way a token server must, then writes one pre-rendered answer.
    """

    def __init__(self) -> None:
        from aiohttp.base_protocol import BaseProtocol
        from aiohttp.http import HttpRequestParser

        loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser: Any = HttpRequestParser(
            BaseProtocol(loop), loop, 2**16, max_line_size=4096, max_field_size=4096, max_headers=32
        )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        from aiohttp.http import HttpProcessingError

        assert self.transport is not None
        try:
            messages, _upgraded, _tail = self.parser.feed_data(data)
        except HttpProcessingError:
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            self.transport.close()
            return
        for msg, _payload in messages:
            if msg.path.startswith("/v1/token") and msg.url.query.get("profile", "default"):
                _ = "text/plain" in msg.headers.get("Accept", "")
            self.transport.write(RESPONSE)
            if msg.should_close:
                self.transport.close()
                return


async def handle_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """The same answer through asyncio's streams API, the way most small servers are written."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            writer.write(RESPONSE)
            if b"connection: close" in head.lower():
                break
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def serve_aiohttp(path: str, max_seconds: float) -> None:
    """aiohttp's low-level server answering a canned body: aiohttp's own floor per request."""
    from aiohttp import web

    async def handler(request: web.BaseRequest) -> web.Response:
        return web.Response(body=BODY, content_type="application/json")

    runner = web.ServerRunner(web.Server(handler, access_log=None), handle_signals=False)
    await runner.setup()
    await web.UnixSite(runner, path, backlog=1024).start()
    print("ready", flush=True)
    try:
        await asyncio.sleep(max_seconds)
    finally:
        await runner.cleanup()


async def serve(path: str, max_seconds: float, api: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    if api == "aiohttp":
        await serve_aiohttp(path, max_seconds)
        return
    loop = asyncio.get_running_loop()
    if api == "protocol":
        server = await loop.create_unix_server(CannedHTTP, path, backlog=1024)
    elif api == "parser":
        server = await loop.create_unix_server(ParsedHTTP, path, backlog=1024)
    else:
        server = await asyncio.start_unix_server(handle_stream, path, backlog=1024)
    print("ready", flush=True)
    try:
        await asyncio.sleep(max_seconds)
    finally:
        server.close()
        await server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", required=True)
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop instead of asyncio")
    parser.add_argument(
        "--api",
        choices=["streams", "protocol", "parser", "aiohttp"],
        default="streams",
        help="asyncio streams (StreamReader/Writer, the usual way), a bare Protocol, "
        "a bare Protocol with aiohttp's C parser, "
        "or aiohttp's low-level web.Server with a canned web.Response",
    )
    parser.add_argument("--max-seconds", type=float, default=900.0)
    args = parser.parse_args(argv)
    coro = serve(args.socket, args.max_seconds, args.api)
    if args.uvloop:
        import uvloop

        uvloop.run(coro)
    else:
        asyncio.run(coro)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
