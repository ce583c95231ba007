"""Which profile, if any, answers git's credential request: the rules of the git helper.

git sends ``protocol`` and ``host`` (with ``:PORT`` when the URL had one) exactly as the
remote URL spelled them, URL-decoded (gitcredentials(7), git-credential(1)). A profile
answers only when that pair names the very origin of its ``base_url`` (RFC 6454: scheme and
host compared without ASCII case, the scheme's default port filled in) and nothing else: a
host carrying ``@``, ``/``, ``?``, ``#``, white space or control characters, or a port that
is not 1-65535 in plain digits, matches no profile, as git's own helpers compare host
strings exactly and never parse them.

Among the profiles of that origin, ``username`` (when git sent one) must name one of them,
or nothing answers: a token is never handed out under another identity's name. Without a
``username``: ``COACTIVE_PROFILE``, else ``default``, else the only profile of that origin;
several and none of them ``default``: nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

DEFAULT_PORTS = {"https": 443, "http": 80}

# A DNS name or IPv4 address (letters, digits, '-', '.', '_' as some private zones use), or
# an IPv6 literal in brackets; then an optional port of plain digits.
_HOST = re.compile(r"(?P<name>[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\])(?::(?P<port>[0-9]{1,5}))?")

Origin = tuple[str, str, int]


def git_origin(protocol: str, host: str) -> Origin | None:
    """The origin ``(scheme, host, port)`` git asks about, or None when ``protocol`` is not
    http(s) or ``host`` is anything but ``NAME[:PORT]`` (see the module docstring)."""
    scheme = protocol.lower()
    if scheme not in DEFAULT_PORTS:
        return None
    m = _HOST.fullmatch(host)
    if m is None:
        return None
    port = int(m["port"]) if m["port"] is not None else DEFAULT_PORTS[scheme]
    if not 0 < port < 65536:
        return None
    return scheme, m["name"].lower(), port


def base_url_origin(base_url: str) -> Origin | None:
    """The origin of a profile's ``base_url``; None when it has none git could ask about."""
    try:
        parts = urlsplit(base_url)
    except ValueError:
        return None
    return git_origin(parts.scheme, parts.netloc)


def choose(matching: Iterable[str], username: str | None, preferred: str | None) -> str | None:
    """The profile that answers among ``matching`` (the profiles of git's origin), or None.

    ``username`` is git's (None or empty when git sent none); ``preferred`` is the caller's
    ``COACTIVE_PROFILE``."""
    names = set(matching)
    if username:
        return username if username in names else None
    for name in (preferred, "default"):
        if name and name in names:
            return name
    return next(iter(names)) if len(names) == 1 else None
