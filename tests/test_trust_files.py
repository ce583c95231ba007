"""Every file and folder the product reads or writes follows one "safe path" rule.

The config decides where credentials are sent, so a config others could have written is
refused: a loose file, a foreign one, a symlink, a loose folder, a loose folder above. The
daemon's startup lock is never opened through a symlink. Real files, real modes, real owners
(root ``chown``s to another uid).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from coactive_credd.core import config, fsutil
from coactive_credd.core.fsutil import InsecurePathError

from .conftest import run_cli

OTHER_UID = 4242
CONFIG = '[profiles.default]\nbase_url = "http://127.0.0.1:9"\n'

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 and not os.environ.get("CI"), reason="needs root to chown to another uid"
)


@pytest.fixture
def cfg(home: Path) -> Path:
    path = home / "config.toml"
    path.write_text(CONFIG)
    path.chmod(0o600)
    return path


def test_a_private_config_is_read(cfg: Path) -> None:
    assert config.load(cfg).profiles["default"].base_url == "http://127.0.0.1:9"


def test_a_root_owned_read_only_config_is_read(cfg: Path) -> None:
    cfg.chmod(0o644)  # a config an admin or a container image provides
    assert "default" in config.load(cfg).profiles


@pytest.mark.parametrize("mode", [0o666, 0o620, 0o602])
def test_a_config_others_can_write_is_refused(cfg: Path, mode: int) -> None:
    cfg.chmod(mode)
    with pytest.raises(config.ConfigError) as err:
        config.load(cfg)
    assert str(cfg) in str(err.value) and "chmod go-w" in str(err.value)


@needs_root
def test_a_config_of_another_uid_is_refused(cfg: Path) -> None:
    os.chown(cfg, OTHER_UID, OTHER_UID)
    with pytest.raises(config.ConfigError, match=f"owner uid {OTHER_UID}"):
        config.load(cfg)


def test_a_config_symlink_is_refused_even_to_a_private_file(cfg: Path, home: Path) -> None:
    real = home / "real.toml"
    cfg.rename(real)
    cfg.symlink_to(real)
    with pytest.raises(config.ConfigError, match="symlink"):
        config.load(cfg)


def test_a_config_in_a_folder_others_can_write_is_refused(cfg: Path, home: Path) -> None:
    home.chmod(0o777)
    try:
        with pytest.raises(config.ConfigError) as err:
            config.load(cfg)
        assert f"{home} is not safe" in str(err.value)
    finally:
        home.chmod(0o700)


def test_a_config_below_a_loose_folder_is_refused(tmp_path: Path) -> None:
    loose = tmp_path / "shared"
    loose.mkdir(mode=0o700)
    loose.chmod(0o777)
    folder = loose / "coactive-credd"
    folder.mkdir(mode=0o700)
    (folder / "config.toml").write_text(CONFIG)
    with pytest.raises(config.ConfigError, match=f"{loose} is not safe"):
        config.load(folder / "config.toml")


def test_the_daemon_refuses_a_redirected_config_in_one_line(cfg: Path, home: Path) -> None:
    """Issue reproduction: a loose config folder let another user point base_url at their
    own server; the daemon now refuses to start instead."""
    cfg.chmod(0o666)
    proc = run_cli("serve", timeout=60)
    assert proc.returncode == 1
    line = proc.stderr.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in line, line
    assert str(cfg) in line and "chmod go-w" in line


def test_the_cli_refuses_a_redirected_config(cfg: Path) -> None:
    cfg.chmod(0o666)
    proc = run_cli("logout")
    assert proc.returncode == 1 and str(cfg) in proc.stderr, proc.stderr


# --- the safe-path rule on folders ------------------------------------------------------


def test_sticky_root_folders_are_allowed_other_writable_ones_are_not(tmp_path: Path) -> None:
    fsutil.check_safe_parents(Path("/tmp/x/y"))  # /tmp: root-owned, sticky
    loose = tmp_path / "loose"
    loose.mkdir()
    loose.chmod(0o1777)  # sticky, but not root's when not run as root
    if os.geteuid() == 0:
        os.chown(loose, OTHER_UID, OTHER_UID)
    with pytest.raises(InsecurePathError, match=str(loose)):
        fsutil.check_safe_parents(loose / "a" / "b")


def test_nothing_is_created_inside_a_folder_others_can_write(tmp_path: Path) -> None:
    loose = tmp_path / "loose"
    loose.mkdir()
    loose.chmod(0o777)
    with pytest.raises(InsecurePathError, match=str(loose)):
        fsutil.ensure_private_dir(loose / "coactive-credd")
    assert not (loose / "coactive-credd").exists()


def test_a_symlinked_folder_is_judged_by_where_it_leads(tmp_path: Path) -> None:
    loose = tmp_path / "loose"
    loose.mkdir()
    loose.chmod(0o777)
    (loose / "real").mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(loose / "real")
    with pytest.raises(InsecurePathError, match=str(loose)):
        fsutil.check_safe_parents(link / "vault.bin")


# --- lock files -------------------------------------------------------------------------


def test_the_startup_lock_is_never_opened_through_a_symlink(home: Path) -> None:
    """Issue reproduction: the socket's .lock file was opened without O_NOFOLLOW."""
    victim = home / "victim-file"
    victim.write_text("keep me")
    victim.chmod(0o600)
    (home / "credd.sock.lock").symlink_to(victim)
    proc = run_cli("serve", timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert "credd.sock.lock" in proc.stderr and "symlink" in proc.stderr, proc.stderr
    assert victim.read_text() == "keep me"


def test_open_lock_file_refuses_symlinks_and_loose_files(tmp_path: Path) -> None:
    target = tmp_path / "t"
    target.write_text("")
    (tmp_path / "link").symlink_to(target)
    with pytest.raises(InsecurePathError, match="symlink"):
        fsutil.open_lock_file(tmp_path / "link")
    loose = tmp_path / "loose"
    loose.write_text("")
    loose.chmod(0o666)
    with pytest.raises(InsecurePathError, match="mode 0666"):
        fsutil.open_lock_file(loose)


# --- hardening --------------------------------------------------------------------------


def test_harden_module_does_not_pull_in_the_heavy_rooms() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, coactive_credd.core.harden; "
            "print(sorted(m for m in ('aiohttp', 'cryptography') if m in sys.modules))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "[]"
