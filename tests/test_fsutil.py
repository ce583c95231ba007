from __future__ import annotations

import fcntl
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from coactive_credd.core import fsutil
from coactive_credd.core.fsutil import InsecurePathError

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


# --- ensure_private_dir ------------------------------------------------------------------


def test_ensure_private_dir_creates_missing_parents_0700_despite_umask(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "c"
    old = os.umask(0o000)
    try:
        fsutil.ensure_private_dir(target)
    finally:
        os.umask(old)
    for folder in (tmp_path / "a", tmp_path / "a" / "b", target):
        assert mode_of(folder) == 0o700
    fsutil.ensure_private_dir(target)  # an existing private folder is accepted


def test_ensure_private_dir_leaves_existing_parents_alone(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    fsutil.ensure_private_dir(tmp_path / "home")
    assert mode_of(tmp_path) == 0o755


def test_ensure_private_dir_refuses_group_readable_folder(tmp_path: Path) -> None:
    target = tmp_path / "home"
    target.mkdir(mode=0o755)
    target.chmod(0o755)
    with pytest.raises(InsecurePathError) as err:
        fsutil.ensure_private_dir(target)
    msg = str(err.value)
    assert str(target) in msg and "mode 0755" in msg and f"chmod 700 {target}" in msg
    assert mode_of(target) == 0o755  # refused, not silently fixed


def test_ensure_private_dir_refuses_symlink(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    link = tmp_path / "home"
    link.symlink_to(real)
    with pytest.raises(InsecurePathError, match="symlink"):
        fsutil.ensure_private_dir(link)


def test_ensure_private_dir_refuses_a_file(tmp_path: Path) -> None:
    target = tmp_path / "home"
    target.write_bytes(b"")
    with pytest.raises(InsecurePathError, match="not a folder"):
        fsutil.ensure_private_dir(target)


@needs_root
def test_ensure_private_dir_refuses_foreign_owner(tmp_path: Path) -> None:
    target = tmp_path / "home"
    target.mkdir(mode=0o700)
    os.chown(target, 1, 1)
    with pytest.raises(InsecurePathError) as err:
        fsutil.ensure_private_dir(target)
    assert "owner uid 1" in str(err.value) and "chown" in str(err.value)


# --- check_private_file -----------------------------------------------------------------


def test_check_private_file_accepts_0600_and_0400(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"x")
    for mode in (0o600, 0o400):
        f.chmod(mode)
        fsutil.check_private_file(f)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_check_private_file_refuses_loose_modes(tmp_path: Path, mode: int) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"x")
    f.chmod(mode)
    with pytest.raises(InsecurePathError) as err:
        fsutil.check_private_file(f)
    assert f"mode {mode:04o}" in str(err.value) and f"chmod 600 {f}" in str(err.value)


def test_check_private_file_refuses_symlink_even_to_private_file(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.write_bytes(b"x")
    real.chmod(0o600)
    link = tmp_path / "f"
    link.symlink_to(real)
    with pytest.raises(InsecurePathError, match="symlink"):
        fsutil.check_private_file(link)


def test_check_private_file_refuses_folder(tmp_path: Path) -> None:
    with pytest.raises(InsecurePathError, match="not a regular file"):
        fsutil.check_private_file(tmp_path)


@needs_root
def test_check_private_file_refuses_foreign_owner(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"x")
    f.chmod(0o600)
    os.chown(f, 1, 1)
    with pytest.raises(InsecurePathError, match="owner uid 1"):
        fsutil.check_private_file(f)


def test_check_private_file_missing_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        fsutil.check_private_file(tmp_path / "nope")


# --- atomic_write -----------------------------------------------------------------------


def test_atomic_write_creates_with_mode_despite_umask(tmp_path: Path) -> None:
    f = tmp_path / "f"
    old = os.umask(0o000)
    try:
        fsutil.atomic_write(f, b"hello")
    finally:
        os.umask(old)
    assert f.read_bytes() == b"hello"
    assert mode_of(f) == 0o600
    fsutil.atomic_write(f, b"world", mode=0o644)
    assert f.read_bytes() == b"world" and mode_of(f) == 0o644


def test_atomic_write_failure_at_rename_keeps_old_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = tmp_path / "f"
    fsutil.atomic_write(f, b"old")

    def broken_replace(src: object, dst: object) -> None:
        raise OSError(5, "injected I/O error")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="injected"):
        fsutil.atomic_write(f, b"new" * 1000)
    assert f.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


def test_atomic_write_failure_mid_write_keeps_old_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = tmp_path / "f"
    fsutil.atomic_write(f, b"old")
    real_write = os.write
    calls = 0

    def short_then_fail(fd: int, data: bytes | memoryview) -> int:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise OSError(28, "No space left on device")
        return real_write(fd, bytes(data)[:10])  # a short write, as a full disk gives

    monkeypatch.setattr(os, "write", short_then_fail)
    with pytest.raises(OSError, match="No space"):
        fsutil.atomic_write(f, b"x" * 100)
    assert f.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


def test_atomic_write_retries_short_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = os.write

    def short(fd: int, data: bytes | memoryview) -> int:
        return real_write(fd, bytes(data)[:7])

    monkeypatch.setattr(os, "write", short)
    data = bytes(range(256)) * 4
    fsutil.atomic_write(tmp_path / "f", data)
    assert (tmp_path / "f").read_bytes() == data


def test_atomic_write_replaces_a_symlink_instead_of_writing_through_it(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_bytes(b"untouched")
    link = tmp_path / "f"
    link.symlink_to(elsewhere)
    fsutil.atomic_write(link, b"new")
    assert elsewhere.read_bytes() == b"untouched"
    assert not link.is_symlink() and link.read_bytes() == b"new"


# --- locked -----------------------------------------------------------------------------

HOLDER = """
import sys
from pathlib import Path
from coactive_credd.core import fsutil
with fsutil.locked(Path(sys.argv[1])):
    print("held", flush=True)
    sys.stdin.readline()
"""


def test_locked_excludes_another_process(tmp_path: Path) -> None:
    lock = tmp_path / "vault.lock"
    with subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(lock)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as child:
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline() == "held\n"
        assert mode_of(lock) == 0o600
        fd = os.open(lock, os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        finally:
            os.close(fd)

        acquired = threading.Event()

        def waiter() -> None:
            with fsutil.locked(lock):
                acquired.set()

        t = threading.Thread(target=waiter)
        t.start()
        assert not acquired.wait(0.2)  # still held by the child
        child.stdin.write("\n")
        child.stdin.flush()
        assert acquired.wait(10)
        t.join()
        assert child.wait(10) == 0


def test_locked_releases_on_exception(tmp_path: Path) -> None:
    lock = tmp_path / "vault.lock"
    with pytest.raises(RuntimeError), fsutil.locked(lock):
        raise RuntimeError("boom")
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free again
    finally:
        os.close(fd)


def test_shared_locks_coexist(tmp_path: Path) -> None:
    lock = tmp_path / "vault.lock"
    with fsutil.locked(lock, shared=True), fsutil.locked(lock, shared=True):
        pass


def test_locked_refuses_symlink_lock_file(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_bytes(b"")
    lock = tmp_path / "vault.lock"
    lock.symlink_to(target)
    with pytest.raises(InsecurePathError, match="symlink"), fsutil.locked(lock):
        pass


def test_locked_refuses_loose_lock_file(tmp_path: Path) -> None:
    lock = tmp_path / "vault.lock"
    lock.write_bytes(b"")
    lock.chmod(0o666)
    with pytest.raises(InsecurePathError, match="mode 0666"), fsutil.locked(lock):
        pass
