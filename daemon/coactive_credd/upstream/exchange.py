"""The ``POST {base_url}/api/v0/login`` exchange with Coactive, and what its failures mean.

Every failure of :meth:`Upstream.login` is one of two kinds, and callers decide on the kind
alone::

    UpstreamError                  .detail (safe to log, never a secret), .retryable
     +-- CredentialsRejected       400/401/403 from login: the stored credentials are no good;
     |                             retrying will not help (retryable False), re-login needed.
     +-- UpstreamUnavailable       network error, timeout, TLS failure, 408/429/5xx, any other
                                   status, malformed answer: try again later (retryable True),
                                   honouring .retry_after when Coactive sent one.

Third-party errors are translated here, at the boundary, with ``raise ... from exc``; nothing
from aiohttp escapes :meth:`Upstream.login`. Each failure is logged once, on one line at
WARNING, by the ``coactive_credd.upstream.exchange`` logger, so callers need not log the detail again.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import ipaddress
import json
import logging
import re
import ssl
import time
from dataclasses import dataclass
from datetime import UTC
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp
from coactive_credd import __version__
from coactive_credd.core.proxy_choice import redact as redact_proxy
from coactive_credd.upstream import redact

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
TOKEN_TYPE = "Bearer"  # noqa: S105 - the scheme's name, not a secret
USER_AGENT = f"coactive-credd/{__version__}"
# A longer lifetime than this is a broken answer, not a generous one.
MAX_EXPIRES_IN = 365 * 24 * 3600
# A login answer is a few hundred bytes; anything this large is not one.
MAX_ANSWER_BYTES = 64 * 1024
MAX_MESSAGE_CHARS = 200
_REJECTED = frozenset({400, 401, 403})
_LOOPBACK_NAMES = frozenset({"localhost"})


class UpstreamError(Exception):
    """A login exchange failed. ``detail`` is safe to log and never holds a secret."""

    retryable: bool = True

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class CredentialsRejected(UpstreamError):
    """Coactive answered 400/401/403: the credentials must be replaced; do not retry."""

    retryable = False

    def __init__(self, detail: str, *, status: int) -> None:
        super().__init__(detail)
        self.status = status


class UpstreamUnavailable(UpstreamError):
    """Coactive could not be reached or gave no usable answer; try again later."""

    retryable = True

    def __init__(
        self, detail: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.retry_after = retry_after


@dataclass(frozen=True)
class Grant:
    """An access token from Coactive, valid for ``expires_in`` seconds from its issue."""

    access_token: str
    token_type: str
    expires_in: int

    def __repr__(self) -> str:
        return (
            f"Grant(access_token=…{self.access_token[-4:]}, token_type={self.token_type!r}, "
            f"expires_in={self.expires_in})"
        )


@dataclass(frozen=True, repr=False)
class Credential:
    """What is exchanged for an access token: a personal token, or a client id and secret."""

    auth: Literal["personal_token", "client_credentials"]
    secret: str
    client_id: str | None = None

    def __post_init__(self) -> None:
        # Messages here name the field, never its value.
        if self.auth not in ("personal_token", "client_credentials"):
            raise ValueError(
                f"unknown auth kind {self.auth!r}: use personal_token or client_credentials"
            )
        if not self.secret:
            raise ValueError("the credential's secret is empty")
        if _has_control(self.secret):
            raise ValueError("the credential's secret contains control characters")
        if self.auth == "personal_token":
            if any(c.isspace() for c in self.secret):
                raise ValueError("the personal token contains whitespace")
        else:
            if not self.client_id:
                raise ValueError("client credentials need a client_id")
            if ":" in self.client_id or _has_control(self.client_id):
                raise ValueError("the client_id must not contain ':' or control characters")

    def __repr__(self) -> str:
        return f"Credential(auth={self.auth!r}, client_id={self.client_id!r}, secret=<hidden>)"


def _has_control(text: str) -> bool:
    return any(ord(c) < 0x20 or ord(c) == 0x7F for c in text)


def validate_base_url(url: str) -> str:
    """Return ``url`` normalised (lower-case scheme and host, no trailing slash).

    ``https://`` is accepted for any host; ``http://`` only for loopback hosts (``localhost``,
    127.0.0.0/8, ``::1``), since the credentials would otherwise cross the network in clear.
    Raises ValueError with a one-line message that says what to do.
    """
    url = url.strip()
    if not url or any(c.isspace() for c in url) or _has_control(url):
        raise ValueError(
            "base URL is empty or contains spaces: give one like https://api.coactive.ai"
        )
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. an unclosed "[" around an IPv6 address
        raise ValueError(f"base URL {url!r} is not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError(
            f"base URL must start with https:// (got {scheme + '://' if scheme else 'no scheme'}):"
            " give one like https://api.coactive.ai"
        )
    if "@" in parts.netloc:
        # The URL is not echoed: what precedes the @ may be a password.
        raise ValueError(
            "base URL must not contain a user name or password: drop the part before '@' "
            "and store credentials with `coactive-credd login`"
        )
    if "?" in url or "#" in url:
        raise ValueError(
            "base URL must not have a query (?…) or fragment (#…): give only scheme, host "
            "and optional path, like https://api.coactive.ai"
        )
    host = (parts.hostname or "").lower()
    if not host:
        raise ValueError(f"base URL {url!r} has no host: give one like https://api.coactive.ai")
    try:
        parts.port  # noqa: B018 - accessing it validates the port
    except ValueError as exc:
        raise ValueError(f"base URL {url!r} has an invalid port: {exc}") from None
    if scheme == "http" and not _is_loopback(host):
        raise ValueError(
            f"refusing plain http:// for {host}: credentials must travel over TLS; use "
            f"https://{parts.netloc.lower()}{parts.path.rstrip('/')} (http:// is allowed only "
            "for localhost, 127.0.0.0/8 and ::1)"
        )
    return f"{scheme}://{parts.netloc.lower()}{parts.path.rstrip('/')}"


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


MAX_RETRY_AFTER = 86400  # seconds: the longest Retry-After honoured as given


def parse_retry_after(value: str | None, now: float, date: str | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delta-seconds or an HTTP-date (RFC 9110
    §10.2.3).

    An HTTP-date is measured against the answer's own ``Date`` field when there is a valid
    one (the server's clock against the server's clock, so a local clock that runs fast or
    slow does not shorten or stretch the wait), else against ``now`` (epoch seconds).
    Returns None when the value is absent or unparseable; never a negative number (a date in
    the past means "now": 0), never more than :data:`MAX_RETRY_AFTER` (a day: a server that
    asks for longer is asked again the next day rather than never).
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if value.isascii() and value.isdigit():
        if len(value) > 9:  # over 31 years: no need to read the number
            return float(MAX_RETRY_AFTER)
        return float(min(int(value), MAX_RETRY_AFTER))
    when = _http_date(value)
    if when is None:
        return None
    base = _http_date(date) if date else None
    return min(MAX_RETRY_AFTER, max(0.0, when - (now if base is None else base)))


def _http_date(value: str) -> float | None:
    """Epoch seconds of an HTTP-date (RFC 9110 §5.6.7), None if it is not one."""
    try:
        when = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        # RFC 9110 HTTP-dates are always GMT; a date without a zone is read as such.
        when = when.replace(tzinfo=UTC)
    try:
        return when.timestamp()
    except (OverflowError, OSError, ValueError):
        return None


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def parse_login_answer(body: bytes) -> Grant:
    """Check a 200 answer from login and return its grant.

    Raises UpstreamUnavailable whose detail says exactly what was wrong; the detail never
    contains the token (or any other value from the answer).
    """

    def bad(what: str) -> UpstreamUnavailable:
        return UpstreamUnavailable(f"malformed login answer: {what}", status=200)

    try:
        data: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise bad(f"body is not JSON ({len(body)} bytes)") from None
    if not isinstance(data, dict):
        raise bad(f"body is {_json_kind(data)}, not a JSON object")

    token = data.get("access_token")
    if token is None:
        raise bad("no access_token")
    if not isinstance(token, str):
        raise bad(f"access_token is {_json_kind(token)}, not a string")
    if not token:
        raise bad("access_token is empty")
    if not all(0x21 <= ord(c) <= 0x7E for c in token):
        raise bad("access_token contains whitespace, control or non-ASCII characters")

    token_type = data.get("token_type")
    if token_type is None:
        raise bad("no token_type")
    if not isinstance(token_type, str):
        raise bad(f"token_type is {_json_kind(token_type)}, not a string")
    if token_type.lower() != "bearer":
        shown = token_type[:20] if token_type.isprintable() else "(unprintable)"
        raise bad(f"token_type is {shown!r}, expected 'Bearer'")

    raw = data.get("expires_in")
    if raw is None:
        raise bad("no expires_in")
    expires_in = _seconds(raw)
    if expires_in is None:
        shown = f"{raw!r}"[:24] if isinstance(raw, str) and raw.isprintable() else _json_kind(raw)
        raise bad(f"expires_in is {shown}, not a number of seconds")
    if expires_in <= 0:
        raise bad(f"expires_in is {expires_in}, not a positive number of seconds")
    if expires_in > MAX_EXPIRES_IN:
        # Broken or generous, the daemon refreshes within a year all the same; say so.
        log.warning(
            "Coactive's login answer says expires_in %d s, more than a year; "
            "the token is treated as valid for a year",
            expires_in,
        )
        expires_in = MAX_EXPIRES_IN
    return Grant(access_token=token, token_type=TOKEN_TYPE, expires_in=expires_in)


def _seconds(value: object) -> int | None:
    """Whole seconds from a JSON number or numeric string: 3600, 3600.0, "3600", "3600.0"
    (a fraction is rounded down; an infinite number is as long as it gets, for the caller
    to clamp); None for anything else (booleans, NaN, "1h", "1_000", ...)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value.strip()
        if len(text) > 32 or _NUMBER.fullmatch(text) is None:
            return None
        value = float(text) if any(c in text for c in ".eE") else int(text)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if value != value:
            return None
        if value in (float("inf"), float("-inf")):
            return MAX_EXPIRES_IN + 1 if value > 0 else -1
        return int(value)
    return None


