"""A profile as the daemon holds it: its configuration, its secret (shielded), its token
and refresh state, and the helpers every room of the server shares to show one.

:class:`Profile` is the unit :mod:`coactive_credd.server.refresh` keeps and refreshes; the
routes, the status document, the event stream and the API proxy read it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

from coactive_credd.core import engine
from coactive_credd.core import proxy_choice as proxy
from coactive_credd.core.config import ProfileConfig
from coactive_credd.upstream.exchange import UpstreamUnavailable
from coactive_credd.vault import credcommand
from coactive_credd.vault.shield import Shielded

log = logging.getLogger("coactive_credd")


def rfc3339(t: float | None) -> str | None:
    """Epoch seconds as an RFC 3339 UTC time, to the second; None for None or for a moment
    no date can show (beyond year 9999: never one a status should fail on)."""
    if t is None:
        return None
    try:
        return datetime.fromtimestamp(int(t), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, ValueError, OSError):
        return None


def token_tail(token: str) -> str:
    """The most of a token a log line may carry."""
    return "…" + token[-4:] if len(token) > 8 else "…"


def fingerprint(secret: str, client_id: str | None) -> bytes:
    """The 32-byte SHA-256 of ``client_id`` (empty for a personal token), a NUL and
    ``secret``: which credentials minted a token, compared without keeping the secret twice."""
    return hashlib.sha256(f"{client_id or ''}\0{secret}".encode()).digest()


def status_extra(
    p: Profile, policy: engine.Policy, now: float, boot: float | None
) -> dict[str, object]:
    """Status keys beside the SPEC's: ``serve_until`` (RFC 3339; the last moment the token is
    served, ``expires_at - skew`` on both clocks, :func:`engine.serve_until`, at ``now``
    epoch seconds and ``boot`` on the boot clock) and ``client_id`` (system credentials; not
    a secret)."""
    tok = p.rt.token
    return {
        "serve_until": rfc3339(engine.serve_until(tok, policy, now, boot)) if tok else None,
        "client_id": p.client_id,
    }


def proxy_url(pc: ProfileConfig) -> str | None:
    """The proxy for ``pc``'s calls to Coactive, None for direct; a malformed proxy variable
    is a transient failure (the user fixes the environment; the token stays served)."""
    try:
        return proxy.choose(pc.base_url, pc.proxy).url
    except ValueError as exc:
        raise UpstreamUnavailable(f"{exc}; fix it and restart the daemon", kind="config") from None


@dataclass
class Profile:
    cfg: ProfileConfig
    secret: Shielded | None
    client_id: str | None
    fp: bytes | None
    rt: engine.Runtime = field(default_factory=engine.Runtime)
    inflight: asyncio.Task[None] | None = None
    rendered: tuple[str, int, bytes] | None = None  # (token, expires_in, JSON body) cache

    def render(self, now: float, boot: float | None = None) -> bytes:
        tok = self.rt.token
        assert tok is not None
        expires_in = max(0, int(engine.expires_in(tok, now, boot)))
        cached = self.rendered
        if cached is not None and cached[0] is tok.access_token and cached[1] == expires_in:
            return cached[2]
        body = json.dumps(
            {
                "profile": self.cfg.name,
                "access_token": tok.access_token,
                "token_type": "Bearer",
                "expires_at": rfc3339(min(tok.expires_at, now + expires_in + 1)),
                "expires_in": expires_in,
            },
            separators=(",", ":"),
        ).encode()
        self.rendered = (tok.access_token, expires_in, body)
        return body


async def fetch_from_command(p: Profile) -> bool:
    """Run `p`'s credential_command off the event loop and keep its answer (shielded) as
    the profile's secret. False, with the profile in reauth_required and the reason logged,
    when it fails; the scheduler does not retry a profile in reauth_required, so the
    command runs again only after ``coactive-credd refresh`` or a reload."""
    argv = p.cfg.credential_command
    assert argv is not None
    try:
        secret = await credcommand.in_thread(argv)
    except credcommand.CommandFailed as exc:
        p.secret = None
        p.rt.on_rejected(str(exc))
        log.error(
            "profile=%s %s; fix it, then `coactive-credd refresh --profile %s`",
            p.cfg.name,
            exc,
            p.cfg.name,
        )
        return False
    p.secret = Shielded(secret)
    p.client_id = p.cfg.client_id
    return True
