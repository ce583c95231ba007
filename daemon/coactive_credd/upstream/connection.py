"""The connection to Coactive: the HTTP session (:func:`open_session`), the trust a
``ca_bundle`` names (:func:`load_trust`), and what each way of failing to get an answer means
(:func:`network_failure`: a proxy's refusal, TLS, a timeout, a dropped connection).

Third-party errors become :class:`UpstreamUnavailable` here; their details name the proxy only
with its password hidden, and quote a proxy's words only when they repeat no credential.
"""

from __future__ import annotations

import ssl
import time

import aiohttp

from coactive_credd import __version__
from coactive_credd.core.escape import escape
from coactive_credd.core.proxy_choice import credentials as proxy_credentials
from coactive_credd.core.proxy_choice import redact as redact_proxy
from coactive_credd.upstream import redact
from coactive_credd.upstream.failures import MAX_MESSAGE_CHARS, UpstreamUnavailable

__all__ = [
    "USER_AGENT",
    "load_trust",
    "network_failure",
    "open_session",
    "proxy_shown",
    "timeouts",
]

USER_AGENT = f"coactive-credd/{__version__}"


def timeouts(connect_timeout: float, read_timeout: float) -> aiohttp.ClientTimeout:
    """The limits of one call, in seconds: connecting, each read, and the whole call."""
    # sock_read alone does not bound a server that trickles bytes; total does.
    return aiohttp.ClientTimeout(
        total=connect_timeout + read_timeout,
        sock_connect=connect_timeout,
        sock_read=read_timeout,
    )


def open_session(timeout: aiohttp.ClientTimeout) -> aiohttp.ClientSession:
    """A new session for logins; call it inside the event loop that will use it."""
    return aiohttp.ClientSession(
        timeout=timeout,
        headers={"User-Agent": USER_AGENT},
        # No cookies: each login stands on its credential alone.
        cookie_jar=aiohttp.DummyCookieJar(),
    )


def load_trust(ca_bundle: str) -> ssl.SSLContext:
    """A verifying SSL context that trusts the PEM file ``ca_bundle``.

    Raises UpstreamUnavailable of kind ``"config"`` when the file cannot be read or holds no
    certificate: the daemon's own setting is wrong.
    """
    try:
        return ssl.create_default_context(cafile=ca_bundle)
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise UpstreamUnavailable(
            f"cannot load the ca_bundle {escape(ca_bundle, 200)!r} ({type(exc).__name__}: "
            f"{getattr(exc, 'strerror', None) or exc}): fix the ca_bundle setting",
            kind="config",
        ) from exc


def network_failure(
    exc: aiohttp.ClientError | OSError,
    *,
    proxy: str | None,
    secrets: tuple[str, ...],
    started: float,
    connect_timeout: float,
    read_timeout: float,
) -> UpstreamUnavailable:
    """What ``exc``, raised while posting a login, means, for the caller to raise ``from exc``.

    ``proxy`` is the proxy URL the call went through (None: direct), ``secrets`` every form of
    the credential sent (a proxy's reason phrase that repeats one is not quoted), ``started``
    the :func:`time.monotonic` of the call's start, and the timeouts are in seconds.
    """
    via = f" (through the proxy {proxy_shown(proxy)})" if proxy else ""
    if isinstance(exc, aiohttp.ClientHttpProxyError):
        # 407 (RFC 9110 §15.5.8); some proxies answer 401 to a CONNECT instead.
        what = (
            "the user name and password in the proxy URL (http://USER:PASSWORD@HOST:PORT)"
            if exc.status in (401, 407)
            else "the proxy setting (HTTPS_PROXY, NO_PROXY or the profile's proxy key)"
        )
        # The proxy's reason phrase is its own text, like Coactive's: shown only when it
        # repeats no credential, the proxy's nor Coactive's, in any form.
        phrase = redact.server_text(
            str(exc.message or ""),
            (*secrets, *proxy_credentials(proxy or "")),
            MAX_MESSAGE_CHARS,
            withheld=redact.PROXY_WITHHELD,
        )
        return UpstreamUnavailable(
            f"the proxy {proxy_shown(proxy)} refused to connect to Coactive: HTTP "
            f"{exc.status}{' ' + phrase if phrase else ''}; check {what}"
        )
    if isinstance(exc, aiohttp.ClientProxyConnectionError):
        return UpstreamUnavailable(
            f"cannot connect to the proxy {proxy_shown(proxy)} ({_reason(exc)}); check the "
            "proxy setting (HTTPS_PROXY, NO_PROXY or the profile's proxy key)"
        )
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return UpstreamUnavailable(
            f"TLS certificate of {exc.host} could not be verified "
            f"({exc.certificate_error}); if Coactive is reached through a proxy with its "
            "own certificate authority, set ca_bundle to that authority's PEM file"
        )
    if isinstance(exc, aiohttp.ClientSSLError):
        return UpstreamUnavailable(
            f"TLS handshake with {exc.host} failed ({_reason(exc)}); check base_url and, "
            "for a private certificate authority, the ca_bundle setting"
        )
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return UpstreamUnavailable(f"could not connect{via} within {connect_timeout:g} s")
    if isinstance(exc, aiohttp.SocketTimeoutError | TimeoutError):
        # Which limit ran out: the read timeout (no byte for that long), or the total
        # (bytes trickling in, or a proxy that accepted the tunnel and then stalled).
        took = time.monotonic() - started
        limit = (
            f"the read timeout ({read_timeout:g} s)"
            if isinstance(exc, aiohttp.SocketTimeoutError)
            or took < connect_timeout + read_timeout - 0.5
            else f"the whole call's limit ({connect_timeout + read_timeout:g} s)"
        )
        return UpstreamUnavailable(f"no answer{via} within {limit}")
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return UpstreamUnavailable(f"connection closed before an answer came{via}")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return UpstreamUnavailable(f"cannot connect to {exc.host}:{exc.port} ({_reason(exc)})")
    return UpstreamUnavailable(f"connection failed ({_reason(exc)})")


def proxy_shown(proxy: str | None) -> str:
    """``proxy`` as a detail may show it: its password hidden; ``(none)`` for no proxy."""
    return redact_proxy(proxy) if proxy else "(none)"


def _reason(exc: BaseException) -> str:
    """A short reason for a network error, from the innermost OS error when there is one."""
    os_error = getattr(exc, "os_error", exc)
    if isinstance(os_error, OSError) and os_error.strerror:
        return str(os_error.strerror)
    text = str(exc) or type(exc).__name__
    return text if len(text) <= MAX_MESSAGE_CHARS else text[:MAX_MESSAGE_CHARS] + "…"