# A JSON number's text (RFC 8259 §6), with a leading "+" and a bare fraction also taken
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def _server_message(body: bytes, secrets: tuple[str, ...]) -> str | None:
    """A short human message from an error answer, or None. Never returns a secret."""
    try:
        data: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    message: object = None
    for key in ("detail", "message", "error_description", "error"):
        value = data.get(key)
        if isinstance(value, dict):
            value = value.get("message")
        if isinstance(value, str) and value.strip():
            message = value
            break
    if not isinstance(message, str):
        return None
    # Bounded, printable, and withheld when it echoes the credential in any form.
    return redact.server_text(message, secrets, MAX_MESSAGE_CHARS)


class Upstream:
    """Logs in to Coactive. One instance per daemon; it keeps one HTTP session for all calls.

    Create it anywhere; its session is opened lazily inside the running event loop on the
    first :meth:`login` and must be closed with :meth:`close` on that same loop.
    """

    def __init__(self, *, connect_timeout: float = 5.0, read_timeout: float = 15.0) -> None:
        # sock_read alone does not bound a server that trickles bytes; total does.
        self._timeout = aiohttp.ClientTimeout(
            total=connect_timeout + read_timeout,
            sock_connect=connect_timeout,
            sock_read=read_timeout,
        )
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
        self._session = aiohttp.ClientSession(
            timeout=self._timeout,
            headers={"User-Agent": USER_AGENT},
            # No cookies: each login stands on its credential alone.
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        self._loop = loop
        return self._session

    def _ssl_for(self, ca_bundle: str | None) -> ssl.SSLContext | bool:
        if ca_bundle is None:
            return True  # aiohttp's default: verify against the system's trust store
        context = self._ssl_contexts.get(ca_bundle)
        if context is None:
            try:
                context = ssl.create_default_context(cafile=ca_bundle)
            except (OSError, ssl.SSLError, ValueError) as exc:
                raise UpstreamUnavailable(
                    f"cannot load the ca_bundle {ca_bundle!r} ({type(exc).__name__}: "
                    f"{getattr(exc, 'strerror', None) or exc}): fix the ca_bundle setting"
                ) from exc
            # Cached only once it loaded, so a corrected file is picked up on the next try.
            self._ssl_contexts[ca_bundle] = context
        return context

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
        ssl_arg = self._ssl_for(ca_bundle) if url.startswith("https:") else True
        session = self._get_session()
        try:
            async with session.post(
                url,
                data=json.dumps(body).encode(),
                headers=headers,
                ssl=ssl_arg,
                proxy=proxy,
                # A redirect would re-send or drop the credentials; neither is wanted.
                allow_redirects=False,
            ) as resp:
                answer = await self._read_capped(resp)
                status = resp.status
                retry_after_header = resp.headers.get("Retry-After")
                date_header = resp.headers.get("Date")
        except UpstreamError:
            raise
        except aiohttp.ClientHttpProxyError as exc:
            # 407 (RFC 9110 §15.5.8); some proxies answer 401 to a CONNECT instead.
            what = (
                "the user name and password in the proxy URL (http://USER:PASSWORD@HOST:PORT)"
                if exc.status in (401, 407)
                else "the proxy setting (HTTPS_PROXY, NO_PROXY or the profile's proxy key)"
            )
            raise UpstreamUnavailable(
                f"the proxy {_proxy_shown(proxy)} refused to connect to Coactive: HTTP "
                f"{exc.status} {exc.message}; check {what}"
            ) from exc
        except aiohttp.ClientProxyConnectionError as exc:
            raise UpstreamUnavailable(
                f"cannot connect to the proxy {_proxy_shown(proxy)} ({_reason(exc)}); check the "
                "proxy setting (HTTPS_PROXY, NO_PROXY or the profile's proxy key)"
            ) from exc
        except aiohttp.ClientConnectorCertificateError as exc:
            raise UpstreamUnavailable(
                f"TLS certificate of {exc.host} could not be verified "
                f"({exc.certificate_error}); if Coactive is reached through a proxy with its "
                "own certificate authority, set ca_bundle to that authority's PEM file"
            ) from exc
        except aiohttp.ClientSSLError as exc:
            raise UpstreamUnavailable(
                f"TLS handshake with {exc.host} failed ({_reason(exc)}); check base_url and, "
                "for a private certificate authority, the ca_bundle setting"
            ) from exc
        except aiohttp.ConnectionTimeoutError as exc:
            raise UpstreamUnavailable(
                f"could not connect within {self._connect_timeout:g} s"
            ) from exc
        except (aiohttp.SocketTimeoutError, TimeoutError) as exc:
            raise UpstreamUnavailable(
                f"no answer within the read timeout ({self._read_timeout:g} s)"
            ) from exc
        except aiohttp.ServerDisconnectedError as exc:
            raise UpstreamUnavailable("connection closed before an answer came") from exc
        except aiohttp.ClientConnectorError as exc:
            raise UpstreamUnavailable(
                f"cannot connect to {exc.host}:{exc.port} ({_reason(exc)})"
            ) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamUnavailable(f"connection failed ({_reason(exc)})") from exc

        if status == 200:
            return parse_login_answer(answer)
        secrets = (cred.secret, authorization.split(" ", 1)[1])
        message = _server_message(answer, secrets)
        said = f": {message}" if message else ""
        if status in _REJECTED:
            raise CredentialsRejected(
                f"Coactive refused the login with HTTP {status}{said}", status=status
            )
        if status in (408, 429) or 500 <= status <= 599:
            retry_after = parse_retry_after(retry_after_header, time.time(), date_header)
            wait = f" (retry after {retry_after:g} s)" if retry_after is not None else ""
            raise UpstreamUnavailable(
                f"Coactive is unavailable: HTTP {status}{said}{wait}",
                status=status,
                retry_after=retry_after,
            )
        raise UpstreamUnavailable(
            f"unexpected HTTP {status} from {url}{said}; base_url may be wrong (it should be "
            "the API root, like https://api.coactive.ai)",
            status=status,
        )

    @staticmethod
    async def _read_capped(resp: aiohttp.ClientResponse) -> bytes:
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_chunked(16 * 1024):
            size += len(chunk)
            if size > MAX_ANSWER_BYTES:
                raise UpstreamUnavailable(
                    f"login answer (HTTP {resp.status}) is larger than "
                    f"{MAX_ANSWER_BYTES // 1024} KiB",
                    status=resp.status,
                )
            chunks.append(chunk)
        return b"".join(chunks)


def _proxy_shown(proxy: str | None) -> str:
    return redact_proxy(proxy) if proxy else "(none)"


def _reason(exc: BaseException) -> str:
    """A short reason for a network error, from the innermost OS error when there is one."""
    os_error = getattr(exc, "os_error", exc)
    if isinstance(os_error, OSError) and os_error.strerror:
        return str(os_error.strerror)
    text = str(exc) or type(exc).__name__
    return text if len(text) <= MAX_MESSAGE_CHARS else text[:MAX_MESSAGE_CHARS] + "…"
