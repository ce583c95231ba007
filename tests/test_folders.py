"""Folders keep the modes their readers need, and no folder another uid could write sits above
a token: a 0640 token file's new folders let its group through whatever the daemon's umask;
a shared socket's new folders let the allowed uid through; a token_file below a folder of
uid 1003 is refused; ``allowed_uids`` never loosens the vault's folder; ``exec`` does not
trust a ``TMPDIR`` another uid could write. Root only (real uids through ``setpriv``)."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from coactive_credd.testing.fakeupstream import FakeCoactive

from .conftest import Daemon, login, run_cli, start_daemon, wait_ready
from .test_credfile import wait_for, write_config

READER, OTHER = 10002, 1003


def as_uid(uid: int, gid: int, *argv: str) -> list[str]:
    return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", *argv]


@pytest.fixture
def box() -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("needs root to run processes as other uids (CI runs as root)")
    folder = Path(tempfile.mkdtemp(prefix="fo-", dir="/tmp"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _with_profile(home: Path, fake: FakeCoactive, extra: str, daemon: str = "") -> None:
    login(fake)
    text = (home / "config.toml").read_text()
    head = f"[daemon]\n{daemon}\n" if daemon else ""
    text = re.sub(
        r"^(\[profiles\.\"?default\"?\]\n)", lambda m: m.group(1) + extra, text, flags=re.M
    )
    write_config(home, head + text)


def test_a_0640_token_files_new_folders_let_its_group_read_it(
    home: Path, fake: FakeCoactive, box: Path
) -> None:
    token_file = box / "run" / "coactive" / "token"  # neither folder exists yet
    _with_profile(home, fake, f'token_file = "{token_file}"\ntoken_file_mode = "0640"\n')
    d = start_daemon(home)  # serve's umask is 077
    try:
        wait_for(token_file.exists, what="the token file")
        assert _mode(box / "run") == _mode(box / "run" / "coactive") == 0o710
        gid = os.getegid()  # the file's group: the daemon's
        read = subprocess.run(
            as_uid(READER, gid, "cat", str(token_file)), capture_output=True, text=True
        )
        assert read.returncode == 0, read.stderr
        assert read.stdout == fake.issued[-1]
        other = subprocess.run(as_uid(READER, READER, "cat", str(token_file)), capture_output=True)
        assert other.returncode != 0, "a uid outside the group read a 0640 file"
    finally:
        d.stop()


def test_a_shared_sockets_new_folders_let_the_allowed_uid_reach_it(
    home: Path, fake: FakeCoactive, box: Path
) -> None:
    sock = box / "a" / "b" / "credd.sock"
    _with_profile(home, fake, "", daemon=f"allowed_uids = [{READER}]")
    d = start_daemon(home, env={"COACTIVE_CREDD_SOCKET": str(sock)}, wait=False)
    d.socket = sock
    try:
        wait_ready(d)
        assert _mode(box / "a") == _mode(box / "a" / "b") == 0o711
        got = subprocess.run(
            as_uid(
                READER,
                READER,
                "curl",
                "-s",
                "--unix-socket",
                str(sock),
                "http://localhost/v1/token",
            ),
            capture_output=True,
            text=True,
        )
        assert got.returncode == 0, got.stderr
        assert json.loads(got.stdout)["access_token"] == fake.issued[-1]
    finally:
        d.stop()


def test_a_token_file_below_a_folder_another_uid_may_write_is_refused(
    home: Path, fake: FakeCoactive, box: Path
) -> None:
    theirs = box / "shared"
    theirs.mkdir()
    theirs.chmod(0o777)
    os.chown(theirs, OTHER, OTHER)
    token_file = theirs / "coactive" / "token"
    _with_profile(home, fake, f'token_file = "{token_file}"\n')
    d = start_daemon(home)
    try:
        assert d.get("/v1/token")[0] == 200
        wait_for(lambda: "cannot write the token file" in d.log_text(), what="the refusal")
        assert not (theirs / "coactive").exists() and not token_file.exists()
        line = next(x for x in d.log_text().splitlines() if "cannot write the token file" in x)
        assert f"the folder {theirs} above {theirs / 'coactive'} (owner uid {OTHER}" in line
    finally:
        d.stop()


def test_allowed_uids_never_loosen_the_vaults_folder(home: Path, fake: FakeCoactive) -> None:
    _with_profile(home, fake, "", daemon=f"allowed_uids = [{READER}]")
    assert (home / "vault.bin").exists() and _mode(home) == 0o700
    proc = run_cli("serve", timeout=30)  # the default socket: $COACTIVE_CREDD_HOME/credd.sock
    assert proc.returncode != 0
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert "holds the vault" in proc.stderr and "COACTIVE_CREDD_SOCKET=" in proc.stderr
    assert _mode(home) == 0o700, "the vault's folder was loosened"


def test_exec_does_not_trust_a_tmpdir_another_uid_may_write(
    daemon: Daemon, home: Path, box: Path
) -> None:
    theirs = box / "tmp"
    theirs.mkdir()
    theirs.chmod(0o777)
    os.chown(theirs, OTHER, OTHER)
    env = {"TMPDIR": str(theirs), "XDG_RUNTIME_DIR": ""}
    proc = run_cli(
        "exec",
        "--",
        sys.executable,
        "-c",
        "import os; print(os.environ['COACTIVE_ACCESS_TOKEN_FILE'])",
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    path = Path(proc.stdout.strip())
    assert not str(path).startswith(str(theirs) + "/"), path
    assert list(theirs.iterdir()) == []
