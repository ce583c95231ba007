"""Who took a token: the programs that connected, by uid and executable, aggregated.

Each connection is looked at once, when it is made: the kernel gives the peer's uid and pid
(``SO_PEERCRED``), and the pid its executable (``/proc/PID/exe`` on Linux, ``proc_pidpath``
on macOS). Connections from the same uid and executable share one :class:`Client` entry:
first seen, last seen, connections, the last pid, and the tokens served per profile and path
(``fast``: answered in front of aiohttp; ``slow``: by the aiohttp handlers). The serving path
adds one to a counter of the entry it already holds; nothing more per request.

A busy client is one log line a minute at most (:meth:`Audit.log_changes`, at INFO), not one
per request; ``coactive-credd audit`` shows the table. No token is ever recorded. The table
holds at most :data:`MAX_CLIENTS` entries; past that the one seen longest ago is dropped (its
counts stay in the ``/metrics`` totals).
"""

from __future__ import annotations

import logging
import os
import sys
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["MAX_CLIENTS", "Audit", "Client", "executable"]

log = logging.getLogger("coactive_credd.server.audit")

MAX_CLIENTS = 256
UNKNOWN = "(unknown)"


def executable(pid: int | None) -> str:
    """The executable of process ``pid`` (an absolute path), or ``(unknown)`` when the kernel
    will not say (another pid namespace, a process already gone, no permission)."""
    if not pid or pid <= 0:
        return UNKNOWN
    if sys.platform.startswith("linux"):
        try:
            path = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            return UNKNOWN
        return path
    if sys.platform == "darwin":  # pragma: no cover - exercised on macOS only
        return _proc_pidpath(pid)
    return UNKNOWN


def _proc_pidpath(pid: int) -> str:  # pragma: no cover - macOS only
    import ctypes
    import ctypes.util

    try:
        lib = ctypes.CDLL(ctypes.util.find_library("proc") or "libproc.dylib")
        buf = ctypes.create_string_buffer(4096)
        n = lib.proc_pidpath(pid, buf, ctypes.sizeof(buf))
    except (OSError, AttributeError):
        return UNKNOWN
    return buf.value[:n].decode(errors="replace") if n > 0 else UNKNOWN


@dataclass
class Client:
    """One uid + executable; counts since the daemon started (or since it was last evicted)."""

    uid: int
    exe: str
    pid: int | None
    first_seen: float
    last_seen: float
    connections: int = 0
    fast: dict[str, int] = field(default_factory=dict)  # profile -> tokens served (hot path)
    slow: Counter[str] = field(default_factory=Counter)
    _looked: int = 0  # tokens() when last looked at, to move last_seen on for busy clients
    _logged: int = -1  # tokens() at the last log line

    def tokens(self) -> int:
        return sum(self.fast.values()) + sum(self.slow.values())

    def profiles(self) -> Counter[str]:
        """Tokens served per profile, both paths."""
        return Counter(self.fast) + self.slow

    def as_dict(self) -> dict[str, Any]:
        """``uid``, ``pid`` (the last one seen), ``exe``, ``first_seen``/``last_seen`` (epoch
        seconds), ``connections``, ``tokens`` and ``profiles`` (name -> tokens served)."""
        profiles = self.profiles()
        return {
            "uid": self.uid,
            "pid": self.pid,
            "exe": self.exe,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "connections": self.connections,
            "tokens": sum(profiles.values()),
            "profiles": dict(sorted(profiles.items())),
        }


class Audit:
    """The table of clients, bounded; ``clock`` gives epoch seconds (injected in tests)."""

    def __init__(self, clock: Callable[[], float], max_clients: int = MAX_CLIENTS) -> None:
        self.clock = clock
        self.max_clients = max_clients
        self._clients: OrderedDict[tuple[int, str], Client] = OrderedDict()
        # Counts of evicted entries, so metrics totals never go down.
        self.evicted_fast: Counter[str] = Counter()
        self.evicted_slow: Counter[str] = Counter()

    def connected(self, uid: int, pid: int | None) -> Client:
        """Record a new connection from ``uid``/``pid``; the entry to count its tokens on."""
        exe = executable(pid)
        now = self.clock()
        key = (uid, exe)
        entry = self._clients.get(key)
        if entry is None:
            entry = Client(uid=uid, exe=exe, pid=pid, first_seen=now, last_seen=now)
            self._clients[key] = entry
            while len(self._clients) > self.max_clients:
                _, old = self._clients.popitem(last=False)
                self.evicted_fast.update(old.fast)
                self.evicted_slow.update(old.slow)
        else:
            self._clients.move_to_end(key)
            entry.pid, entry.last_seen = pid, now
        entry.connections += 1
        return entry

    def _touch(self, now: float) -> None:
        """A client busy on one long keep-alive connection counts as seen when it took tokens
        since the last look (per-request time stamps would cost the hot path)."""
        for key, entry in list(self._clients.items()):
            total = entry.tokens()
            if total != entry._looked:
                entry._looked, entry.last_seen = total, now
                self._clients.move_to_end(key)

    def clients(self) -> list[Client]:
        """Every entry, the most recently seen last."""
        self._touch(self.clock())
        return list(self._clients.values())

    def served(self) -> tuple[Counter[str], Counter[str]]:
        """Tokens served per profile (fast, slow) since start, evicted entries included."""
        fast, slow = Counter(self.evicted_fast), Counter(self.evicted_slow)
        for entry in self._clients.values():
            fast.update(entry.fast)
            slow.update(entry.slow)
        return fast, slow

    def log_changes(self) -> None:
        """One INFO line per client whose count changed since its last line."""
        for entry in self.clients():
            total = entry.tokens()
            if total == entry._logged:
                continue
            entry._logged = total
            profiles = ",".join(f"{n}:{c}" for n, c in sorted(entry.profiles().items()))
            log.info(
                "audit: uid=%d pid=%s exe=%s connections=%d tokens=%d profiles=%s",
                entry.uid,
                entry.pid,
                entry.exe,
                entry.connections,
                total,
                profiles or "-",
            )
