"""The socket protocol's error answers: ``{"error": {"code", "message", "hint"}}`` with its
HTTP status (docs/PROTOCOL.md). Its own module, so the routes, the event streams and the API
proxy raise the same class without importing one another."""

from __future__ import annotations

import json

from aiohttp import web

from coactive_credd.core import config, engine
from coactive_credd.core.errors import CreddError
from coactive_credd.server.profile import Profile
from coactive_credd.vault import credfile


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


def too_long(min_ttl: int, tok: engine.Token) -> ApiError:
    """400 for a ``min_ttl`` (seconds) longer than ``tok``'s whole lifetime: no login helps."""
    return ApiError(
        400,
        "bad_request",
        f"min_ttl={min_ttl} is longer than the tokens Coactive issues ({int(tok.lifetime)} s)",
        "ask for a smaller min_ttl",
    )


def _relogin_hint(p: Profile) -> str:
    """A refused credential is replaced (a personal token made anew first); none stored,
    or stored ones that are malformed, are stored again with the same login."""
    name, auth, base_url = p.cfg.name, p.cfg.auth, p.cfg.base_url
    if (p.rt.last_error or "").startswith("Coactive refused"):
        return config.reauth_fix(name, auth, p.client_id, base_url)
    return f"run `{config.login_command(name, auth, p.client_id, base_url)}`"


def no_token(p: Profile, now: float, boot: float, policy: engine.Policy) -> ApiError:
    """The answer when ``p`` has no token to give at ``now`` (epoch seconds; ``boot`` on
    the boot clock): 424 ``reauth_required`` with the fix, or 503 ``upstream_unavailable``
    saying whether the current token is still served, for how long, and when a refresh
    may be asked for again (SPEC: errors)."""
    name = p.cfg.name
    if p.rt.reauth:
        return ApiError(
            424,
            "reauth_required",
            # why: Coactive's refusal, or none stored, or stored ones that are malformed
            f"profile {name!r} needs new credentials: {p.rt.last_error}",
            credfile.fix_hint(p.cfg) or _relogin_hint(p),
        )
    tok = p.rt.token
    retry_in = p.rt.retry_in(now, boot)
    retry = "" if retry_in is None else f"; next attempt in {max(0, int(retry_in))} s"
    # Within a backoff or Coactive's Retry-After a forced refresh is refused too: say when.
    when = "then" if retry_in is None or retry_in <= 0 else f"in {int(retry_in) + 1} s"
    if tok is not None and engine.servable(tok, now, policy, boot=boot):
        # A forced refresh that failed: the token being served is still good.
        left = int(engine.serve_until(tok, policy, now, boot) - now)
        return ApiError(
            503,
            "upstream_unavailable",
            f"no new token for profile {name!r}: Coactive cannot be reached "
            f"({p.rt.last_error}){retry}; the current token is still served for {left} s",
            f"check the network and `coactive-credd status`; `coactive-credd refresh --profile {name}` works {when}",
        )
    return ApiError(
        503,
        "upstream_unavailable",
        f"no valid token for profile {name!r} and Coactive cannot be reached ({p.rt.last_error}){retry}",
        f"check the network and `coactive-credd status`; `coactive-credd refresh --profile {name}` works {when}",
    )
