"""The credential file is opened once, safely: a symlink met while resolving another (here
one of uid 1003, in 1003's own folder, behind a root symlink) is checked like any other, and
1003 flipping it between the secret and a FIFO neither stalls the daemon nor gets 1003's
own token sent to Coactive. Root only (real uids through ``setpriv``); CI runs as root."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from coactive_credd.testing.fakeupstream import FakeCoactive, credential_id

from .conftest import PERSONAL_TOKEN, start_daemon
from .test_credfile import wait_for, write_config

ATTACKER = 1003
ATTACKER_TOKEN = "cpt_Attacker.Chosen-token_for~tests"

FLIPPER = r"""
import os, sys, threading, time
link, secret, fifo, token, seconds = sys.argv[1:6]
def feed():
    while True:
        with open(fifo, "w") as f:  # blocks until a reader opens it
            f.write(token + "\n")
threading.Thread(target=feed, daemon=True).start()
end = time.monotonic() + float(seconds)
n = 0
while time.monotonic() < end:
    n += 1
    tmp = f"{link}.{n}"
    os.symlink(fifo if n % 2 else secret, tmp)
    os.replace(tmp, link)
    time.sleep(0.0005)
os.symlink(secret, f"{link}.last")
os.replace(f"{link}.last", link)
"""


def as_attacker(*argv: str) -> list[str]:
    return ["setpriv", f"--reuid={ATTACKER}", f"--regid={ATTACKER}", "--clear-groups", *argv]


@pytest.fixture
def box() -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("needs root to run processes as another uid (CI runs as root)")
    folder = Path(tempfile.mkdtemp(prefix="cf-", dir="/tmp"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_a_symlink_met_while_resolving_another_is_checked_and_a_fifo_flip_changes_nothing(
    home: Path, fake: FakeCoactive, box: Path
) -> None:
    fake.add_personal_token(ATTACKER_TOKEN)  # a valid token of the attacker's own account
    secrets = box / "secrets"
    secrets.mkdir(mode=0o755)
    secret = secrets / "token"
    secret.write_text(PERSONAL_TOKEN + "\n")
    secret.chmod(0o400)
    theirs = box / "u1003"  # the attacker's own folder
    theirs.mkdir(mode=0o755)
    os.chown(theirs, ATTACKER, ATTACKER)
    inner = theirs / "link"
    subprocess.run(as_attacker("ln", "-s", str(secret), str(inner)), check=True)
    assert inner.lstat().st_uid == ATTACKER
    fifo = theirs / "fifo"
    subprocess.run(as_attacker("mkfifo", str(fifo)), check=True)
    outer = secrets / "credential"  # root's symlink, in root's folder, to 1003's symlink
    outer.symlink_to(inner)
    write_config(
        home, f'[profiles.default]\nbase_url = "{fake.base_url}"\ncredential_file = "{outer}"\n'
    )
    d = start_daemon(home)
    flipper = None
    try:
        st = d.get("/v1/status")[1]["profiles"][0]
        assert st["state"] == "reauth_required", st
        assert f"{theirs} (owner uid 1003, mode 0755) could be changed" in (st["last_error"] or "")
        flipper = subprocess.Popen(
            as_attacker(
                sys.executable,
                "-c",
                FLIPPER,
                str(inner),
                str(secret),
                str(fifo),
                ATTACKER_TOKEN,
                "7",
            )
        )
        deadline = time.monotonic() + 7
        while time.monotonic() < deadline:  # the 2 s poll looks at the flipping link 3 times
            t0 = time.monotonic()
            assert d.get("/v1/status")[0] == 200
            assert time.monotonic() - t0 < 1.0, "the daemon stalled"
            time.sleep(0.1)
        flipper.wait(10)
        wait_for(lambda: d.get("/healthz")[0] == 200, what="the daemon to answer")
        assert all(r.credential != credential_id(ATTACKER_TOKEN) for r in fake.ledger)
        assert d.get("/v1/status")[1]["profiles"][0]["state"] == "reauth_required"
    finally:
        if flipper is not None and flipper.poll() is None:
            flipper.kill()
            flipper.wait()
        d.stop()


def test_a_foreign_symlink_in_a_sticky_folder_behind_a_root_symlink_is_refused(box: Path) -> None:
    """``/tmp``-like folders pass the rule (root's, sticky), the symlinks in them do not:
    one of uid 1003 met at the second hop is refused as the first would be."""
    from coactive_credd.vault import credfile

    secret = box / "token"
    secret.write_text(PERSONAL_TOKEN + "\n")
    secret.chmod(0o400)
    sticky = box / "tmp"
    sticky.mkdir()
    sticky.chmod(0o1777)
    link = sticky / "link"
    subprocess.run(as_attacker("ln", "-s", str(secret), str(link)), check=True)
    outer = box / "credential"
    outer.symlink_to(link)
    credfile.check(str(secret))  # the secret itself passes
    with pytest.raises(credfile.CredentialFileError) as err:
        credfile.check(str(outer))
    assert str(err.value) == (
        f"{link} (met resolving credential_file {outer}) is a symlink of uid 1003; "
        "only root's or yours are followed"
    )
