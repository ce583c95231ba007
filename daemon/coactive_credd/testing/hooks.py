"""Test-only knobs for crash and soak runs of the real daemon process. Not a product setting.

The soak (``bench/soak.py``) and the kill -9 loops (``bench/kill9.py``) drive the shipped
``coactive-credd serve`` as a subprocess, so they cannot hand it an injected clock or a short
vault-write window the way in-process tests do. Two environment variables, read once at
start-up and ignored unless set, give them that::

    COACTIVE_CREDD_TEST_CLOCK_FILE=PATH     the daemon's wall clock is time.time() plus the
                                            number of seconds written in PATH (a float; a
                                            missing or unreadable file counts as 0), re-read
                                            every 50 ms: a soak steps the wall clock forwards
                                            and back as an NTP step or `date -s` would, while
                                            CLOCK_MONOTONIC and CLOCK_BOOTTIME keep counting.
    COACTIVE_CREDD_TEST_PERSIST_DELAY=SECS  batch refreshed tokens into one vault write every
                                            SECS seconds instead of 30 (so a crash test hits
                                            vault writes all the time).

Why not libfaketime: an LD_PRELOAD library fakes every clock the process reads unless told
otherwise (the event loop's monotonic clock included), acts on Go and Node helpers that
inherit the environment, and is not installed on every CI machine; offsetting only the one
clock the daemon judges wall-clock validity with is exactly the fault wanted, and costs
nothing when the variable is unset (the daemon keeps ``time.time`` itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

ENV_CLOCK_FILE = "COACTIVE_CREDD_TEST_CLOCK_FILE"
ENV_PERSIST_DELAY = "COACTIVE_CREDD_TEST_PERSIST_DELAY"
POLL_SECONDS = 0.05

log = logging.getLogger("coactive_credd")


class _Hookable(Protocol):
    clock: Callable[[], float]
    persist_delay: float


class OffsetClock:
    """``time.time() + offset`` where ``offset`` (seconds) is read from a file."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.offset = 0.0
        self.read()

    def __call__(self) -> float:
        return time.time() + self.offset

    def read(self) -> None:
        try:
            with open(self.path, encoding="ascii") as f:
                offset = float(f.read().strip() or 0)
        except (OSError, ValueError):
            offset = 0.0
        if offset != self.offset:
            log.warning("test clock: wall clock offset now %+.1f s", offset)
            self.offset = offset

    async def follow(self) -> None:
        """Re-read the file every POLL_SECONDS until cancelled."""
        while True:
            await asyncio.sleep(POLL_SECONDS)
            self.read()


def apply(daemon: _Hookable) -> None:
    """Apply the knobs set in the environment to ``daemon`` (nothing when none is set)."""
    delay = os.environ.get(ENV_PERSIST_DELAY)
    if delay:
        with contextlib.suppress(ValueError):
            daemon.persist_delay = max(0.0, float(delay))
            log.warning("test hook: vault writes batched every %.3f s", daemon.persist_delay)
    path = os.environ.get(ENV_CLOCK_FILE)
    if path:
        daemon.clock = OffsetClock(path)
        log.warning("test hook: wall clock offset read from %s", path)


def background(daemon: _Hookable) -> list[Coroutine[Any, Any, None]]:
    """The coroutines the applied knobs need running (none when no knob is set)."""
    return [daemon.clock.follow()] if isinstance(daemon.clock, OffsetClock) else []
