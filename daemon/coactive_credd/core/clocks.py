"""The daemon's two clocks: the wall clock (epoch seconds) and a boot clock.

The boot clock counts seconds since boot, keeps counting while the machine is suspended, and
is never set or stepped, so the time a token has lived is measured on it even when the wall
clock jumps (NTP, a user, a VM restored from a snapshot). Linux: ``CLOCK_BOOTTIME``. macOS:
``CLOCK_MONOTONIC``, which there counts sleep too (``mach_continuous_time``); elsewhere
``CLOCK_MONOTONIC``, which may stop during a suspend, and then the wall clock, checked beside
it, still ends a token on time once it is set right.
"""

from __future__ import annotations

import sys
import time

__all__ = ["boot_time", "wall_time"]

_BOOT = getattr(time, "CLOCK_BOOTTIME", None) if sys.platform.startswith("linux") else None
_CLOCK = _BOOT if _BOOT is not None else time.CLOCK_MONOTONIC

wall_time = time.time


def boot_time() -> float:
    """Seconds on the boot clock (see the module docstring); only differences mean anything."""
    return time.clock_gettime(_CLOCK)
