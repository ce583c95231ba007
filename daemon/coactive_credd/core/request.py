"""What a request on the daemon's socket means: one reading for the fast path and for aiohttp.

The fast path (:mod:`fastpath`) answers a request itself only when :func:`parse_head` reads
its head completely and finds nothing it is unsure of; everything else goes to aiohttp, whose
parser refuses malformed messages (RFC 9112) with a 400. The aiohttp handlers (:mod:`api`)
read the query and the ``Accept`` field with the same :func:`parse_query`,
:func:`parse_min_ttl` and :func:`wants_plain_text`, so the two paths cannot disagree about
what a request asks for.

``parse_head`` is deliberately narrower than RFC 9112: a request line of exactly
``GET <origin-form target> HTTP/1.1``, field names that are RFC 9110 tokens, field values of
visible ASCII, space and tab only, ``Host`` exactly once, each of the fields that change the
meaning of a message (``Content-Length``, ``Connection``, ``Accept``) at most once, no
``Transfer-Encoding``, ``Expect`` or ``Upgrade``, and the whole head within one line's limit
(:data:`MAX_LINE`). It runs on every token request, so it allocates little: one regular
expression checks the head's shape and a second finds the fields above.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl

__all__ = [
    "MAX_HEADERS",
    "MAX_LINE",
    "MAX_MIN_TTL",
    "BadQuery",
    "bare_lf",
    "parse_head",
    "parse_min_ttl",
    "parse_query",
    "wants_plain_text",
]

# The limits the aiohttp server is given too (server.run): a head beyond them is refused there.
MAX_LINE = 4096  # bytes in the request line or one field line
MAX_HEADERS = 32  # field lines in a head
MAX_MIN_TTL = 86400  # seconds: the largest min_ttl a caller may ask for

# A whole head as parse_head takes it: the request line, then field lines of an RFC 9110
# token, a colon and a value of HTAB, SP and visible ASCII. Nothing else (no bare CR or LF,
# no obs-fold, no space before the colon) matches. The target is origin-form (RFC 9112
# §3.2.1): "/" path ["?" query] of RFC 3986 pchar and well-formed percent-escapes. Every
# repetition is possessive (Python 3.11): a head that does not match fails in linear time,
# never by trying every way to split a run of characters.
_HEAD = re.compile(
    rb"GET (/(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/?]++|%[0-9A-Fa-f]{2})*+) HTTP/1\.1"
    rb"(?:\r\n[!#$%&'*+.^_`|~0-9A-Za-z-]++:[\t\x20-\x7e]*+)*+"
)
_DIGITS = re.compile(r"[0-9]{1,10}")  # ASCII only: str.isdigit() also takes '²' and '٣'

# What each field the fast path must judge means to it; a second occurrence of any of them
# (or of Host) sends the request to aiohttp.
_HOST, _LENGTH, _CONNECTION, _ACCEPT, _REFUSED = range(5)
_FIELDS = {
    b"host": _HOST,
    b"content-length": _LENGTH,
    b"connection": _CONNECTION,
    b"accept": _ACCEPT,
    b"transfer-encoding": _REFUSED,
    b"expect": _REFUSED,
    b"upgrade": _REFUSED,
}
_MEANINGFUL = re.compile(
    rb"\r\n(" + b"|".join(re.escape(name) for name in _FIELDS) + rb"):([^\r]*)", re.IGNORECASE
)


class BadQuery(ValueError):
    """A query parameter the protocol does not accept; ``message`` and ``hint`` are one line
    each, fit for the ``bad_request`` error answer."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.message, self.hint = message, hint


def parse_query(raw: str) -> dict[str, str]:
    """The first value of each parameter in a raw (still percent-encoded) query string.

    ``application/x-www-form-urlencoded`` as :func:`urllib.parse.parse_qsl` reads it: ``&``
    separates, ``+`` is a space, escapes are UTF-8 (malformed ones become U+FFFD).
    """
    out: dict[str, str] = {}
    if not raw:
        return out
    if "%" in raw or "+" in raw:
        for key, value in parse_qsl(raw, keep_blank_values=True):
            out.setdefault(key, value)
        return out
    # Nothing to decode (every token request a shim sends): the same pairs as parse_qsl,
    # at a quarter of its cost. test_request_rules checks the two agree.
    for pair in raw.split("&"):
        if pair:
            key, _, value = pair.partition("=")
            out.setdefault(key, value)
    return out


def parse_min_ttl(raw: str | None) -> int:
    """``min_ttl`` in seconds: absent means 0; otherwise ASCII digits only, 0 to 86400.

    Raises :class:`BadQuery` for anything else (signs, spaces, Unicode digits, too large)."""
    if raw is None:
        return 0
    if _DIGITS.fullmatch(raw) is not None:
        value = int(raw)
        if value <= MAX_MIN_TTL:
            return value
    raise BadQuery(  # !a: quoted, anything not printable ASCII escaped once
        f"min_ttl must be a whole number of seconds from 0 to {MAX_MIN_TTL}, got {raw[:32]!a}",
        "pass ?min_ttl=SECONDS",
    )


def wants_plain_text(accept: str) -> bool:
    """Whether an ``Accept`` field value asks for the token alone (``text/plain``).

    Media types compare case-insensitively (RFC 9110 §8.3.1)."""
    return "text/plain" in accept.lower()


def bare_lf(data: bytes, start: int) -> bool:
    """Whether ``data[start:]`` holds a line ended by LF alone (RFC 9112 §2.2 lets a server
    refuse it; this one does, with a 400 at once rather than waiting for a CRLF CRLF that
    never comes)."""
    return data.count(b"\n", start) != data.count(b"\r\n", start)


def parse_head(head: bytes) -> tuple[bytes, bool] | None:
    """``(target, close)`` for a head (without its final CRLF CRLF) the fast path may answer.

    ``target`` is the origin-form request target of a ``GET``; ``close`` whether the caller
    sent ``Connection: close``. None when the head is anything else or anything unusual: the
    request then goes to aiohttp, which answers it (a 400 when it is malformed). A head
    longer than :data:`MAX_LINE` bytes is handed over whole, so no line of one read here can
    be over aiohttp's limit.

    One regular expression checks the whole shape (request line, field names, field values)
    and a second one finds the few fields that matter; the lines are not split one by one.
    """
    if len(head) > MAX_LINE or head.count(b"\r\n") > MAX_HEADERS:
        return None
    shape = _HEAD.fullmatch(head)
    if shape is None:
        return None
    close = False
    seen = 0
    for name, value in _MEANINGFUL.findall(head):
        kind = _FIELDS[name.lower()]
        if kind == _REFUSED or seen & (1 << kind):
            return None
        seen |= 1 << kind
        value = value.strip(b" \t").lower()
        if kind == _LENGTH:
            if value != b"0":
                return None
        elif kind == _CONNECTION:
            if value == b"close":
                close = True
            elif value != b"keep-alive":
                return None
        elif kind == _ACCEPT and b"text/plain" in value:
            return None  # the token alone: aiohttp's handler writes that answer
    if not seen & (1 << _HOST):  # HTTP/1.1 requires one; aiohttp says so with a 400
        return None
    return shape.group(1), close
