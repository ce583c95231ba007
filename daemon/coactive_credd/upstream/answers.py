"""Reading Coactive's answer to a login: the body (bounded), the grant in a 200, and for any
other status the failure it means (:func:`grant_from`), with ``Retry-After`` honoured
(:func:`parse_retry_after`). Nothing here repeats the token or the credential.
"""

from __future__ import annotations

import email.utils
import json
import logging
import re
import time
from dataclasses import dataclass
from datetime import UTC
from typing import Any

import aiohttp

from coactive_credd.upstream import redact
from coactive_credd.upstream.failures import (
    MAX_MESSAGE_CHARS,
    CredentialsRejected,
    UpstreamError,
    UpstreamUnavailable,
)

__all__ = [
    "MAX_ANSWER_BYTES",
    "MAX_EXPIRES_IN",
    "MAX_RETRY_AFTER",
    "Answer",
    "Grant",
    "grant_from",
    "parse_login_answer",
    "parse_retry_after",
    "read_answer",
]

# The front module's logger (:mod:`.exchange`): every line of an exchange is under one name.
log = logging.getLogger("coactive_credd.upstream.exchange")

TOKEN_TYPE = "Bearer"  # noqa: S105 - the scheme's name, not a secret
# A longer lifetime than this is a broken answer, not a generous one.
MAX_EXPIRES_IN = (
    24 * 3600
)  # a day: a personal token is used at least daily (30 days unused ends it)
# A login answer is a few hundred bytes; anything this large is not one.
MAX_ANSWER_BYTES = 64 * 1024
_REJECTED = frozenset({400, 401, 403})


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


@dataclass(frozen=True)
class Answer:
    """Coactive's answer as read: the status, the body (at most :data:`MAX_ANSWER_BYTES`), and
    the ``Retry-After`` and ``Date`` fields as sent (None when absent)."""

    status: int
    body: bytes
    retry_after: str | None
    date: str | None


async def read_answer(resp: aiohttp.ClientResponse) -> Answer:
    """Read ``resp`` whole. Raises UpstreamUnavailable when the body passes
    :data:`MAX_ANSWER_BYTES` (a login answer is a few hundred bytes)."""
    body = await _read_capped(resp)
    return Answer(
        status=resp.status,
        body=body,
        retry_after=resp.headers.get("Retry-After"),
        date=resp.headers.get("Date"),
    )


async def _read_capped(resp: aiohttp.ClientResponse) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(16 * 1024):
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            raise UpstreamUnavailable(
                f"login answer (HTTP {resp.status}) is larger than {MAX_ANSWER_BYTES // 1024} KiB",
                status=resp.status,
            )
        chunks.append(chunk)
    return b"".join(chunks)


def grant_from(answer: Answer, url: str, secrets: tuple[str, ...]) -> Grant:
    """The grant in a 200 answer to a login at ``url``.

    Raises CredentialsRejected for 400/401/403; UpstreamUnavailable for a malformed 200 (see
    :func:`parse_login_answer`), for 408/429/5xx (with ``retry_after`` in seconds when Coactive
    sent one) and for any other status. Coactive's message is quoted only when it repeats none
    of ``secrets``.
    """
    status = answer.status
    if status == 200:
        return parse_login_answer(answer.body)
    raise _failure(answer, url, secrets)


def _failure(answer: Answer, url: str, secrets: tuple[str, ...]) -> UpstreamError:
    status = answer.status
    message = _server_message(answer.body, secrets)
    said = f": {message}" if message else ""
    if status in _REJECTED:
        return CredentialsRejected(
            f"Coactive refused the login with HTTP {status}{said}", status=status
        )
    if status in (408, 429) or 500 <= status <= 599:
        retry_after = parse_retry_after(answer.retry_after, time.time(), answer.date)
        wait = f" (retry after {retry_after:g} s)" if retry_after is not None else ""
        return UpstreamUnavailable(
            f"Coactive is unavailable: HTTP {status}{said}{wait}",
            status=status,
            retry_after=retry_after,
        )
    return UpstreamUnavailable(
        f"unexpected HTTP {status} from {url}{said}; base_url may be wrong (it should be "
        "the API root, like https://api.coactive.ai)",
        status=status,
    )


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
        # Broken or generous, the daemon refreshes within a day all the same, so a personal
        # token is used at least daily and never lapses through the 30-days-unused rule.
        log.warning(
            "Coactive's login answer says expires_in %d s, more than a day; "
            "the token is treated as valid for a day (%d s)",
            expires_in,
            MAX_EXPIRES_IN,
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
