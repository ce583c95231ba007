"""What a login is given, checked before anything is sent: the :class:`Credential`, and the
base URL it may travel to (:func:`validate_base_url`)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

__all__ = ["Credential", "validate_base_url"]

_LOOPBACK_NAMES = frozenset({"localhost"})


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
