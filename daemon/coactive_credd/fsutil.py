"""Private files on disk: owner and mode checks, atomic writes, and an exclusive file lock.

Every file that holds a credential, a key or a lock lives in a folder only its owner can
enter (0700) and is itself readable only by its owner (0600). A file that is looser, owned
by someone else, or a symlink is refused with :class:`InsecurePathError`, whose message
names the path, what is wrong and the command that fixes it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import secrets
import shlex
import stat
from collections.abc import Iterator
from pathlib import Path

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
_TEMP_TOKEN_BYTES = 6  # atomic_write's temporaries: .NAME.<12 hex digits>.tmp


class InsecurePathError(Exception):
    """A file or folder that should be private is not: too open, foreign, or a symlink."""

    def __init__(self, path: Path, problem: str, fix: str) -> None:
        self.path = path
        self.problem = problem
        self.fix = fix
        super().__init__(f"{path} is not private ({problem}); fix it with `{fix}`")


def _owner_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _check_private(path: Path, st: os.stat_result, *, want_dir: bool) -> None:
    """Refuse `st` (from lstat) unless it is a private file or folder of ours."""
    quoted = shlex.quote(str(path))
    kind = "folder" if want_dir else "file"
    if stat.S_ISLNK(st.st_mode):
        raise InsecurePathError(
            path, "it is a symlink", f"rm {quoted}  # then let coactive-credd create the {kind}"
        )
    if want_dir and not stat.S_ISDIR(st.st_mode):
        raise InsecurePathError(path, "it is not a folder", f"mv {quoted} {quoted}.bak")
    if not want_dir and not stat.S_ISREG(st.st_mode):
        raise InsecurePathError(path, "it is not a regular file", f"mv {quoted} {quoted}.bak")
    euid = os.geteuid()
    if st.st_uid != euid:
        raise InsecurePathError(
            path,
            f"owner uid {st.st_uid}, expected uid {euid}",
            f"sudo chown {_owner_name(euid)} {quoted}",
        )
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        want = PRIVATE_DIR_MODE if want_dir else PRIVATE_FILE_MODE
        raise InsecurePathError(path, f"mode {mode:04o}", f"chmod {want:o} {quoted}")


def ensure_private_dir(path: Path) -> None:
    """Create `path` (and any missing parents) with mode 0700, or check the existing folder.

    Parents that already exist are left alone; only the folders created here and `path`
    itself must be private.
    """
    missing: list[Path] = []
    probe = path
    while not os.path.lexists(probe):
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another process created it just now
            os.mkdir(folder, PRIVATE_DIR_MODE)
            # mkdir's mode is filtered by the umask; a private folder must not depend on it.
            os.chmod(folder, PRIVATE_DIR_MODE)
    _check_private(path, os.lstat(path), want_dir=True)


def check_private_dir(path: Path) -> None:
    """Refuse `path` unless it is a folder (not a symlink) of ours with mode 0700 or
    stricter. Raises FileNotFoundError if it does not exist."""
    _check_private(path, os.lstat(path), want_dir=True)


def check_private_file(path: Path) -> None:
    """Refuse `path` unless it is a regular file (not a symlink) of ours with mode 0600 or
    stricter. Raises FileNotFoundError if it does not exist."""
    _check_private(path, os.lstat(path), want_dir=False)


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (a rename or unlink in it) to disk."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, mode: int = PRIVATE_FILE_MODE) -> None:
    """Replace `path` with `data` so that readers see either the old or the new content.

    The data goes to a fresh temporary file in the same folder, is flushed to disk, then
    renamed over `path`; the folder is flushed so the rename survives a power cut. On any
    failure the temporary file is removed and `path` is left as it was.
    """
    folder = path.parent
    tmp = folder / f".{path.name}.{secrets.token_hex(_TEMP_TOKEN_BYTES)}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, mode)
    try:
        try:
            os.fchmod(fd, mode)  # the umask must not loosen (or tighten) the mode asked for
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(folder)


def remove_stale_temps(path: Path) -> int:
    """Remove the temporary files :func:`atomic_write` left beside `path` when a process
    writing it died (kill -9, power cut) between creating and renaming them.

    Call it only while holding the lock every writer of `path` takes: then no write is in
    flight and each such file is garbage. Without it, each crash mid-write would leave one
    more copy of the encrypted file behind, for ever. Returns how many were removed.
    """
    prefix, removed = f".{path.name}.", 0
    try:
        names = os.listdir(path.parent)
    except FileNotFoundError:
        return 0
    for name in names:
        middle = name[len(prefix) : -len(".tmp")]
        if (
            name.startswith(prefix)
            and name.endswith(".tmp")
            and len(middle) == 2 * _TEMP_TOKEN_BYTES
            and all(c in "0123456789abcdef" for c in middle)
        ):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path.parent / name)
                removed += 1
    return removed


@contextlib.contextmanager
def locked(lock_path: Path, *, shared: bool = False) -> Iterator[None]:
    """Hold an exclusive (or, with `shared`, a shared) flock on `lock_path` for the block.

    The lock file is created 0600 if missing and is never removed: removing it would let
    two processes lock two different files of the same name.
    """
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(lock_path, flags, PRIVATE_FILE_MODE)
    except OSError as exc:
        if os.path.islink(lock_path):
            raise InsecurePathError(
                lock_path, "it is a symlink", f"rm {shlex.quote(str(lock_path))}"
            ) from exc
        raise
    try:
        _check_private(lock_path, os.fstat(fd), want_dir=False)
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
