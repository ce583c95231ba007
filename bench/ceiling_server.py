"""The ceiling for a Python server on this machine: asyncio, a Unix socket, a canned answer.

It parses nothing beyond finding the end of each request's headers and answers every request
with the same pre-rendered HTTP/1.1 response, keeping the connection open unless the client
asked for ``Connection: close``. Whatever coactive-credd does per request costs on top of this.

    python bench/ceiling_server.py --socket PATH [--api streams|protocol] [--uvloop]
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
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

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


async def serve(path: str, max_seconds: float, api: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    loop = asyncio.get_running_loop()
    if api == "protocol":
        server = await loop.create_unix_server(CannedHTTP, path, backlog=1024)
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
        choices=["streams", "protocol"],
        default="streams",
        help="asyncio streams (StreamReader/Writer, the usual way) or a bare Protocol",
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
