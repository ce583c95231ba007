"""Bringing the in-memory profiles in line with a freshly read config and vault.

One function, :func:`reconcile`, used at start and at every reload
(:meth:`~coactive_credd.server.refresh.Daemon.load`). Its rules, in the SPEC's words:

- a profile whose settings and credentials did not change keeps its token and schedule;
- changed credentials start afresh, with the token ``login`` left in the vault, if any;
- a rotation never takes away a valid token (:func:`_keep_serving`);
- a credential file briefly empty or missing changes nothing until it is back;
- a vault token is taken when it outlives the one in memory (:func:`_adopt`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from coactive_credd.core import engine
from coactive_credd.core.config import Config, ProfileConfig
from coactive_credd.server.profile import Profile, fingerprint
from coactive_credd.vault import CachedToken, VaultData, credcommand, credfile
from coactive_credd.vault.shield import Shielded


@dataclass(frozen=True)
class Moment:
    """What a reconcile needs to know of the daemon: ``now`` (epoch seconds), ``boot`` (the
    boot clock, seconds), the refresh ``policy``, ``rand`` (uniform in [0, 1), for the
    refresh jitter) and whether the vault is ``locked``."""

    now: float
    boot: float
    policy: engine.Policy
    rand: Callable[[], float]
    locked: bool


def reconcile(
    old_profiles: dict[str, Profile], cfg: Config, data: VaultData, at: Moment
) -> dict[str, Profile]:
    """The profiles for ``cfg`` and the vault's ``data``, reusing ``old_profiles`` (by
    name) where the rules above say so. The result holds one :class:`Profile` per
    ``cfg.profiles`` entry; ``old_profiles`` is not changed, though a kept profile is the
    same object. Raises nothing: a credential problem is recorded on its profile."""
    fresh: dict[str, Profile] = {}
    for name, pc in cfg.profiles.items():
        fresh[name] = _one(old_profiles.get(name), pc, data, at)
    return fresh


def _one(old: Profile | None, pc: ProfileConfig, data: VaultData, at: Moment) -> Profile:
    sec, problem = credfile.secrets(pc, data.profiles.get(pc.name))
    kept = None
    if pc.credential_command is not None:  # run when a login needs it (credcommand)
        sec, problem = None, None
        kept = credcommand.kept_token(data.profiles.get(pc.name))
    fp = fingerprint(sec.secret, sec.client_id) if sec else None
    if pc.credential_command is not None:  # the token-only entry: tokens persist
        fp = fingerprint(credcommand.NO_SECRET, pc.client_id)
    if (
        problem is not None
        and problem.pending
        and old is not None
        and old.cfg == pc
        and old.secret is not None
        and not at.locked
    ):
        return old  # briefly empty or missing: nothing changes until it is back
    if old is not None and old.cfg == pc and old.fp == fp and not at.locked:
        p = old
    else:
        p = Profile(
            cfg=pc,
            secret=Shielded(sec.secret) if sec else None,
            client_id=sec.client_id if sec else None,
            fp=fp,
        )
        if old is not None and old.rt.reauth and old.fp == fp:
            p.rt.reauth, p.rt.last_error = True, old.rt.last_error
        if old is not None and sec is not None and sec.token is None:
            _keep_serving(old, p, at)
    if problem is not None:
        p.rt.on_rejected(str(problem))
    if sec is not None and sec.token is not None:
        _adopt(p, sec.token, at)
    if kept is not None:
        _adopt(p, kept, at)
    if pc.credential_command is not None and p.rt.reauth:
        p.rt.on_new_credentials()  # a reload runs a failed command again, once
        p.rt.refresh_at = None
    has_secret = p.secret is not None or pc.credential_command is not None
    if has_secret and p.rt.token is None and p.rt.refresh_at is None:
        p.rt.refresh_at = at.now  # log in now, before the first caller asks
    return p


def _keep_serving(old: Profile, p: Profile, at: Moment) -> None:
    """A rotation never takes away a valid token: ``p`` (new credentials or settings)
    serves ``old``'s token, if still servable for the same base URL and client id (another
    client id is another identity, not a rotation), until its own first login succeeds (due
    now when the credentials changed). Rejected new credentials make ``p``
    ``reauth_required`` while the old token is served to its end."""
    tok = old.rt.token
    if (
        tok is None
        or at.locked
        or (old.cfg.base_url, old.cfg.auth) != (p.cfg.base_url, p.cfg.auth)
        or (old.client_id != p.client_id and p.secret is not None)  # another identity
        or not engine.servable(tok, at.now, at.policy, boot=at.boot)
    ):
        return
    if old.fp == p.fp:  # the same credentials (a settings change): the same schedule
        p.rt, p.inflight = old.rt, old.inflight
        return
    p.rt.token, p.rt.last_refresh_at = tok, old.rt.last_refresh_at
    p.rt.refresh_at = at.now if p.secret is not None else None


def _adopt(p: Profile, cached: CachedToken, at: Moment) -> None:
    """Take a token from the vault if it outlives the one in memory. Its boot-clock mint
    is reckoned from its wall-clock age (none if the wall clock now reads earlier)."""
    if p.rt.token is not None and p.rt.token.expires_at >= cached.expires_at:
        return
    age = max(0.0, at.now - cached.obtained_at)
    tok = engine.Token(
        cached.access_token,
        cached.token_type,
        cached.obtained_at,
        cached.expires_at,
        at.boot - age,
    )
    p.rt.token = tok
    p.rt.refresh_at = engine.plan_refresh(tok, at.policy, at.rand())
    p.rt.on_new_credentials()
    if p.rt.last_refresh_at is None or p.rt.last_refresh_at < cached.obtained_at:
        p.rt.last_refresh_at = cached.obtained_at  # the login (or restart) that got it
    p.rendered = None
