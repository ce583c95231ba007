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
import hashlib
import logging
import os
import stat
from pathlib import Path

from coactive_credd.core import config, engine, fsutil, tokenfile
from coactive_credd.core.paths import Paths
from coactive_credd.server.api import Api
from coactive_credd.server.refresh import Daemon
from coactive_credd.vault import credfile

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
    # Shared (allowed_uids): the folder may sit in a pod's emptyDir, which the kubelet makes
    # 0777 and root's; the folder above is not checked here. Each client checks this folder
    # and asks the kernel who answers (docs/SECURITY.md), which a swapped folder cannot pass.
    with contextlib.suppress(FileExistsError):
        os.makedirs(folder, SHARED_DIR_MODE)
    st = os.lstat(folder)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        raise fsutil.InsecurePathError(
            folder, "not a folder of the daemon's uid", f"rm -r {folder}  # then start again"
        )
    os.chmod(folder, SHARED_DIR_MODE)


class TokenFiles:
    """Keeps every profile's ``token_file`` in step with its token (see :mod:`tokenfile`)."""

    def __init__(self, daemon: Daemon) -> None:
        self.d = daemon
        self.written: dict[Path, str | None] = {}  # path -> sha256 written, None = removed
        self._errors: dict[Path, str] = {}
        self._task: asyncio.Task[None] | None = None
        daemon.watchers.append(self.sync)

    def start(self) -> None:
        self.sync()
        self._task = asyncio.create_task(self._expiry())

    def _wanted(self) -> dict[Path, tuple[str, int] | None]:
        now = self.d.clock()
        wanted: dict[Path, tuple[str, int] | None] = {}
        for p in self.d.profiles.values():
            if not p.cfg.token_file:
                continue
            tok = p.rt.token
            usable = (
                tok is not None
                and not self.d.locked
                and engine.servable(tok, now, self.d.policy, boot=self.d.boot_clock())
            )
            wanted[Path(p.cfg.token_file)] = (
                (tok.access_token, p.cfg.token_file_mode) if usable and tok else None
            )
        return wanted

    def sync(self) -> None:
        """Write new tokens, remove files whose token may no longer be served."""
        wanted = self._wanted()
        for path in [p for p in self.written if p not in wanted]:  # logout, config change
            self._remove(path)
            del self.written[path]
        for path, want in wanted.items():
            if want is None:
                if self.written.get(path, "") is not None:
                    self._remove(path)
                    self.written[path] = None
                continue
            token, mode = want
            sha = hashlib.sha256(f"{mode}\0{token}".encode()).hexdigest()
            if self.written.get(path) == sha:
                continue
            try:
                tokenfile.write(path, token, mode)
            except (tokenfile.TokenFileError, OSError) as exc:
                msg = str(exc) if isinstance(exc, tokenfile.TokenFileError) else f"{exc.strerror}"
                if self._errors.get(path) != msg:  # once per problem, not once per rotation
                    log.error("cannot write the token file %s: %s", path, msg)
                    self._errors[path] = msg
                continue
            self._errors.pop(path, None)
            self.written[path] = sha

    def _remove(self, path: Path) -> None:
        try:
            tokenfile.remove(path)
        except OSError as exc:
            log.error("cannot remove the token file %s: %s", path, exc.strerror)

    async def _expiry(self) -> None:
        """Remove a file the moment its token stops being servable, if no new one came."""
        while True:
            now = self.d.clock()
            dues = [
                engine.usable_until(p.rt.token, self.d.policy)
                for p in self.d.profiles.values()
                if p.cfg.token_file and p.rt.token is not None
            ]
            future = [d - now for d in dues if d > now]
            await asyncio.sleep(min([30.0, *future]) + 0.01)
            self.sync()

    def close(self) -> None:
        """At stop: remove every token file (no token outlives the daemon that serves it)."""
        if self._task is not None:
            self._task.cancel()
        with contextlib.suppress(ValueError):
            self.d.watchers.remove(self.sync)
        paths = set(self.written) | {
            Path(p.cfg.token_file) for p in self.d.profiles.values() if p.cfg.token_file
        }
        for path in paths:
            self._remove(path)
        self.written.clear()


class Extras:
    """Token files and credential-file watching for one daemon; ``start`` once it serves,
    ``close`` before the server stops (ends the event streams, removes the token files)."""

    def __init__(self, daemon: Daemon, api: Api) -> None:
        self.d = daemon
        self.api = api
        self.files = TokenFiles(daemon)
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
