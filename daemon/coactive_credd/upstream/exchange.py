"""The ``POST {base_url}/api/v0/login`` exchange with Coactive, and what its failures mean.

This is the room's front: :class:`Upstream` makes the request; what it is given is checked in
:mod:`.credential`, the connection and its failures are :mod:`.connection`, Coactive's answer
is read in :mod:`.answers`, and every name callers use is importable from here.

Every failure of :meth:`Upstream.login` is one of two kinds, and callers decide on the kind
alone::

    UpstreamError                  .detail (safe to log, never a secret), .retryable
     +-- CredentialsRejected       400/401/403 from login: the stored credentials are no good;
     |                             retrying will not help (retryable False), re-login needed.
     +-- UpstreamUnavailable       network error, timeout, TLS failure, 408/429/5xx, any other
                                   status, malformed answer: try again later (retryable True),
                                   honouring .retry_after when Coactive sent one.

Third-party errors are translated in this room, at the boundary, with ``raise ... from exc``; nothing
from aiohttp escapes :meth:`Upstream.login`. Each failure is logged once, on one line at
WARNING, by the ``coactive_credd.upstream.exchange`` logger, so callers need not log the detail again.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import ssl
import time

import aiohttp

from coactive_credd.upstream import connection
from coactive_credd.upstream.answers import (
    Answer,
    Grant,
    grant_from,
    parse_login_answer,
    parse_retry_after,
    read_answer,
)
from coactive_credd.upstream.credential import Credential, validate_base_url
from coactive_credd.upstream.failures import (
    CredentialsRejected,
    UpstreamError,
    UpstreamUnavailable,
)

__all__ = [
    "Credential",
    "CredentialsRejected",
    "Grant",
    "Upstream",
    "UpstreamError",
    "UpstreamUnavailable",
    "parse_login_answer",
    "parse_retry_after",
    "validate_base_url",
]

log = logging.getLogger("coactive_credd.upstream.exchange")

LOGIN_PATH = "/api/v0/login"


class Upstream:
    """Logs in to Coactive. One instance per daemon; it keeps one HTTP session for all calls.

    Create it anywhere; its session is opened lazily inside the running event loop on the
    first :meth:`login` and must be closed with :meth:`close` on that same loop.
    """

    def __init__(self, *, connect_timeout: float = 5.0, read_timeout: float = 15.0) -> None:
        self._timeout = connection.timeouts(connect_timeout, read_timeout)
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ssl_contexts: dict[str, ssl.SSLContext] = {}

    async def close(self) -> None:
        """Close the HTTP session. A later :meth:`login` opens a new one."""
        session, self._session, self._loop = self._session, None, None
        if session is not None:
            await session.close()

    def _get_session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is not None and not self._session.closed:
            if self._loop is not loop:
                raise RuntimeError("Upstream is in use on another event loop; make one per loop")
            return self._session
        self._session = connection.open_session(self._timeout)
        self._loop = loop
        return self._session

    def _ssl_for(self, ca_bundle: str | None) -> ssl.SSLContext | bool:
        if ca_bundle is None:
            return True  # aiohttp's default: verify against the system's trust store
        context = self._ssl_contexts.get(ca_bundle)
        if context is None:
            context = connection.load_trust(ca_bundle)
            # Cached only once it loaded, so a corrected file is picked up on the next try,
            # and only until the next reload (forget_certificates): a CA that rotated is
            # trusted from the SIGHUP on, not from the next restart.
            self._ssl_contexts[ca_bundle] = context
        return context

    def forget_certificates(self) -> None:
        """Read every ``ca_bundle`` again at its next use (the daemon's reload calls this).

        aiohttp pools connections by SSL context, so no pooled connection made with the old
        trust is used again after this."""
        self._ssl_contexts.clear()

    async def login(
        self,
        base_url: str,
        cred: Credential,
        *,
        ca_bundle: str | None = None,
        proxy: str | None = None,
    ) -> Grant:
        """Exchange ``cred`` for an access token at ``{base_url}/api/v0/login``.

        ``proxy`` is an ``http://`` proxy URL to tunnel through with ``CONNECT`` (TLS still
        verified end to end), None to go direct; :func:`coactive_credd.core.proxy_choice.choose` picks it.
        Raises CredentialsRejected or UpstreamUnavailable (see the module docstring), and
        ValueError if ``base_url`` is not acceptable (see :func:`validate_base_url`).
        """
        base_url = validate_base_url(base_url)
        try:
            grant = await self._exchange(base_url + LOGIN_PATH, cred, ca_bundle, proxy)
        except UpstreamError as exc:
            # The caller decides what a failure means (retry, re-login) and logs it once, at its level.
            log.debug("login at %s failed: %s", base_url, exc.detail)
            raise
        log.debug(
            "login at %s: token …%s, expires in %d s",
            base_url,
            grant.access_token[-4:],
            grant.expires_in,
        )
        return grant

    async def _exchange(
        self, url: str, cred: Credential, ca_bundle: str | None, proxy: str | None
    ) -> Grant:
        headers, body, secrets = _login_request(cred)
        ssl_arg = self._ssl_for(ca_bundle) if url.startswith("https:") else True
        answer = await self._post(url, headers, body, ssl_arg, proxy, secrets)
        return grant_from(answer, url, secrets)

    async def _post(
        self,
        url: str,
        headers: dict[str, str],
        body: bytes,
        ssl_arg: ssl.SSLContext | bool,
        proxy: str | None,
        secrets: tuple[str, ...],
    ) -> Answer:
        """Send the login and read the answer; every network failure is UpstreamUnavailable."""
        session = self._get_session()
        started = time.monotonic()
        try:
            async with session.post(
                url,
                data=body,
                headers=headers,
                ssl=ssl_arg,
                proxy=proxy,
                # A redirect would re-send or drop the credentials; neither is wanted.
                allow_redirects=False,
            ) as resp:
                return await read_answer(resp)
        except UpstreamError:
            raise
        except (aiohttp.ClientError, OSError) as exc:  # TimeoutError is an OSError
            raise connection.network_failure(
                exc,
                proxy=proxy,
                secrets=secrets,
                started=started,
                connect_timeout=self._connect_timeout,
                read_timeout=self._read_timeout,
            ) from exc


def _login_request(cred: Credential) -> tuple[dict[str, str], bytes, tuple[str, ...]]:
    """The headers and JSON body of a login with ``cred``, and every form of the secret they
    carry (the secret, and the ``Authorization`` value after its scheme)."""
    if cred.auth == "personal_token":
        authorization = f"Bearer {cred.secret}"
        body = {"grant_type": "refresh_token"}
    else:
        pair = f"{cred.client_id}:{cred.secret}".encode()
        authorization = "Basic " + base64.b64encode(pair).decode("ascii")
        body = {"grant_type": "client_credentials"}
    headers = {
        "Authorization": authorization,
        "Content-Type": "application/json",
        "Accept": "application/json",
    }
    secrets = (cred.secret, authorization.split(" ", 1)[1])
    return headers, json.dumps(body).encode(), secrets
