"""The socket protocol's error answers: ``{"error": {"code", "message", "hint"}}`` with its
HTTP status (docs/PROTOCOL.md). Its own module, so the routes, the event streams and the API
proxy raise the same class without importing one another."""

from __future__ import annotations

import json

from aiohttp import web

from coactive_credd.core.errors import CreddError


class ApiError(CreddError):
    """An error answer of the socket protocol: ``{"error": {code, message, hint}}``."""

    def __init__(self, status: int, code: str, message: str, hint: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.hint = status, code, message, hint

    def body(self) -> bytes:
        """The JSON body, as both serving paths send it (UTF-8 bytes)."""
        doc = {"error": {"code": self.code, "message": self.message, "hint": self.hint}}
        return json.dumps(doc).encode()

    def response(self) -> web.Response:
        return web.Response(status=self.status, body=self.body(), content_type="application/json")


def refused_peer(uid: int, daemon_uid: int) -> ApiError:
    """The 403 for a peer of ``uid`` that is neither ``daemon_uid`` nor in ``allowed_uids``:
    one text for the fast path and aiohttp, naming both ways to let it in."""
    return ApiError(
        403,
        "forbidden",
        f"only the daemon's own user may use this socket, not uid {uid}",
        f"connect as the user who runs coactive-credd, or list uid {uid} in the "
        f"daemon's [daemon] allowed_uids (a sidecar: and set "
        f"COACTIVE_CREDD_DAEMON_UID={daemon_uid} in the app)",
    )

