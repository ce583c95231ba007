"""One way to show text another program controls: :func:`escape`, stdlib only.

An executable's path, a request's path, a proxy's or Coactive's words reach the daemon's
log (a file, or the journal's stream format, where a newline starts a new record with its own
priority), a terminal (``coactive-credd audit``), and JSON that other programs print. Each
such string is escaped once, where it enters, with this function, and the escaped form is
what every one of those shows, so they cannot disagree and none of them can be forged into.

The escaped form is printable ASCII only:

- printable ASCII (0x20-0x7e) stays as it is, except the backslash, which doubles (so the
  form reads back to exactly one string);
- a byte that was not UTF-8 (``os.fsdecode``'s surrogate escapes, or raw ``bytes``) is
  ``\\xNN``, the byte itself;
- every other character, control, newline, DEL, and all non-ASCII (bidi overrides and
  look-alikes included), is ``\\xNN``, ``\\uNNNN`` or ``\\UNNNNNNNN`` as in a Python literal.
"""

from __future__ import annotations

__all__ = ["controls", "escape", "is_escaped"]


def _one(c: str) -> str:
    n = ord(c)
    if 0x20 <= n <= 0x7E:
        return "\\\\" if c == "\\" else c
    if 0xDC80 <= n <= 0xDCFF:  # surrogateescape: the original byte
        return f"\\x{n - 0xDC00:02x}"
    if n <= 0xFF:
        return f"\\x{n:02x}"
    if n <= 0xFFFF:
        return f"\\u{n:04x}"
    return f"\\U{n:08x}"


def escape(text: str | bytes, limit: int | None = None) -> str:
    """``text`` as printable ASCII (the rules in the module docstring); ``bytes`` are read
    as UTF-8, a byte that is not stays ``\\xNN``. With ``limit``, at most that many
    characters of the escaped form, an escape never cut in two, ``...`` at the end when cut."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "surrogateescape")
    if text.isascii() and text.isprintable() and "\\" not in text:
        out = text  # the common case: nothing to do
    else:
        out = "".join(map(_one, text))
    if limit is None or len(out) <= limit:
        return out
    pieces, size = [], 0
    for c in text:
        one = _one(c)
        if size + len(one) > limit - 3:
            break
        pieces.append(one)
        size += len(one)
    return "".join(pieces) + "..."


def is_escaped(text: str) -> bool:
    """Whether ``text`` holds nothing :func:`escape` would change but backslashes: printable
    ASCII only, so it is safe on a terminal and in one log line as it is."""
    return text.isascii() and text.isprintable()


def controls(text: str) -> str:
    """``text`` with only what cannot be shown on one line escaped as :func:`escape` does:
    control characters, newlines, DEL, line and paragraph separators, bidi and other format
    characters, and bytes that were not UTF-8; printable text (``…``, ``é``) stays. For the
    log's own lines, whose arguments were escaped where they entered."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _one(c) for c in text)
