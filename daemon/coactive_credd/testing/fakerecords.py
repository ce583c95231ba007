"""What the fake Coactive keeps of each request and each token it hands out.

:class:`RecordedRequest` is one request as the fake saw it (``FakeCoactive.requests`` and
``api_requests``); :class:`Issued` is one entry of the soak's ledger; :func:`credential_id`
names the credential a request presented without keeping the secret.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

__all__ = ["Issued", "RecordedRequest", "credential_id", "credential_of", "new_token", "peer_of"]


@dataclass
class RecordedRequest:
    """One request the fake received (every path except ``/_fake/...``)."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any  # the parsed JSON, or the raw text when it is not JSON
    auth: str | None  # "bearer", "basic", another scheme in lower case, or None
    peer: tuple[str, int] | None  # the client's address: same peer, same connection
    status: int | None = None  # the answer's status; None while pending or when none was sent
    fault: str | None = None  # the fault applied, if any
    detail: str | None = field(default=None)  # why a request of the wrong shape was refused
    at: float = field(default_factory=time.time)  # arrival, epoch seconds
    credential: str | None = None  # credential_id() of the secret it presented, if any
    retry_after: str | None = None  # the Retry-After it was answered with, if any


@dataclass(frozen=True)
class Issued:
    """One token the fake handed out: the soak's ledger entry."""

    access_token: str = field(repr=False)
    credential: str  # credential_id() of the personal token or client id that obtained it
    issued_at: float  # epoch seconds, just before the answer was sent
    expires_in: int  # seconds, as answered
    requested_at: float = 0.0  # epoch seconds the login request arrived (before any delay)


def credential_id(secret: str) -> str:
    """A short stable name for a personal token or a client id (16 hex digits of SHA-256)."""
    return hashlib.sha256(secret.encode()).hexdigest()[:16]


def credential_of(authorization: str) -> str | None:
    """The :func:`credential_id` an ``Authorization`` header presents: the bearer's token, or
    Basic's client id; None for another scheme, an empty value or Basic that does not decode.
    """
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "bearer" and value:
        return credential_id(value)
    if scheme.lower() == "basic" and value:
        with contextlib.suppress(binascii.Error, UnicodeDecodeError):
            client_id = base64.b64decode(value, validate=True).decode().partition(":")[0]
            return credential_id(client_id)
    return None


def new_token() -> str:
    """A random URL-safe access token, 43 characters, starting ``cat_``."""
    return "cat_" + secrets.token_urlsafe(30)[:39]


def peer_of(request: web.Request) -> tuple[str, int] | None:
    """The client's ``(host, port)``, or None once its transport is gone."""
    peer = request.transport.get_extra_info("peername") if request.transport else None
    return (str(peer[0]), int(peer[1])) if peer else None
