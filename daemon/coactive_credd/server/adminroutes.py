"""The admin routes of the socket protocol: ``POST /v1/admin/{reload,lock,unlock}`` and
``/v1/admin/credentials[/remove]``, and the bounded JSON body every POST route reads.

Only the daemon's own user reaches them (the peer check in :mod:`.api` runs first). The
vault writes behind ``/v1/admin/credentials`` are :mod:`.admin`'s.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from coactive_credd.server import admin
from coactive_credd.server.errors import ApiError
from coactive_credd.server.refresh import Daemon
from coactive_credd.vault import VaultError, WrongPassphrase

MAX_BODY = 4096  # bytes: the largest body a POST route reads


async def json_body(request: web.BaseRequest, shape: str) -> dict[str, Any] | None:
    """The request's JSON object body, None if there is none; 400/413 otherwise. A
    ``Content-Length`` over :data:`MAX_BODY` bytes is refused before reading; a body is
    read to its end however it arrives (one read may return only its first part)."""
    too_large = ApiError(
        413, "bad_request", "request body too large", f"send at most {MAX_BODY} bytes"
    )
    if (request.content_length or 0) > MAX_BODY:
        raise too_large
    body = b""
    while len(body) <= MAX_BODY:
        chunk = await request.content.read(MAX_BODY + 1 - len(body))
        if not chunk:
            break
        body += chunk
    if len(body) > MAX_BODY:
        raise too_large
    if not body.strip():
        return None
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        doc = None
    if not isinstance(doc, dict):
        raise ApiError(400, "bad_request", "body is not a JSON object", f"send {shape}")
    return doc


class AdminRoutes:
    """The admin routes' handlers for daemon ``d``; each returns a JSON answer or raises
    :class:`~coactive_credd.server.errors.ApiError`."""

    def __init__(self, d: Daemon) -> None:
        self.d = d

    async def post_lock(self, request: web.BaseRequest) -> web.Response:
        if self.d.key_source != "passphrase":
            raise ApiError(
                409,
                "bad_request",
                "the vault has no passphrase, so it cannot be locked",
                "protect it first: `coactive-credd rekey --passphrase-stdin`",
            )
        if not self.d.locked:
            self.d.lock_now("lock requested")
        return web.json_response({"ok": True, "locked": True})

    async def post_unlock(self, request: web.BaseRequest) -> web.Response:
        doc = await json_body(request, '{"passphrase": "..."}')
        passphrase = doc.get("passphrase") if doc else None
        if not isinstance(passphrase, str) or not passphrase:
            raise ApiError(400, "bad_request", "no passphrase given", 'send {"passphrase": "..."}')
        try:
            await self.d.unlock(passphrase)
        except WrongPassphrase:
            raise ApiError(
                401,
                "wrong_passphrase",
                "wrong passphrase; the vault stays locked",
                "run `coactive-credd unlock` again",
            ) from None
        except VaultError as exc:
            raise ApiError(409, "bad_request", str(exc), "see `coactive-credd status`") from None
        return web.json_response(
            {"ok": True, "locked": self.d.locked, "profiles": len(self.d.profiles)}
        )

    async def post_credentials(self, request: web.BaseRequest) -> web.Response:
        """The CLI's vault writes, made here when only the daemon holds the key (admin.py)."""
        doc = await json_body(request, '{"profile": "...", "secret": "..."}') or {}
        fn = admin.remove_credentials if request.path.endswith("/remove") else admin.put_credentials
        try:
            return web.json_response(await fn(self.d, doc))
        except admin.AdminError as exc:
            raise ApiError(exc.status, exc.code, exc.message, exc.hint) from None

    async def post_reload(self, request: web.BaseRequest) -> web.Response:
        self.d.reload()
        return web.Response(
            body=json.dumps({"ok": True, "profiles": len(self.d.profiles)}).encode(),
            content_type="application/json",
        )
