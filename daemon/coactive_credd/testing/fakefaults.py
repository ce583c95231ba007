"""The faults the fake Coactive's login endpoint can be switched to, and how each answers.

``FakeCoactive.fault`` (or ``{"fault": ...}`` to ``/_fake/control``) names one of
:data:`FAULTS`; :func:`fault_answer` gives that fault's answer. :func:`abort` is how the fake
hangs up on a caller (also the API surface's ``reset``).
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from .fakerecords import new_token

__all__ = ["FAULTS", "HANG_SECONDS", "SLOW_DEFAULT", "abort", "fault_answer"]

FAULTS = (
    "slow",
    "429",
    "500",
    "502",
    "503",
    "reset",
    "malformed",
    "401",
    "wrong_token_type",
    "missing_expires_in",
    "timeout",
)
SLOW_DEFAULT = 5.0
HANG_SECONDS = 3600.0


async def fault_answer(
    request: web.Request,
    fault: str,
    *,
    retry_after: str | None,
    expires_in: int,
    sleep: Callable[[float], Awaitable[None]],
) -> web.StreamResponse | None:
    """The answer to a login under ``fault`` (one of :data:`FAULTS` but ``slow``).

    ``retry_after`` is the Retry-After header of a 429 or 503 (None: no header);
    ``expires_in`` (seconds) goes in the faults that still hand out a token; ``sleep`` waits
    out ``timeout`` (it returns early when the fake stops). None: the connection was cut.
    """
    retry = {"Retry-After": retry_after} if retry_after is not None else {}
    if fault == "timeout":
        await sleep(HANG_SECONDS)
        abort(request, reset=False)
        return None
    if fault == "reset":
        abort(request, reset=True)
        return None
    if fault == "429":
        return web.json_response({"detail": "Too many requests"}, status=429, headers=retry)
    if fault == "503":
        return web.json_response({"detail": "Service unavailable"}, status=503, headers=retry)
    if fault == "500":
        return web.Response(status=500, text="Internal Server Error")
    if fault == "502":
        return web.Response(
            status=502,
            content_type="text/html",
            text="<html><body><h1>502 Bad Gateway</h1></body></html>",
        )
    if fault == "401":
        return web.json_response({"detail": "Invalid or revoked credentials"}, status=401)
    if fault == "malformed":
        return web.Response(
            status=200,
            content_type="text/html",
            text="<html><body>Sign in to continue</body></html>",
        )
    answer: dict[str, Any] = {
        "access_token": new_token(),
        "token_type": "Bearer",
        "expires_in": expires_in,
    }
    if fault == "wrong_token_type":
        answer["token_type"] = "mac"  # noqa: S105 - a scheme name, not a secret
    elif fault == "missing_expires_in":
        del answer["expires_in"]
    return web.json_response(answer)


def abort(request: web.Request, *, reset: bool) -> None:
    """Cut the caller's connection unanswered: with a reset (RST) when ``reset``, else a FIN."""
    transport = request.transport
    if transport is None:
        return
    if reset:
        # SO_LINGER 0 makes close() send RST rather than FIN: a real "connection reset".
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
