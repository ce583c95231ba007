"""The shape the fake Coactive demands of ``POST /api/v0/login``, as Coactive documents it.

A personal token logs in with ``Authorization: Bearer <token>`` and the body
``{"grant_type": "refresh_token"}``; a client with HTTP Basic ``<client id>:<client secret>``
and ``{"grant_type": "client_credentials"}``; both as ``application/json``.
:func:`check_shape` refuses anything else with :class:`Refused`, saying what was wrong.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from aiohttp import web

__all__ = ["GRANT_TYPES", "LOGIN_PATH", "Refused", "check_shape"]

LOGIN_PATH = "/api/v0/login"
GRANT_TYPES = {"bearer": "refresh_token", "basic": "client_credentials"}


class Refused(Exception):
    """A login of the wrong shape: answer ``status`` with ``{"detail": detail}``."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def check_shape(request: web.Request, body: Any) -> tuple[str, str, str | None]:
    """``(kind, secret, client_id)`` of a login whose parsed JSON ``body`` is ``body``.

    ``kind`` is ``"bearer"`` (``secret`` the personal token, ``client_id`` None) or
    ``"basic"`` (the client's secret and id). Raises :class:`Refused` (400) for a wrong
    Content-Type, Authorization or body.
    """
    if request.content_type != "application/json":
        raise Refused(
            400,
            f"Content-Type must be application/json, got {request.headers.get('Content-Type')!r}",
        )
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    kind = scheme.lower()
    if kind not in GRANT_TYPES or not value:
        raise Refused(
            400,
            "Authorization must be 'Bearer <personal token>' or HTTP Basic "
            "with the client id and secret",
        )
    client_id: str | None = None
    secret = value
    if kind == "basic":
        try:
            pair = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise Refused(400, "Basic credentials are not valid base64 of UTF-8") from None
        client_id, colon, secret = pair.partition(":")
        if not colon or not client_id or not secret:
            raise Refused(400, "Basic credentials must be '<client id>:<client secret>'")
    expected = {"grant_type": GRANT_TYPES[kind]}
    if body != expected:
        raise Refused(400, f"with {scheme} auth the body must be exactly {json.dumps(expected)}")
    return kind, secret, client_id
