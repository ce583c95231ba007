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

    def response(self) -> web.Response:
        body = {"error": {"code": self.code, "message": self.message, "hint": self.hint}}
        return web.Response(
            status=self.status, body=json.dumps(body).encode(), content_type="application/json"
        )

