"""aiohttp's low-level server, answering requests its parser refuses in the protocol's shape.

aiohttp answers a malformed request (RFC 9112 syntax, limits) itself, before any handler
runs: a ``text/plain`` 400 quoting the offending bytes around a caret, and an ERROR log line
with a traceback. That quote depends on how the bytes happened to arrive (a request handed
over by the fast path arrives in one piece), and may hold a token a client sent. Here the
answer is the protocol's error (``{"error": {"code": "bad_request", ...}}``) naming what was
wrong without the bytes, and the log gets one rate-limited WARNING line.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from coactive_credd.server import logguard

__all__ = ["ProtocolServer"]


def _what(exc: BaseException | None, message: str | None) -> str:
    text = getattr(exc, "message", None) or message or (str(exc) if exc else "") or ""
    lines = str(text).strip().splitlines()
    line = lines[0].rstrip(":").strip() if lines else ""
    if not line and exc is not None:
        line = type(exc).__name__
    return line[:120] or "malformed request"


class _Handler(RequestHandler):
    _tail = b""  # the last bytes of the previous read: a head's end may straddle two reads

    def data_received(self, data: bytes) -> None:
        """Feed aiohttp's parser one request head at a time.

        Its parser raises for a whole read when any request in it is malformed, and the
        well-formed requests before that one are then never answered; how many that is
        would depend on how the bytes happened to be split into reads (and on whether the
        fast path read some of them first). Fed head by head, every request before the
        malformed one is answered, however the bytes arrived."""
        tail = self._tail
        joined = tail + data if tail else data
        self._tail = joined[-3:]
        start, at = 0, 0
        while (end := joined.find(b"\r\n\r\n", at)) >= 0:
            at = end + 1
            cut = end + 4 - len(tail)  # where that head ends in ``data``
            if start < cut < len(data):
                super().data_received(data[start:cut])
                start = cut
                if self._force_close or self._close:
                    return
        super().data_received(data[start:] if start else data)

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:  # part of an answer went out: nothing to add
            raise ConnectionError("an answer was already being sent")
        what = _what(exc, message)
        if status >= 500:
            logguard.refusals.warn(
                "internal:" + type(exc).__name__,
                "internal error answering a request: %s",
                what,
            )
            code, text, hint = (
                "internal",
                "internal error in coactive-credd",
                "see the daemon's log",
            )
        else:
            logguard.refusals.warn(
                "malformed", "refused a malformed request with %d: %s", status, what
            )
            code, text = "bad_request", f"malformed HTTP request: {what}"
            hint = "send an HTTP/1.1 request as docs/PROTOCOL.md describes"
        body = {"error": {"code": code, "message": text, "hint": hint}}
        resp = web.Response(
            status=status, body=json.dumps(body).encode(), content_type="application/json"
        )
        resp.force_close()
        return resp


class ProtocolServer(web.Server):
    """:class:`aiohttp.web.Server` whose connections answer parser errors as the protocol's
    ``bad_request`` (and a handler's uncaught exception as ``internal``), logging one line."""

    def __call__(self) -> RequestHandler:
        kwargs: dict[str, Any] = self._kwargs
        return _Handler(self, loop=self._loop, **kwargs)
