"""Keep bad input and resource exhaustion from flooding the log: one line each, rate-limited.

Three sources would otherwise write a traceback per event, as fast as a misbehaving client
or an exhausted fd table can produce them:

- aiohttp's server logs ``Error handling request`` with a traceback for every malformed
  request it answers 400 (:class:`MalformedRequestFilter` turns that into one WARNING line
  naming what was wrong, never the request's bytes, which may hold a token);
- asyncio's accept loop calls the loop's exception handler for every failed ``accept()``
  when the fd limit is reached (:func:`install_loop_handler`);
- the fast path and the connection cap report refusals (:data:`refusals`).

Each kind of event logs at most one line per :data:`WINDOW` seconds, saying how many like it
were left out since the last line.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from collections.abc import Callable
from typing import Any

__all__ = ["WINDOW", "MalformedRequestFilter", "RateLimiter", "install_loop_handler", "refusals"]

log = logging.getLogger("coactive_credd")

WINDOW = 10.0  # seconds between two lines about the same kind of event
_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class RateLimiter:
    """At most one event per ``window`` seconds for each key; counts the ones left out."""

    def __init__(self, window: float = WINDOW, clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self.clock = clock
        self._last: dict[str, float] = {}
        self._dropped: dict[str, int] = {}

    def allow(self, key: str) -> int | None:
        """None if ``key`` was let through within the window (this one is counted as left
        out); otherwise the number left out since the last one let through."""
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.window:
            self._dropped[key] = self._dropped.get(key, 0) + 1
            return None
        self._last[key] = now
        return self._dropped.pop(key, 0)

    def warn(self, key: str, message: str, *args: object) -> None:
        """Log ``message % args`` at WARNING unless ``key`` was logged within the window."""
        dropped = self.allow(key)
        if dropped is None:
            return
        if dropped:
            log.warning(
                message + " (and %d more like it in the last %g s)", *args, dropped, self.window
            )
        else:
            log.warning(message, *args)


refusals = RateLimiter()


def _first_line(exc: BaseException) -> str:
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    line = str(text).strip().splitlines()[0] if str(text).strip() else type(exc).__name__
    return line.rstrip(":")[:120]


class MalformedRequestFilter(logging.Filter):
    """On ``aiohttp.server``: a malformed request becomes one rate-limited WARNING line.

    aiohttp answers such a request 400 itself and logs the parser's exception with a
    traceback and the offending bytes; this keeps what was wrong and drops the rest."""

    def __init__(self, limiter: RateLimiter | None = None) -> None:
        super().__init__()
        self.limiter = limiter or refusals

    def filter(self, record: logging.LogRecord) -> bool:
        from aiohttp.http_exceptions import HttpProcessingError

        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError):
            return True
        dropped = self.limiter.allow("malformed")
        if dropped is None:
            return False
        record.msg = "refused a malformed request with %d: %s%s"
        more = f" (and {dropped} more in the last {self.limiter.window:g} s)" if dropped else ""
        record.args = (exc.code or 400, _first_line(exc), more)
        record.exc_info = record.exc_text = None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def install_loop_handler(
    loop: asyncio.AbstractEventLoop, limiter: RateLimiter | None = None
) -> None:
    """Replace ``loop``'s exception handler with one that logs one line per kind of event,
    rate-limited: above all ``accept()`` failing for want of file descriptors, which asyncio
    reports once per attempt, with a traceback each time."""
    limits = limiter or refusals

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        message = str(context.get("message") or "unexpected event-loop error")
        if isinstance(exc, OSError) and exc.errno in _RESOURCE_ERRNOS:
            limits.warn(
                "accept:" + str(exc.errno),
                "cannot accept connections: %s; raise the open-files limit "
                "(LimitNOFILE= in the service unit, ulimit -n) or find what holds so many",
                exc.strerror or type(exc).__name__,
            )
            return
        detail = f": {type(exc).__name__}: {_first_line(exc)}" if exc is not None else ""
        key = message + "|" + (type(exc).__name__ if exc is not None else "")
        dropped = limits.allow(key)
        if dropped is None:
            return
        more = f" (and {dropped} more like it in the last {limits.window:g} s)" if dropped else ""
        # A traceback helps with a bug; the rate limit keeps a bug in a loop from flooding.
        trace = exc if exc is not None and not isinstance(exc, OSError) else None
        log.error("%s%s%s", message, detail, more, exc_info=trace)

    loop.set_exception_handler(handler)
