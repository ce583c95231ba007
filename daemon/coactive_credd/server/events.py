"""``GET /v1/events``: a server-sent event stream of token rotations and state changes.

The stream follows the WHATWG HTML "Server-sent events" format (``text/event-stream``):
one event per change of a profile's token or state, whose ``data`` is the JSON object
``{"profile", "state", "expires_at", "token_sha256"}`` — the SHA-256 of the token in hex,
never the token — and an ``id`` that counts up. A follower that sees a new ``token_sha256``
fetches the new token from ``GET /v1/token``; it never has to poll.

- Ids count every change, watched or not, so an id always names one content: the daemon
  starts counting at its start time in milliseconds since the epoch, so a restarted daemon's
  ids are above the last run's (unless the wall clock was set back, or the last run averaged
  more than one change a millisecond).
- On connecting, a follower first gets one event per profile with its current state (each
  under the id it got when it last changed), so nothing that happened before it connected
  is missed.
- ``?profile=P`` limits the stream to one profile.
- Every :data:`HEARTBEAT` seconds without an event a comment line (``: keep-alive``) is sent,
  so a follower whose daemon died notices within a few heartbeats, and a follower that went
  away is noticed by the daemon at the next write.
- Each follower has a queue of at most :data:`QUEUE` events; when it is full the oldest is
  dropped (each event is a whole snapshot of a profile, so the newest are the ones that
  matter). A follower that does not read for :data:`WRITE_TIMEOUT` seconds is disconnected.

Written on aiohttp's ``StreamResponse``: the format is four lines of code, and a helper
library (aiohttp-sse) would add a dependency for no less code here.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from typing import TYPE_CHECKING, Any

from aiohttp import web

from coactive_credd.core import engine
from coactive_credd.server.errors import ApiError
from coactive_credd.server.profile import rfc3339

if TYPE_CHECKING:
    from coactive_credd.server.refresh import Daemon

log = logging.getLogger("coactive_credd")

HEARTBEAT = 15.0  # seconds between keep-alive comments on a quiet stream
QUEUE = 64  # events kept per follower
WRITE_TIMEOUT = 30.0  # seconds a follower may leave a write unread before it is dropped

Event = dict[str, Any]


class _Follower:
    def __init__(self, profile: str | None, size: int) -> None:
        self.profile = profile
        self.queue: asyncio.Queue[tuple[int, Event] | None] = asyncio.Queue(size)
        self.dropped = 0

    def put(self, item: tuple[int, Event] | None) -> None:
        if item is not None and self.profile is not None and item[1]["profile"] != self.profile:
            return
        while True:
            try:
                self.queue.put_nowait(item)
                return
            except asyncio.QueueFull:
                self.queue.get_nowait()  # drop the oldest
                self.dropped += 1


class Hub:
    """Watches a :class:`Daemon` and streams the changes to every follower."""

    def __init__(
        self,
        daemon: Daemon,
        *,
        heartbeat: float = HEARTBEAT,
        queue: int = QUEUE,
        write_timeout: float = WRITE_TIMEOUT,
    ) -> None:
        self.d = daemon
        self.heartbeat = heartbeat
        self.queue = queue
        self.write_timeout = write_timeout
        self.last: dict[str, tuple[int, Event]] = {}  # profile -> (id, its last event)
        self.followers: set[_Follower] = set()
        self.seq = int(daemon.clock() * 1000)
        self.closing = False
        self._timer: asyncio.Task[None] | None = None
        daemon.watchers.append(self.check)

    def snapshot(self, name: str, now: float) -> Event:
        p = self.d.profiles.get(name)
        if p is None:  # logged out: nothing to serve any more
            return {"profile": name, "state": "no_token", "expires_at": None, "token_sha256": None}
        tok = p.rt.token
        st = engine.state(p.rt, now, self.d.policy, locked=self.d.locked, boot=self.d.boot_clock())
        keep = tok is not None and st not in (engine.State.LOCKED, engine.State.NO_TOKEN)
        return {
            "profile": name,
            "state": str(st),
            "expires_at": rfc3339(tok.expires_at) if keep and tok else None,
            "token_sha256": hashlib.sha256(tok.access_token.encode()).hexdigest()
            if keep and tok
            else None,
        }

    def check(self) -> None:
        """Give an id to every profile whose state or token changed since the last look, and
        send it to the followers (ids count changes nobody watched too: never reused)."""
        now = self.d.clock()
        for name in sorted(set(self.d.profiles) | set(self.last)):
            ev = self.snapshot(name, now)
            seen = self.last.get(name)
            if seen is not None and seen[1] == ev:
                continue
            if seen is None and name not in self.d.profiles:
                continue
            self.seq += 1
            if name in self.d.profiles:
                self.last[name] = (self.seq, ev)
            else:
                self.last.pop(name, None)
            for f in self.followers:
                f.put((self.seq, ev))

    async def _watch_time(self) -> None:
        """States also change with time alone (a token expires): look when one may."""
        while self.followers:
            now = self.d.clock()
            dues = [
                engine.usable_until(p.rt.token, self.d.policy) - now
                for p in self.d.profiles.values()
                if p.rt.token is not None
            ]
            await asyncio.sleep(min([self.heartbeat, *[d for d in dues if d > 0]]) + 0.01)
            self.check()
        self._timer = None

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        profile = request.query.get("profile") or None
        if profile is not None:
            try:
                from coactive_credd.core.config import check_profile_name

                check_profile_name(profile)
            except ValueError as exc:
                raise ApiError(400, "bad_request", str(exc), "pass ?profile=NAME") from None
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
        )
        await resp.prepare(request)
        follower = _Follower(profile, self.queue)
        self.check()  # bring `last` up to date before this follower joins
        self.followers.add(follower)
        if self._timer is None:
            self._timer = asyncio.create_task(self._watch_time())
        first = "".join(
            _frame(seq, ev)
            for seq, ev in sorted(
                (v for n, v in self.last.items() if profile in (None, n)), key=lambda v: v[0]
            )
        )
        try:
            await self._write(resp, f"retry: 1000\n\n{first}")
            while not self.closing:
                try:
                    item = await asyncio.wait_for(follower.queue.get(), self.heartbeat)
                except TimeoutError:
                    await self._write(resp, ": keep-alive\n\n")
                    continue
                if item is None:
                    break
                await self._write(resp, _frame(*item))
            await resp.write_eof()
        except (ConnectionError, TimeoutError):
            pass  # the follower went away, or stopped reading
        finally:
            self.followers.discard(follower)
            if follower.dropped:
                log.info("an event follower fell behind: %d event(s) dropped", follower.dropped)
        return resp

    async def _write(self, resp: web.StreamResponse, text: str) -> None:
        await asyncio.wait_for(resp.write(text.encode()), self.write_timeout)

    def close(self) -> None:
        """End every stream (at shutdown)."""
        self.closing = True
        for f in self.followers:
            f.put(None)
        if self._timer is not None:
            self._timer.cancel()


def _frame(seq: int, ev: Event) -> str:
    return f"id: {seq}\ndata: {json.dumps(ev, separators=(',', ':'))}\n\n"
