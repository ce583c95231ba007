"""Files on disk: the "safe path" rule, atomic writes, and an exclusive file lock.

Every file that holds a credential, a key or a lock lives in a folder only its owner can
enter (0700) and is itself readable only by its owner (0600). A file that is looser, owned
by someone else, or a symlink is refused with :class:`InsecurePathError`, whose message
names the path, what is wrong and the command that fixes it.

Above them, every folder up to the home folder (or ``/``) follows the safe-path rule of
OpenSSH's ``safe_path``: owned by the user or root and writable by nobody else, root-owned
sticky folders such as ``/tmp`` excepted (:func:`check_safe_parents`). Files the product
only reads (``config.toml``) follow the same rule (:func:`check_safe_file`). The rule itself
is :func:`coactive_token.path_problem`, shared with every client.
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

import coactive_token

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
_TEMP_TOKEN_BYTES = 6  # atomic_write's temporaries: .NAME.<12 hex digits>.tmp


class InsecurePathError(Exception):
    """A file or folder that should be private is not: too open, foreign, or a symlink."""

    def __init__(self, path: Path, problem: str, fix: str, *, kind: str = "private") -> None:
        self.path = path
        self.problem = problem
        self.fix = fix
        super().__init__(f"{path} is not {kind} ({problem}); fix it with `{fix}`")


def check_safe_parents(path: Path) -> None:
    """Refuse ``path`` when a folder above it breaks the safe-path rule (see the module
    docstring): every existing folder up to the home folder (included) or ``/``, as written
    and with symlinks resolved. Raises :class:`InsecurePathError` naming that folder."""
    bad = coactive_token.unsafe_parent(str(path), coactive_token.trusted_uids(daemon=False))
    if bad is not None:
        folder, problem, fix = bad
        raise InsecurePathError(Path(folder), problem, fix, kind="safe")


def check_safe_file(path: Path, st: os.stat_result | None = None) -> None:
    """Refuse a file the product reads but others could have written: a symlink, not a
    regular file, owned by neither the user nor root, writable by group or others, or in a
    folder (or below folders) that breaks the safe-path rule. ``st`` is the file's
    ``fstat`` when the caller opened it already (``O_NOFOLLOW``), else it is ``lstat``-ed.
    Raises FileNotFoundError if it does not exist, :class:`InsecurePathError` otherwise."""
    st = st if st is not None else os.lstat(path)
    problem = coactive_token.path_problem(str(path), st, coactive_token.trusted_uids(daemon=False))
    if problem is None and not stat.S_ISREG(st.st_mode):
        quoted = shlex.quote(str(path))
        problem = ("it is not a regular file", f"mv {quoted} {quoted}.bak")
    if problem is not None:
        raise InsecurePathError(path, *problem, kind="safe")
    folder = path.parent
    problem = coactive_token.path_problem(
        str(folder), os.lstat(folder), coactive_token.trusted_uids(daemon=False)
    )
    if problem is not None:
        raise InsecurePathError(folder, *problem, kind="safe")
    check_safe_parents(folder)


def open_nofollow(path: Path, flags: int, mode: int = 0o600) -> int:
    """``os.open`` that never follows a symlink at ``path`` (``O_NOFOLLOW``, ``O_CLOEXEC``):
    a symlink is refused with :class:`InsecurePathError`, other errors are the OSError."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as exc:
        if os.path.islink(path):
            raise InsecurePathError(
                path, "it is a symlink", f"rm {shlex.quote(str(path))}"
            ) from exc
        raise


def open_lock_file(path: Path) -> int:
    """Open (creating 0600 if missing) a lock file of ours: never through a symlink, and
    refused unless it is a private regular file (:class:`InsecurePathError`). Returns the
    descriptor; the caller closes it."""
    fd = open_nofollow(path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE_MODE)
    try:
        _check_private(path, os.fstat(fd), want_dir=False)
    except BaseException:
        os.close(fd)
        raise
    return fd


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

    Parents that already exist are left alone, but must follow the safe-path rule
    (:func:`check_safe_parents`): nothing is created inside a folder others can write to.
    Only the folders created here and `path` itself must be private.
    """
    check_safe_parents(path)
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
    if missing:  # a folder someone else made meanwhile (FileExistsError above) is caught here
        check_safe_parents(path)


def check_private_dir(path: Path) -> None:
    """Refuse `path` unless it is a folder (not a symlink) of ours with mode 0700 or
    stricter, below folders that follow the safe-path rule. Raises FileNotFoundError if it
    does not exist."""
    _check_private(path, os.lstat(path), want_dir=True)
    check_safe_parents(path)


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
    fd = open_lock_file(lock_path)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
