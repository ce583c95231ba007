"""Which HTTP proxy, if any, the daemon's calls to Coactive go through.

Precedence (first that applies wins), as curl decides it:

0. an ``http://`` base URL (loopback only): always direct;
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
A proxy URL may carry ``user:password@``; :func:`redact` removes all of it, whatever the URL's
shape, before anything is shown, and no parser's error text is ever passed on.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

from coactive_credd.core.escape import escape

__all__ = [
    "DIRECT_WORDS",
    "Route",
    "bypassed",
    "check_proxy_url",
    "choose",
    "credentials",
    "redact",
]

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
                "http": "an http:// base URL always goes direct",
            }.get(self.source, f"{self.source} matches the host")
            return f"direct ({why})"
        return f"{redact(self.url)} (from {self.source})"

    def shown(self) -> str | None:
        """The proxy URL without credentials, or None when direct (the status field)."""
        return None if self.url is None else redact(self.url)


def _userinfo(url: str) -> tuple[str, str | None, str]:
    """``(scheme + "://", userinfo or None, the rest)`` of a proxy URL, however malformed.

    The userinfo is everything before the *last* ``@``: a password may hold ``/``, ``?`` or
    ``#`` unencoded, and then a URL parser (``urlsplit``) ends the authority inside it and
    takes a piece of the password for the host, the port or the path. So nothing here asks a
    URL parser where the authority ends before the credentials are cut off."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    if "@" not in rest:
        return scheme + sep, None, rest
    userinfo, _, after = rest.rpartition("@")
    return scheme + sep, userinfo, after


def credentials(url: str) -> tuple[str, ...]:
    """What of a proxy URL's userinfo could be repeated back (the user name, the password,
    both as written and percent-decoded, and ``user:password``), for :mod:`redact` to look
    for in a proxy's words; empty when it has none."""
    _, userinfo, _ = _userinfo(url.strip())
    if not userinfo:
        return ()
    out = {userinfo, unquote(userinfo)}
    for part in userinfo.split(":", 1):
        out |= {part, unquote(part)}
    return tuple(sorted(x for x in out if x))


def redact(url: str) -> str:
    """``url`` with its whole userinfo replaced by ``***@`` (everything up to the last ``@``,
    whatever the URL's shape), escaped for one line (:func:`escape.escape`), at most 200
    characters."""
    prefix, userinfo, rest = _userinfo(url)
    if userinfo is None:
        try:  # "user:pass#word" without its "@" reads as a host and a port that is not one
            urlsplit("http://" + rest).port  # noqa: B018 - accessing it validates the port
        except ValueError:
            return escape(prefix + "***", 200)
    return escape(prefix + ("***@" if userinfo is not None else "") + rest, 200)


def check_proxy_url(url: str) -> str:
    """Return the proxy URL normalised: ``http://`` added when no scheme is given (as curl),
    and a user name or password holding ``/``, ``?``, ``#`` or ``@`` percent-encoded, so
    every later parser (aiohttp's) reads the host and port the user meant.

    Only ``http://`` proxies are accepted: the tunnel to Coactive is TLS either way, and
    aiohttp's TLS-in-TLS to an ``https://`` proxy is not relied on. Raises ValueError with a
    one-line message that holds no part of the userinfo (never a parser's own message, which
    can quote a piece of a password as a port).
    """
    url = url.strip()
    if "://" not in url:
        url = "http://" + url
    shown = redact(url)
    prefix, userinfo, rest = _userinfo(url)
    if prefix[:-3].lower() != "http":
        raise ValueError(
            f"proxy {shown!r}: only http:// proxies are supported (the connection to "
            "Coactive inside the tunnel is TLS either way); write http://HOST:PORT"
        )
    try:
        parts = urlsplit("http://" + rest)
    except ValueError:
        raise ValueError(f"proxy {shown!r} is not a valid URL: write http://HOST:PORT") from None
    try:
        parts.port  # noqa: B018 - accessing it validates the port
    except ValueError:
        raise ValueError(
            f"proxy {shown!r}: the port must be a number from 0 to 65535; write http://HOST:PORT"
        ) from None
    if not parts.hostname:
        raise ValueError(f"proxy {shown!r} has no host: write http://HOST:PORT")
    if userinfo is None:
        return url
    user, colon, password = userinfo.partition(":")
    encoded = quote(unquote(user), safe="") + colon + quote(unquote(password), safe="")
    return f"http://{encoded}@{rest}"


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
    if urlsplit(base_url).scheme.lower() == "http":
        # A plain-text base URL (loopback only) never goes through a proxy, whatever is
        # configured: a credential never crosses a network in clear (SPEC; Go's
        # ProxyFromEnvironment does the same for loopback).
        return Route(None, "http")
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
