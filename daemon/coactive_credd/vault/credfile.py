"""Credentials read from a file: a mounted Kubernetes Secret or a systemd credential.

A profile with ``credential_file`` takes its personal token or client secret from the first
line of that file instead of from the vault, so a container needs no ``login`` and no vault
key. The daemon looks at the file every :data:`POLL` seconds and re-reads it when it changed:
Kubernetes replaces a mounted Secret by swapping the ``..data`` symlink to a new folder, so
the file's resolved inode changes; a rewritten file changes its size or mtime.

Such files are legitimately symlinks owned by root (the kubelet writes them; systemd's
``$CREDENTIALS_DIRECTORY`` is root's too), so the private-file rule for the daemon's own files
(a regular file of the daemon's uid, mode 0600) cannot apply. The rule here: every folder on
the way, before and after resolving symlinks, and the file itself belong to root or to the
daemon's uid and are not writable by group or others (root-owned sticky folders excepted, as
Kubernetes' tmpfs mounts are), and every symlink on the way belongs to root or the daemon's
uid. Then only root or the daemon's own user can change what is read. Reading it is the
administrator's choice (a Secret's ``defaultMode``); docs/KUBERNETES.md recommends 0400/0440.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from coactive_credd.vault import ProfileSecrets

if TYPE_CHECKING:
    from coactive_credd.core.config import ProfileConfig
    from coactive_credd.server.refresh import Daemon

log = logging.getLogger("coactive_credd")

POLL = 2.0  # seconds between looks at each credential file (a stat, no read)
MAX_SIZE = 64 * 1024


CREDENTIALS_PREFIX = "$CREDENTIALS_DIRECTORY/"


class CredentialFileError(Exception):
    """The credential file cannot be used; the message names it and says how to fix it."""


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


def _trusted_owner(st: os.stat_result) -> bool:
    return st.st_uid in (0, os.geteuid())


def _check_folder(folder: str, st: os.stat_result) -> None:
    if not stat.S_ISDIR(st.st_mode):
        raise CredentialFileError(f"{folder} is not a folder")
    sticky_root = st.st_uid == 0 and st.st_mode & stat.S_ISVTX
    if not _trusted_owner(st) or (st.st_mode & 0o022 and not sticky_root):
        raise CredentialFileError(
            f"{folder} (owner uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o}) could be "
            f"changed by another user; make it root's or yours and `chmod go-w {folder}`"
        )


def check(path: str) -> None:
    """Refuse ``path`` unless only root or the daemon's uid can change what it holds.

    Raises :class:`CredentialFileError` (also for a missing file)."""
    try:
        parts = Path(path).parts
        prefix = parts[0]
        for part in parts[1:]:
            _check_folder(prefix, os.stat(prefix))
            prefix = os.path.join(prefix, part)
            lst = os.lstat(prefix)
            if stat.S_ISLNK(lst.st_mode) and not _trusted_owner(lst):
                raise CredentialFileError(
                    f"{prefix} is a symlink of uid {lst.st_uid}; only root's or yours are followed"
                )
        real = os.path.realpath(path)
        for folder in list(Path(real).parents)[::-1]:
            _check_folder(str(folder), os.stat(folder))
        st = os.stat(real)
    except FileNotFoundError:
        raise CredentialFileError(
            f"credential_file {path} does not exist; mount the Secret there or fix the path in config.toml"
        ) from None
    except OSError as exc:
        raise CredentialFileError(f"cannot check credential_file {path}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise CredentialFileError(f"credential_file {path} is not a regular file")
    if not _trusted_owner(st) or st.st_mode & 0o022:
        raise CredentialFileError(
            f"credential_file {path} (owner uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o}) "
            f"could be changed by another user; make it root's or yours, `chmod go-w`"
        )


def read(path: str) -> str:
    """The credential in ``path``: its first line, stripped. Never says what it holds.

    Raises :class:`CredentialFileError`."""
    path = resolve(path)
    check(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_SIZE + 1)
    except OSError as exc:
        raise CredentialFileError(f"cannot read credential_file {path}: {exc.strerror}") from None
    if len(raw) > MAX_SIZE:
        raise CredentialFileError(f"credential_file {path} is larger than {MAX_SIZE} bytes")
    try:
        line = raw.decode("utf-8").split("\n", 1)[0].strip()
    except UnicodeDecodeError:
        line = ""
    if not line or any(ord(c) < 0x21 or ord(c) == 0x7F for c in line):
        raise CredentialFileError(
            f"credential_file {path} must hold the personal token or client secret on one line"
        )
    return line


def secrets(
    pc: ProfileConfig, stored: ProfileSecrets | None
) -> tuple[ProfileSecrets | None, str | None]:
    """A profile's secrets: from its credential_file when it has one, else ``stored`` (the
    vault's). The second item says why a credential file could not be used."""
    if pc.credential_file is None:
        return stored, None
    try:
        secret = read(pc.credential_file)
    except CredentialFileError as exc:
        log.error("profile=%s %s", pc.name, exc)
        return None, str(exc)
    return ProfileSecrets(secret=secret, client_id=pc.client_id), None


Signature = tuple[str, int, int, int, int, int]


def _signature(path: str) -> Signature | None:
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


class CredentialWatch:
    """Re-reads the daemon's credential files when they change (a rotated Secret)."""

    def __init__(self, daemon: Daemon, poll: float = POLL) -> None:
        self.d = daemon
        self.poll = poll
        self.seen = self._signatures()

    def _signatures(self) -> dict[str, Signature | None]:
        return {
            pc.credential_file: _signature(pc.credential_file)
            for pc in self.d.cfg.profiles.values()
            if pc.credential_file
        }

    def look(self) -> bool:
        """Reload the daemon if a credential file changed; True if it did."""
        now = self._signatures()
        if now == self.seen:
            return False
        changed = sorted(p for p in now if now[p] != self.seen.get(p))
        self.seen = now
        if changed:
            log.info("credential file(s) changed: %s; reading them again", ", ".join(changed))
            self.d.reload()
            self.seen = self._signatures()  # the config may name other files now
        return bool(changed)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.poll)
            self.look()
