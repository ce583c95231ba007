"""The server room: the daemon process and everything that runs inside it.

- :mod:`.process`: the socket, start-up lock, signals, hardening (``coactive-credd serve``).
- :mod:`.refresh`: the daemon's state: profiles, tokens, one refresh in flight each, lock.
- :mod:`.api`, :mod:`.fastpath`, :mod:`.httpserver`: the socket protocol, its peer check, and
  the fast path for ``GET /v1/token`` in front of aiohttp.
- :mod:`.events`, :mod:`.metrics`, :mod:`.stats`, :mod:`.audit`, :mod:`.logguard`,
  :mod:`.logsetup`: what the daemon tells: event streams, Prometheus text, counters, who took
  tokens, rate-limited log lines.
- :mod:`.containers`, :mod:`.admin`, :mod:`.service`: sidecar features, vault writes made for
  ``login``, systemd/launchd integration.

It may import every room but the cli and testing rooms.
"""
