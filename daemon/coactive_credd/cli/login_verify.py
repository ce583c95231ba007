"""How ``login`` checks a credential before saving it: the proxy it goes through, and one
exchange with Coactive whose token is kept.
"""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING

from coactive_credd.cli.common import (
    EXIT_REJECTED,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    CommandError,
    progress,
)

if TYPE_CHECKING:
    from coactive_credd.core.config import ProfileConfig
    from coactive_credd.vault import CachedToken


def with_proxy(args: argparse.Namespace, pc: ProfileConfig) -> tuple[ProfileConfig, str | None]:
    """The profile with ``--proxy`` applied (else its proxy as it was), and the proxy URL the
    verifying exchange goes through (None: direct)."""
    import dataclasses

    from coactive_credd.core import config
    from coactive_credd.core import proxy_choice as proxy

    if args.proxy is not None:
        try:
            setting = config.parse_proxy(args.proxy, "--proxy")
        except config.ConfigError as exc:
            raise CommandError(str(exc), EXIT_USAGE) from None
        pc = dataclasses.replace(pc, proxy=setting)
    try:
        return pc, proxy.choose(pc.base_url, pc.proxy).url
    except ValueError as exc:
        raise CommandError(f"{exc}; fix or unset it", EXIT_USAGE) from None


def verify(
    pc: ProfileConfig, secret: str, client_id: str | None, name: str, route: str | None
) -> CachedToken:
    """One exchange with Coactive; the token it gives is kept, so the daemon needs no login."""
    import asyncio

    from coactive_credd.upstream import exchange as upstream
    from coactive_credd.vault import CachedToken

    cred = upstream.Credential(auth=pc.auth, secret=secret, client_id=client_id)

    async def verify() -> upstream.Grant:
        up = upstream.Upstream()
        try:
            return await up.login(pc.base_url, cred, ca_bundle=pc.ca_bundle, proxy=route)
        finally:
            await up.close()

    progress(f"verifying the credentials with {pc.base_url}")
    sent_at = time.time()
    from coactive_credd.core.config import reauth_fix

    try:
        grant = asyncio.run(verify())
    except upstream.CredentialsRejected as exc:
        # The profile may not be saved yet: the hint names its --base-url, so following it
        # never sends the credential to another Coactive.
        fix = reauth_fix(name, pc.auth, client_id, pc.base_url, stdin=True)
        raise CommandError(
            f"Coactive rejected these credentials ({exc.detail}); nothing was saved; {fix}",
            EXIT_REJECTED,
        ) from None
    except upstream.UpstreamError as exc:
        raise CommandError(
            f"could not verify the credentials: {exc.detail}; nothing was saved; retry, "
            f"or add --no-verify to save them unchecked",
            EXIT_UNAVAILABLE,
        ) from None
    return CachedToken(grant.access_token, grant.token_type, sent_at + grant.expires_in, sent_at)
