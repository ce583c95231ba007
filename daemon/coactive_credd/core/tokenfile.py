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

The folder must be the daemon's own and writable by nobody else. Missing folders are created
with exactly the mode the file's readers need, whatever the daemon's umask (:func:`dir_mode`:
``0700``, ``0710`` for a group-readable file, ``0711`` for one others may read). It is opened
once per write with ``O_NOFOLLOW`` and every operation is relative to that descriptor. Every
folder above it passes the safe-path rule (:func:`coactive_token.path_problem`): a folder
another uid could write could swap the daemon's folder for one holding a token of its
choosing. The one exception, documented in docs/KUBERNETES.md: the folder just above the
token file's folder may be root's and writable by others, as a pod's ``emptyDir`` is (the
kubelet makes it ``0777``), since every container of a pod shares it.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

import coactive_token

from coactive_credd.core.errors import CreddError


class TokenFileError(CreddError):
    """The token file's folder cannot be used; the message says why and how to fix it."""


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def dir_mode(file_mode: int) -> int:
    """The mode of a folder made for a file of ``file_mode``: the owner's, plus search
    (``x``) for the group and for others exactly when they may read the file."""
    return 0o700 | (0o010 if file_mode & 0o040 else 0) | (0o001 if file_mode & 0o004 else 0)


def make_dirs(folder: Path, mode: int) -> None:
    """Create ``folder`` and any missing folder above it, each with exactly ``mode`` (the
    umask does not narrow it). Folders already there are left as they are. Raises OSError."""
    missing: list[Path] = []
    d = folder
    while not os.path.lexists(d) and d != d.parent:
        missing.append(d)
        d = d.parent
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(d, 0o700)
            fd = os.open(d, _DIR_FLAGS)
            try:
                if os.fstat(fd).st_uid == os.geteuid():
                    os.fchmod(fd, mode)
            finally:
                os.close(fd)


def check_above(folder: Path) -> None:
    """Refuse ``folder`` when a folder above it (as written and resolved) breaks the
    safe-path rule, the ``emptyDir`` exception of the module docstring aside.
    Raises :class:`TokenFileError`."""
    trusted = frozenset({0, os.geteuid()})
    for chain in (folder, Path(os.path.realpath(folder))):
        for i, d in enumerate(chain.parents):
            try:
                st = os.stat(d)
            except FileNotFoundError:
                continue  # made below, ours
            except OSError as exc:
                raise TokenFileError(f"cannot check the folder {d}: {exc.strerror}") from None
            problem = coactive_token.path_problem(str(d), st, trusted)
            if problem is None or (i == 0 and st.st_uid == 0 and stat.S_ISDIR(st.st_mode)):
                continue
            raise TokenFileError(
                f"the folder {d} above {folder} ({problem[0]}) would let another user swap "
                f"the token file's folder; fix it with `{problem[1]}`, or use another token_file"
            )


def _open_folder(folder: Path, mode: int) -> int:
    """A descriptor on ``folder`` (created if missing), refused unless it is ours and
    writable by nobody else and the folders above it are safe. Raises :class:`TokenFileError`."""
    check_above(folder)
    try:
        fd = os.open(folder, _DIR_FLAGS)
    except FileNotFoundError:
        try:
            make_dirs(folder, dir_mode(mode))
            fd = os.open(folder, _DIR_FLAGS)
        except OSError as exc:
            raise TokenFileError(f"cannot make the folder {folder}: {exc.strerror}") from None
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
