"""Token files: the current access token kept in a file, for programs that read one.

A profile with ``token_file`` gets its current token written there (the bare token, no
newline, as Kubernetes' projected service-account tokens and Vault Agent's file sink do)
each time the token is replaced, atomically: a temporary file in the same folder, then
``rename``, so a reader sees the old token or the new one, never a part. The file's mode is
``token_file_mode`` (default 0600); its group is the daemon's group, so ``0640`` shares it
with the containers of a pod that run with the same ``runAsGroup``.

No stale token is ever left there: the file is **removed** (not emptied) as soon as the
profile has no token that may be served (expired, re-login needed, vault locked), at
``logout`` and when the daemon stops. Removing says "no token" unambiguously: a reader gets
``ENOENT`` and falls back to the socket or waits, where an empty file would be read by many
libraries as an empty bearer token and sent to Coactive. After a crash (``kill -9``) the file
keeps a token that was valid; it expires on its own, and the next start replaces or removes it.

The folder must be the daemon's own (created ``0700``, or ``0711`` when the mode lets group
or others read, if it is missing) and writable by nobody else; it is opened once per write
with ``O_NOFOLLOW`` and every operation is relative to that descriptor, so a folder above it
that others can write (a Kubernetes ``emptyDir`` is ``0777``) cannot redirect the write.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path


class TokenFileError(Exception):
    """The token file's folder cannot be used; the message says why and how to fix it."""


def _open_folder(folder: Path, mode: int) -> int:
    """A descriptor on ``folder`` (created if missing), refused unless it is ours and
    writable by nobody else. Raises :class:`TokenFileError`."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(folder, flags)
    except FileNotFoundError:
        with contextlib.suppress(FileExistsError):
            os.mkdir(folder, 0o711 if mode & 0o044 else 0o700)
        fd = os.open(folder, flags)
    except OSError as exc:
        raise TokenFileError(f"cannot open the folder {folder}: {exc.strerror}") from None
    st = os.fstat(fd)
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        os.close(fd)
        raise TokenFileError(
            f"the folder {folder} (owner uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o}) "
            f"must be the daemon's (uid {os.geteuid()}) and writable by nobody else; "
            f"use a folder of its own, e.g. {folder}/coactive, or `chmod go-w {folder}`"
        )
    return fd


def write(path: Path, token: str, mode: int = 0o600) -> None:
    """Replace ``path`` with ``token``, atomically, with ``mode``.

    Raises :class:`TokenFileError` or :class:`OSError`; on failure ``path`` is left as it was."""
    dfd = _open_folder(path.parent, mode)
    try:
        tmp = f".{path.name}.{os.urandom(6).hex()}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(tmp, flags, mode, dir_fd=dfd)
        try:
            try:
                os.fchmod(fd, mode)  # the umask must not change the mode asked for
                os.write(fd, token.encode())
            finally:
                os.close(fd)
            os.replace(tmp, path.name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dfd)
            raise
    finally:
        os.close(dfd)


def remove(path: Path) -> None:
    """Remove ``path`` if it is there (a missing folder or file is not an error)."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        dfd = os.open(path.parent, flags)
    except OSError:
        return
    try:
        if os.fstat(dfd).st_uid == os.geteuid():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path.name, dir_fd=dfd)
    finally:
        os.close(dfd)
