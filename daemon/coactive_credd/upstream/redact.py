"""Coactive's own words, shown only when they cannot carry the credential.

Coactive's error answers are shown to the user (``login``'s stderr, ``status``'s
``last_error``, the log) because they say what is wrong. A server, a proxy or a misconfigured
gateway may echo the request back, and with it the credential: exactly, in another case,
percent-encoded, split by spaces or line breaks, cut to a prefix, base64- or hex-encoded (a
``Basic`` header is base64 of ``client_id:secret``). :func:`carries_secret` looks for every
one of those forms; :func:`server_text` turns Coactive's text into a bounded, single-line,
printable message, or a fixed notice when it carries a secret.
"""

from __future__ import annotations

import base64
import binascii
import re
from urllib.parse import unquote_plus

MIN_PIECE = 8  # a shared run of this many characters counts as a leak (a cut-off echo)
WITHHELD = "(Coactive's message is not shown: it repeats the credential)"

_ENCODED_RUN = re.compile(r"[A-Za-z0-9+/_=-]{12,}")
_SPACE = re.compile(r"\s+")


def _pieces(secret: str, size: int) -> set[str]:
    size = min(size, len(secret))
    return {secret[i : i + size] for i in range(len(secret) - size + 1)}


def _views(text: str) -> list[str]:
    """``text`` as a reader could decode it: as is, percent-decoded (twice), without
    whitespace, and every run that decodes as base64 or hex; all lower-cased."""
    views = [text]
    decoded = text
    for _ in range(2):
        decoded = unquote_plus(decoded)
        views.append(decoded)
    views += [_SPACE.sub("", v) for v in list(views)]
    for view in list(views):
        for run in _ENCODED_RUN.findall(view):
            views += _decoded(run)
    return [v.casefold() for v in views]


def _decoded(run: str) -> list[str]:
    out = []
    for decode in (base64.b64decode, base64.urlsafe_b64decode):
        for start in range(4):  # the run may start inside a base64 block
            chunk = run[start:].rstrip("=")
            chunk = chunk[: len(chunk) - len(chunk) % 4] if len(chunk) % 4 == 1 else chunk
            try:
                raw = decode(chunk + "=" * (-len(chunk) % 4))
            except (binascii.Error, ValueError):
                continue
            out.append(raw.decode("utf-8", "replace"))
    if re.fullmatch(r"(?:[0-9A-Fa-f]{2})+", run):
        out.append(bytes.fromhex(run).decode("utf-8", "replace"))
    return out


def carries_secret(text: str, secret: str) -> bool:
    """Whether ``text`` holds ``secret``, or a run of :data:`MIN_PIECE` characters of it
    (the whole secret when it is shorter), in any case, percent-encoded, split by
    whitespace, or base64- or hex-encoded."""
    if not secret or not text:
        return False
    pieces = {p.casefold() for p in _pieces(secret, MIN_PIECE)}
    return any(p in view for view in _views(text) for p in pieces)


def server_text(text: str, secrets: tuple[str, ...], limit: int) -> str:
    """Coactive's ``text`` as one printable line of at most ``limit`` characters, or
    :data:`WITHHELD` when it carries any of ``secrets`` (see :func:`carries_secret`)."""
    line = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    line = line if len(line) <= limit else line[: limit - 1] + "…"
    # What would be shown is what is checked: a piece cut off by the limit is not shown.
    if any(carries_secret(line, s) for s in secrets if s):
        return WITHHELD
    return line
