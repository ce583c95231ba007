"""The API proxy's rules about a request, free of I/O: which target, Host and headers pass.

Both hops use them, so they cannot disagree: the daemon's ``/api/`` route
(:mod:`apiproxy`) and the loopback listener of ``exec --proxy`` (:mod:`execproxy`), which
must never let a request reach anything but the daemon's ``/api/`` route. Standard library
only.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

__all__ = [
    "HOP_BY_HOP",
    "LOGIN_PATH",
    "PREFIX",
    "WITHHOLD_HEADER",
    "Scrubber",
    "end_to_end",
    "host_of",
    "is_local_host",
    "target_problem",
]

PREFIX = "/api/"
# Sent by exec --proxy's listener to the socket (never on to Coactive): the answer must not
# carry the token, so the daemon masks it wherever Coactive repeats it (headers and body).
WITHHOLD_HEADER = "Coactive-Withhold-Token"
LOGIN_PATH = "/api/v0/login"
# RFC 9110 §7.6.1 (and Proxy-Connection, which some clients still send).
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
# RFC 3986 §2.3: ALPHA DIGIT - . _ ~, which mean the same encoded or not.
_UNRESERVED = re.compile(
    r"%(3[0-9]|4[1-9a-f]|5[0-9a]|6[1-9a-f]|7[0-9a]|2[de]|5f|7e)", re.IGNORECASE
)
# An encoded / or \: a front end that decodes it would see other segments than were checked.
_ENCODED_SEPARATOR = re.compile(r"%(2f|5c)", re.IGNORECASE)


def end_to_end(
    headers: Iterable[tuple[str, str]], also_drop: Iterable[str] = ()
) -> list[tuple[str, str]]:
    """``headers`` without the hop-by-hop ones: :data:`HOP_BY_HOP`, every field a
    Connection header names, and ``also_drop`` (names, any case). Order and repeats kept."""
    items = list(headers)
    drop = set(HOP_BY_HOP) | {n.lower() for n in also_drop}
    for name, value in items:
        if name.lower() == "connection":
            drop.update(t.strip().lower() for t in value.split(",") if t.strip())
    return [(k, v) for k, v in items if k.lower() not in drop]


def target_problem(method: str, target: str) -> str | None:
    """Why a request target may not be forwarded (one line), or None when it may: the
    origin form of a path under :data:`PREFIX`; never CONNECT, an absolute-form or
    authority-form target, or the login.

    The path is judged as a front end may read it: percent-encoded unreserved characters
    decoded (they are the same URI, RFC 3986 §6.2.2.2: ``/api/v0/%6cogin`` is the login), and
    refused outright with an encoded ``/`` or ``\\``, an empty segment (``//``, which some
    front ends merge), a ``.`` or ``..`` segment (also with ``;`` parameters, ``..;``), a
    fragment or a backslash. The target forwarded is the one sent, unchanged."""
    if method.upper() == "CONNECT" or not target.startswith("/"):
        return (
            "the API proxy forwards only to the profile's base URL: no CONNECT and no "
            "absolute-form target"
        )
    malformed = "malformed API target: it must be a path under /api/ without . or .. segments"
    raw = target.split("?", 1)[0]
    if "#" in target or "\\" in raw or _ENCODED_SEPARATOR.search(raw):
        return malformed
    path = _UNRESERVED.sub(lambda m: chr(int(m.group(1), 16)), raw)
    segments = path.split("/")[1:]
    if (
        not raw.startswith(PREFIX)  # decoding leaves that prefix as it is
        or any(
            seg.split(";", 1)[0] in (".", "..") or (not seg and i < len(segments) - 1)
            for i, seg in enumerate(segments)
        )
    ):
        return malformed
    if path.rstrip("/").lower() == LOGIN_PATH:
        return "login"
    return None


def host_of(value: str) -> str:
    """The host of a Host header value: lower case, without port or IPv6 brackets."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def is_local_host(host: str) -> bool:
    """Does ``host`` (from :func:`host_of`) name this machine: ``localhost``, a
    ``*.localhost`` name, or a loopback address?"""
    if host in _LOCAL_HOSTS or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Scrubber:
    """Masks every occurrence of some secrets in a stream of chunks, with a same-length run of
    ``*`` (so a Content-Length stays true), however the chunks cut them. Holds back at most
    the longest secret's length less one byte between chunks."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets = sorted({s.encode() for s in secrets if s}, key=len, reverse=True)
        self._keep = max((len(s) for s in self._secrets), default=1) - 1
        self._carry = b""

    def mask(self, data: bytes) -> bytes:
        for secret in self._secrets:
            data = data.replace(secret, b"*" * len(secret))
        return data

    def feed(self, chunk: bytes) -> bytes:
        """The bytes of ``chunk`` (after what was held back) that can go out now, masked."""
        buf = self.mask(self._carry + chunk)
        if self._keep <= 0:
            self._carry = b""
            return buf
        self._carry = buf[-self._keep :]
        return buf[: -self._keep]

    def end(self) -> bytes:
        """What was held back, at the end of the stream."""
        tail, self._carry = self._carry, b""
        return tail
