"""What the daemon adds for containers and long-running programs, started beside the server.

- ``[daemon] allowed_uids``: those uids pass the peer check too (an app container beside a
  sidecar). The socket is then ``0666`` in a ``0711`` folder of the daemon's: the kernel lets
  any local process connect, and the daemon answers only the uids it knows — the peer's
  credentials are checked on every connection, as for the daemon's own uid. Without
  ``allowed_uids`` nothing changes: ``0600`` in a ``0700`` folder.
- token files (:mod:`tokenfile`), credential files (:mod:`credfile`); ``/v1/events`` is
  :mod:`events`, answered by :class:`api.Api`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
from pathlib import Path

from . import config, credfile, fsutil, tokenfile
from .api import Api
from .paths import Paths
from .refresh import Daemon

log = logging.getLogger("coactive_credd")

SHARED_DIR_MODE = 0o711
SHARED_SOCKET_MODE = 0o666


def socket_shared(paths: Paths) -> bool:
    """Does the config name other uids that must reach the socket? (Read before binding.)"""
    try:
        return bool(config.load(paths.config_file).daemon.allowed_uids)
    except config.ConfigError:
        return False  # the daemon refuses to start a moment later, saying why


def ensure_socket_dir(folder: Path, shared: bool) -> None:
    """The socket's folder: private (0700), or, shared, 0711: others may pass through to the
    socket but not list the folder or put anything in it. Raises InsecurePathError."""
    if not shared:
        fsutil.ensure_private_dir(folder)
        return
    with contextlib.suppress(FileExistsError):
        os.makedirs(folder, SHARED_DIR_MODE)
    st = os.lstat(folder)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        raise fsutil.InsecurePathError(
            folder, "not a folder of the daemon's uid", f"rm -r {folder}  # then start again"
        )
    os.chmod(folder, SHARED_DIR_MODE)


class Extras:
    """Token files and credential-file watching for one daemon; ``start`` once it serves,
    ``close`` before the server stops (ends the event streams, removes the token files)."""

    def __init__(self, daemon: Daemon, api: Api) -> None:
        self.d = daemon
        self.api = api
        self.files = tokenfile.TokenFiles(daemon)
        self.creds = credfile.CredentialWatch(daemon)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        uids = self.d.cfg.daemon.allowed_uids
        if uids:
            log.info(
                "allowed_uids: uid(s) %s may use the socket besides uid %d",
                ", ".join(map(str, sorted(uids))),
                os.geteuid(),
            )
        self.files.start()
        self._task = asyncio.create_task(self.creds.run())

    async def close(self) -> None:
        self.api.events.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.files.close()
