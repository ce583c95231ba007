"""The ``GET /v1/status`` document: the daemon and each of its profiles, as the CLI's
``status`` and ``doctor`` read it (docs/PROTOCOL.md). Never a secret nor a token."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from coactive_credd import __version__
from coactive_credd.core import config, credage, engine
from coactive_credd.core import proxy_choice as proxy
from coactive_credd.server.profile import rfc3339, status_extra
from coactive_credd.vault import credfile

if TYPE_CHECKING:
    from coactive_credd.server.refresh import Daemon


def status_document(d: Daemon) -> dict[str, Any]:
    """The status of ``d`` now: ``{"version", "pid", "locked", "key_source", "uses_vault",
    "socket", "profiles": [{"name", "auth", "base_url", "state", "expires_at", ...}],
    "last_reload_error"}``, times as RFC 3339 strings (null when unknown)."""
    now, boot = d.clock(), d.boot_clock()
    profiles = []
    for name in sorted(d.profiles):
        p = d.profiles[name]
        rt = p.rt
        profiles.append(
            {
                "name": name,
                "auth": p.cfg.auth,
                "base_url": p.cfg.base_url,
                "state": str(engine.state(rt, now, d.policy, locked=d.locked, boot=boot)),
                "expires_at": rfc3339(rt.token.expires_at) if rt.token else None,
                "next_refresh_at": rfc3339(rt.next_due(now, boot)),
                "last_refresh_at": rfc3339(rt.last_refresh_at),
                "last_error": rt.last_error,
                **status_extra(p, d.policy, now, boot),
                **_route_fields(p.cfg),
                **credage.status_fields(p.cfg, now),
                **d.stats.proxy.status_fields(name),
            }
        )
    return {
        "version": __version__,
        "pid": os.getpid(),
        "locked": d.locked,
        "key_source": d.key_source,
        "uses_vault": credfile.uses_vault(d.cfg, d.paths.vault_file),
        "socket": str(d.paths.socket),
        "profiles": profiles,
        "last_reload_error": d.last_reload_error,
    }


def _route_fields(pc: config.ProfileConfig) -> dict[str, str | None]:
    """``proxy`` (the URL without credentials, null when direct) and ``proxy_route`` (one
    line: which proxy and why, for doctor and people) in a profile's status."""
    try:
        route = proxy.choose(pc.base_url, pc.proxy)
    except ValueError as exc:
        return {"proxy": None, "proxy_route": f"invalid: {exc}"}
    return {"proxy": route.shown(), "proxy_route": route.describe()}
