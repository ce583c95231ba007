"""Credentials read from a file: a mounted Kubernetes Secret or a systemd credential.

A profile with ``credential_file`` takes its personal token or client secret from the first
line of that file instead of from the vault, so a container needs no ``login`` and no vault
key. The daemon looks at the file every :data:`POLL` seconds and re-reads it when it changed:
Kubernetes replaces a mounted Secret by swapping the ``..data`` symlink to a new folder, so
the file's resolved inode changes; a rewritten file changes its size or mtime.

Such files are legitimately symlinks owned by root (the kubelet writes them; systemd's
``$CREDENTIALS_DIRECTORY`` is root's too), so the private-file rule for the daemon's own files
(a regular file of the daemon's uid, mode 0600) cannot apply. The rule here is
:mod:`safeopen`'s: every folder on the way, every symlink met while resolving the path (at
any depth) and the file itself belong to root or to the daemon's uid, and no folder or file
is writable by group or others (root-owned sticky folders excepted, as Kubernetes' tmpfs
mounts are). Then only root or the daemon's own user can change what is read. The file is
opened once, without blocking, and read from that descriptor; the watcher reads it in a
thread. Reading it is the administrator's choice (a Secret's ``defaultMode``);
docs/KUBERNETES.md recommends 0400/0440.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import TYPE_CHECKING, Protocol

from coactive_credd.core import safeopen
from coactive_credd.core.errors import CreddError
from coactive_credd.vault import ProfileSecrets

if TYPE_CHECKING:
    from pathlib import Path

    from coactive_credd.core.config import Config, ProfileConfig

log = logging.getLogger("coactive_credd")

POLL = 2.0  # seconds between looks at each credential file (a stat, no read)
MAX_SIZE = 64 * 1024


CREDENTIALS_PREFIX = "$CREDENTIALS_DIRECTORY/"


class CredentialFileError(CreddError):
    """The credential file cannot be used; the message names it and says how to fix it.

    ``pending``: the file is missing or empty, as it briefly is while a writer that is not
    atomic replaces it. A daemon that holds a credential from it keeps using that one."""

    def __init__(self, message: str, *, pending: bool = False) -> None:
        super().__init__(message)
        self.pending = pending


def resolve(path: str) -> str:
    """``path`` with a leading ``$CREDENTIALS_DIRECTORY/`` replaced by the folder systemd
    gives a service's credentials (``LoadCredential=``, systemd.exec(5)).

    Raises :class:`CredentialFileError` when that variable is not set."""
    if not path.startswith(CREDENTIALS_PREFIX):
        return path
    folder = os.environ.get("CREDENTIALS_DIRECTORY")
    if not folder or not folder.startswith("/"):
        raise CredentialFileError(
            f"credential_file {path}: $CREDENTIALS_DIRECTORY is not set; run the daemon as a "
            f"systemd service with LoadCredential=NAME:/path, or give an absolute path"
        )
    return os.path.join(folder, path[len(CREDENTIALS_PREFIX) :])


def open_checked(path: str) -> int:
    """:func:`safeopen.open_checked` for a credential file: a read-only descriptor on its
    regular file, every hop checked. Raises :class:`CredentialFileError`."""
    try:
        return safeopen.open_checked(path, "credential_file")
    except safeopen.SafeOpenError as exc:
        raise CredentialFileError(str(exc), pending=exc.pending) from None


def check(path: str) -> None:
    """Refuse ``path`` unless only root or the daemon's uid can change what it holds
    (:func:`open_checked`, closed again). Raises :class:`CredentialFileError`."""
    os.close(open_checked(path))


def _read_fd(fd: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size <= MAX_SIZE:
        chunk = os.read(fd, MAX_SIZE + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


# Results read off the event loop by CredentialWatch, consumed by the reload that follows.
_prefetched: dict[str, str | CredentialFileError] = {}


def read(path: str) -> str:
    """The credential in ``path``: its first line, stripped, read from the one descriptor
    :func:`open_checked` gave. Never says what it holds.

    Raises :class:`CredentialFileError`."""
    if path in _prefetched:
        got = _prefetched.pop(path)
        if isinstance(got, CredentialFileError):
            raise got
        return got
    return _read(path)


def _read(path: str) -> str:
    path = resolve(path)
    fd = open_checked(path)
    try:
        raw = _read_fd(fd)
    except OSError as exc:
        raise CredentialFileError(f"cannot read credential_file {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    if len(raw) > MAX_SIZE:
        raise CredentialFileError(f"credential_file {path} is larger than {MAX_SIZE} bytes")
    try:
        line = raw.decode("utf-8").split("\n", 1)[0].strip()
    except UnicodeDecodeError:
        line = ""
    if not raw.strip():
        raise CredentialFileError(
            f"credential_file {path} is empty; put the personal token or client secret in it",
            pending=True,
        )
    if not line or any(ord(c) < 0x21 or ord(c) == 0x7F for c in line):
        raise CredentialFileError(
            f"credential_file {path} must hold the personal token or client secret on one line"
        )
    return line


def prefetch(paths: list[str]) -> dict[str, str | CredentialFileError]:
    """Read each of ``paths`` (blocking I/O: run it in a thread)."""
    out: dict[str, str | CredentialFileError] = {}
    for path in paths:
        try:
            out[path] = _read(path)
        except CredentialFileError as exc:
            out[path] = exc
    return out


def fix_hint(pc: ProfileConfig) -> str | None:
    """What fixes rejected credentials of a ``credential_file`` profile (the file, not a
    ``login``); None for a profile whose credentials are in the vault."""
    if pc.credential_file is None:
        return None
    what = "client secret" if pc.auth == "client_credentials" else "personal token"
    return (
        f"put a valid {what} in credential_file {pc.credential_file} (update the Secret or "
        f"credential mounted there); the daemon reads it again when it changes"
    )


def uses_vault(cfg: Config, vault_file: Path) -> bool:
    """Does the daemon keep anything in its vault? Not when every profile reads a
    ``credential_file`` and no vault was ever written."""
    return vault_file.exists() or any(pc.credential_file is None for pc in cfg.profiles.values())


def secrets(
    pc: ProfileConfig, stored: ProfileSecrets | None
) -> tuple[ProfileSecrets | None, CredentialFileError | None]:
    """A profile's secrets: from its credential_file when it has one, else ``stored`` (the
    vault's). The second item says why a credential file could not be used."""
    if pc.credential_file is None:
        return stored, None
    try:
        secret = read(pc.credential_file)
    except CredentialFileError as exc:
        log.error("profile=%s %s", pc.name, exc)
        return None, exc
    return ProfileSecrets(secret=secret, client_id=pc.client_id), None


