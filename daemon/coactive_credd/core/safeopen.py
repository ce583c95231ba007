"""Opening a file others may legitimately have put behind symlinks (a mounted Kubernetes
Secret or ConfigMap, a systemd credential), once and safely.

The rule is who can change what is read: every folder on the way, every symlink met while
resolving the path (at any depth: the path is resolved one name at a time, each symlink
checked before it is followed), and the file itself belong to root or to this process's
uid, and no folder or file is writable by group or others (root-owned sticky folders
excepted, as Kubernetes' tmpfs mounts are). The file is opened once, ``O_NONBLOCK |
O_NOFOLLOW`` (a FIFO cannot stall the caller), checked on its descriptor (a regular file,
the entry that was looked at) and read from it. Standard library only.
"""

from __future__ import annotations

import os
import stat

from coactive_credd.core.errors import CreddError


class SafeOpenError(CreddError):
    """The file cannot be used; the message names it and says why.

    ``pending``: it is missing (or changed while it was checked), as it briefly is while a
    writer that is not atomic, or the kubelet, replaces it."""

    def __init__(self, message: str, *, pending: bool = False) -> None:
        super().__init__(message)
        self.pending = pending


def _trusted_owner(st: os.stat_result) -> bool:
    return st.st_uid in (0, os.geteuid())


def _check_folder(folder: str, st: os.stat_result) -> None:
    if not stat.S_ISDIR(st.st_mode):
        raise SafeOpenError(f"{folder} is not a folder")
    sticky_root = st.st_uid == 0 and st.st_mode & stat.S_ISVTX
    if not _trusted_owner(st) or (st.st_mode & 0o022 and not sticky_root):
        raise SafeOpenError(
            f"{folder} (owner uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o}) could be "
            f"changed by another user; make it root's or yours and `chmod go-w {folder}`"
        )


_DIR_FLAGS = getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC
MAX_HOPS = 40  # symlinks followed for one path, as Linux's own limit (path_resolution(7))


def _missing(what: str, path: str) -> SafeOpenError:
    return SafeOpenError(
        f"{what} {path} does not exist; mount the Secret there or fix the path in config.toml",
        pending=True,
    )


def open_checked(path: str, what: str = "credential_file") -> int:
    """A read-only descriptor on ``path``'s regular file, opened once after the rule of the
    module docstring held for every step: resolved one name at a time from ``/``, each
    folder opened (``O_NOFOLLOW``) and checked on its descriptor, each symlink met (at any
    depth, however it was reached) checked before it is followed, the file opened
    ``O_NONBLOCK | O_NOFOLLOW`` (a FIFO cannot stall the open) and checked on its ``fstat``
    (a regular file, the one that was looked at). The caller reads and closes it.

    Raises :class:`SafeOpenError` (``pending`` for a missing file)."""
    if not path.startswith("/"):
        raise SafeOpenError(f"{what} {path} must be an absolute path")
    stack: list[tuple[int, str]] = []
    todo = path.split("/")[::-1]
    hops = 0

    def root() -> None:
        while stack:
            os.close(stack.pop()[0])
        fd = os.open("/", _DIR_FLAGS)
        stack.append((fd, "/"))
        _check_folder("/", os.fstat(fd))

    try:
        root()
        while todo:
            name = todo.pop()
            if name in ("", "."):
                continue
            dfd, where = stack[-1]
            if name == "..":
                if len(stack) > 1:
                    os.close(stack.pop()[0])
                continue
            here = os.path.join(where, name)
            lst = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            if stat.S_ISLNK(lst.st_mode):
                if not _trusted_owner(lst):
                    raise SafeOpenError(
                        f"{here} (met resolving {what} {path}) is a symlink of uid "
                        f"{lst.st_uid}; only root's or yours are followed"
                    )
                hops += 1
                if hops > MAX_HOPS:
                    raise SafeOpenError(f"{what} {path}: too many symlinks")
                target = os.readlink(name, dir_fd=dfd)
                if target.startswith("/"):
                    root()
                todo.extend(target.split("/")[::-1])
                continue
            if any(n not in ("", ".") for n in todo):  # a folder on the way
                fd = os.open(name, _DIR_FLAGS, dir_fd=dfd)
                stack.append((fd, here))
                st = os.fstat(fd)
                if (st.st_dev, st.st_ino) != (lst.st_dev, lst.st_ino):
                    raise SafeOpenError(f"{here} changed while it was checked", pending=True)
                _check_folder(here, st)
                continue
            fd = os.open(name, _FILE_FLAGS, dir_fd=dfd)
            try:
                _check_file(f"{what} {path}", os.fstat(fd), lst)
            except BaseException:
                os.close(fd)
                raise
            return fd
        raise SafeOpenError(f"{what} {path} is not a regular file")
    except FileNotFoundError:
        raise _missing(what, path) from None
    except NotADirectoryError:
        raise SafeOpenError(f"{what} {path}: a folder on the way is a file") from None
    except OSError as exc:
        raise SafeOpenError(f"cannot open {what} {path}: {exc.strerror}") from None
    finally:
        for fd, _ in stack:
            os.close(fd)


def _check_file(name: str, st: os.stat_result, seen: os.stat_result) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise SafeOpenError(f"{name} is not a regular file")
    if (st.st_dev, st.st_ino) != (seen.st_dev, seen.st_ino):
        raise SafeOpenError(f"{name} changed while it was checked", pending=True)
    if not _trusted_owner(st) or st.st_mode & 0o022:
        raise SafeOpenError(
            f"{name} (owner uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o}) "
            f"could be changed by another user; make it root's or yours, `chmod go-w`"
        )
