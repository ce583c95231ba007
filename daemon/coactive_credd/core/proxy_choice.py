"""Which HTTP proxy, if any, the daemon's calls to Coactive go through.

Precedence (first that applies wins), as curl decides it:

1. the profile's ``proxy`` key in ``config.toml``: a proxy URL, or ``""`` / ``"direct"`` to
   go direct whatever the environment says;
2. ``NO_PROXY`` / ``no_proxy`` naming the target host: direct;
3. ``https_proxy`` / ``HTTPS_PROXY`` for an ``https://`` base URL; ``http_proxy`` (lower case
   only, as curl: ``HTTP_PROXY`` can be set by a CGI request header) for ``http://``;
4. ``all_proxy`` / ``ALL_PROXY``;
5. direct.

``NO_PROXY`` follows curl: a comma-separated list of host names, IP addresses or CIDR
ranges; ``*`` alone matches every host; a name matches itself and its subdomains (a leading
dot is ignored); ports are not compared. Lower-case variables win over upper-case ones.

The connection to Coactive is tunnelled with ``CONNECT`` and TLS is verified end to end
against Coactive's certificate (RFC 9110 §9.3.6): the proxy sees only the host name.
A proxy URL may carry ``user:password@``; :func:`redact` removes it before anything is shown.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["DIRECT_WORDS", "Route", "bypassed", "check_proxy_url", "choose", "redact"]

# Values of a profile's `proxy` key that mean "no proxy for this profile".
DIRECT_WORDS = frozenset({"", "direct", "none"})


@dataclass(frozen=True)
class Route:
    """How a profile reaches Coactive: ``url`` is the proxy (None: direct); ``source`` says
    why (``config``, the environment variable's name, ``NO_PROXY``, or ``default``)."""

    url: str | None
    source: str

    def describe(self) -> str:
        """One line for status, doctor and logs; never a proxy password."""
        if self.url is None:
            why = {
                "config": 'proxy = "direct" in config.toml',
                "default": "no proxy variable set",
            }.get(self.source, f"{self.source} matches the host")
            return f"direct ({why})"
        return f"{redact(self.url)} (from {self.source})"

    def shown(self) -> str | None:
        """The proxy URL without credentials, or None when direct (the status field)."""
        return None if self.url is None else redact(self.url)


def redact(url: str) -> str:
    """``url`` with any ``user:password@`` replaced by ``***@``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    authority, slash, path = rest.partition("/")
    if "@" in authority:
        authority = "***@" + authority.rpartition("@")[2]
    return f"{scheme}{sep}{authority}{slash}{path}"


def check_proxy_url(url: str) -> str:
    """Return the proxy URL normalised (``http://`` added when no scheme is given, as curl).

    Only ``http://`` proxies are accepted: the tunnel to Coactive is TLS either way, and
    aiohttp's TLS-in-TLS to an ``https://`` proxy is not relied on. Raises ValueError with a
    one-line message that never echoes a password.
    """
    url = url.strip()
    if "://" not in url:
        url = "http://" + url
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - accessing it validates the port
    except ValueError as exc:
        raise ValueError(f"proxy {redact(url)!r} is not a valid URL ({exc})") from None
    if parts.scheme.lower() != "http":
        raise ValueError(
            f"proxy {redact(url)!r}: only http:// proxies are supported (the connection to "
            "Coactive inside the tunnel is TLS either way); write http://HOST:PORT"
        )
    if not parts.hostname:
        raise ValueError(f"proxy {redact(url)!r} has no host: write http://HOST:PORT")
    return url


def _env(env: Mapping[str, str], name: str) -> tuple[str, str] | None:
    """The (variable, value) of the lower-case then upper-case ``name``, if set non-empty."""
    for key in (name.lower(), name.upper()):
        value = env.get(key, "").strip()
        if value:
            return key, value
    return None


def bypassed(host: str, no_proxy: str) -> bool:
    """Whether curl would go direct to ``host`` with this ``NO_PROXY`` value."""
    host = host.strip("[]").lower().rstrip(".")
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for raw in no_proxy.split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return True
        entry = entry.strip("[]").lstrip(".").rstrip(".")
        if address is not None:
            try:
                if address in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                pass
            continue
        if host == entry or host.endswith("." + entry):
            return True
    return False


def choose(base_url: str, configured: str | None, env: Mapping[str, str] | None = None) -> Route:
    """The route for calls to ``base_url`` given the profile's ``proxy`` key (None: unset).

    ``env`` defaults to the process environment. Raises ValueError for a malformed proxy
    URL (from the config or the environment), with a message that says which.
    """
    if configured is not None:
        if configured.strip().lower() in DIRECT_WORDS:
            return Route(None, "config")
        return Route(check_proxy_url(configured), "config")
    env = os.environ if env is None else env
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    no_proxy = _env(env, "no_proxy")
    if no_proxy is not None and bypassed(host, no_proxy[1]):
        return Route(None, no_proxy[0])
    if parts.scheme == "https":
        found = _env(env, "https_proxy")
    else:
        value = env.get("http_proxy", "").strip()
        found = ("http_proxy", value) if value else None
    found = found or _env(env, "all_proxy")
    if found is None:
        return Route(None, "default")
    name, value = found
    try:
        return Route(check_proxy_url(value), name)
    except ValueError as exc:
        raise ValueError(f"${name}: {exc}") from None