Signature = tuple[str, int, int, int, int, int]


def signature(path: str) -> Signature | None:
    """What changes when the file is replaced, rewritten or re-permissioned (ctime)."""
    try:
        path = resolve(path)
        st = os.stat(path)
    except (OSError, CredentialFileError):
        return None
    return (
        os.path.realpath(path),
        st.st_dev,
        st.st_ino,
        st.st_size,
        st.st_mtime_ns,
        st.st_ctime_ns,
    )


class Reloadable(Protocol):
    """What :class:`CredentialWatch` needs of the daemon: its config, and a reload."""

    @property
    def cfg(self) -> Config: ...

    def reload(self) -> None: ...


class CredentialWatch:
    """Re-reads the daemon's credential files when they change (a rotated Secret)."""

    def __init__(self, daemon: Reloadable, poll: float = POLL) -> None:
        self.d = daemon
        self.poll = poll
        self.seen = self._signatures()

    def _signatures(self) -> dict[str, Signature | None]:
        return {
            pc.credential_file: signature(pc.credential_file)
            for pc in self.d.cfg.profiles.values()
            if pc.credential_file
        }

    async def look(self) -> bool:
        """Reload the daemon if a credential file changed; True if it did. The files are
        looked at and read in a thread: the event loop never waits on them."""
        now = await asyncio.to_thread(self._signatures)
        if now == self.seen:
            return False
        changed = sorted(p for p in now if now[p] != self.seen.get(p))
        self.seen = now
        if changed:
            log.info("credential file(s) changed: %s; reading them again", ", ".join(changed))
            wanted = [
                pc.credential_file for pc in self.d.cfg.profiles.values() if pc.credential_file
            ]
            _prefetched.update(await asyncio.to_thread(prefetch, wanted))
            try:
                self.d.reload()
            finally:
                _prefetched.clear()
            self.seen = await asyncio.to_thread(self._signatures)  # the config may name others
        return bool(changed)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.poll)
            await self.look()
