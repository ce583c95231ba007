"""What the fake Coactive's API surface under ``/api/v1/`` answers, once the bearer passed.

The routes are listed in :mod:`.fakeupstream`'s docstring; the bearer check and the
``api_401`` switch are ``FakeCoactive._api``'s, since they read the fake's state.
"""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Awaitable, Callable

from aiohttp import web

from .fakefaults import HANG_SECONDS, abort
from .fakerecords import RecordedRequest

__all__ = ["answer", "pattern"]

_PATTERN = bytes(range(256)) * 256  # 64 KiB


def pattern(offset: int, n: int) -> bytes:
    """``n`` bytes of the stream endpoint's body from ``offset``: byte i is ``i % 256``."""
    start = offset % 256
    out = _PATTERN[start : start + n]
    while len(out) < n:
        out += _PATTERN[: n - len(out)]
    return out


async def answer(
    request: web.Request, record: RecordedRequest, sleep: Callable[[float], Awaitable[None]]
) -> web.StreamResponse:
    """The answer to an API request whose bearer the fake accepted.

    ``record`` gets the body's size in bytes (echo routes); ``sleep`` holds ``stall`` (it
    returns early when the fake stops). An unknown route is a 404.
    """
    tail = request.match_info["tail"]
    if tail.startswith(("echo", "datasets/")):
        return await _echo(request, record)
    if tail == "stream" or tail == "reset":
        return await _stream(request, reset=tail == "reset")
    if tail == "gzip":  # a server that compresses whatever the request accepts
        body = gzip.compress(request.headers.get("Authorization", "").encode())
        return web.Response(body=body, headers={"Content-Encoding": "gzip"})
    if tail == "redirect":
        return web.Response(status=302, headers={"Location": "https://elsewhere.invalid/"})
    if tail == "stall":
        await sleep(HANG_SECONDS)
        return web.json_response({"detail": "stalled"})
    if tail.rstrip("/") == "datasets":
        return web.json_response(
            {"meta": {"links": {}, "page": {"currentPage": 1, "lastPage": 1}}, "data": []}
        )
    return web.json_response({"detail": f"no API route {request.path}"}, status=404)


async def _echo(request: web.Request, record: RecordedRequest) -> web.Response:
    digest, size, kept = hashlib.sha256(), 0, bytearray()
    while chunk := await request.content.read(64 * 1024):
        digest.update(chunk)
        size += len(chunk)
        if len(kept) <= 64 * 1024:
            kept += chunk
    record.body = size
    return web.json_response(
        {
            "method": request.method,
            "path": request.path,
            "query": request.raw_path.partition("?")[2],  # as sent, undecoded
            "headers": [[k, v] for k, v in request.headers.items()],
            "body_bytes": size,
            "body_sha256": digest.hexdigest(),
            "body": kept.decode("utf-8", "replace") if size <= 64 * 1024 else None,
        }
    )


async def _stream(request: web.Request, *, reset: bool) -> web.StreamResponse:
    """``?bytes=N`` of :func:`pattern`; with ``reset``, of a longer announced body, then RST."""
    try:
        size = int(request.query.get("bytes", "0"))
    except ValueError:
        return web.json_response({"detail": "bytes must be an integer"}, status=400)
    resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    if reset:
        resp.content_length = size + 1024 * 1024
    elif request.query.get("chunked") != "1":
        resp.content_length = size
    await resp.prepare(request)
    sent = 0 if request.method != "HEAD" else size  # a HEAD: the head alone
    try:
        while sent < size:
            n = min(64 * 1024, size - sent)
            await resp.write(pattern(sent, n))
            sent += n
    except ConnectionError:  # the reader left mid-body, as Coactive sees a closed connection
        return resp
    if reset:
        abort(request, reset=True)
        return resp
    await resp.write_eof()
    return resp
