"""`exec` on a bad day: killed with SIGKILL, its child gets the parent-death signal and the
token file goes; a signal sent to exec's whole process group reaches the child once; with
the daemon gone, exec's file goes when the token stops being served (expires_at - skew),
as the daemon's own. Real daemons, a real fake Coactive, real children."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from coactive_credd.testing.fakeupstream import FakeCoactive, FakeCoactiveThread

from .conftest import PERSONAL_TOKEN, login, start_daemon
from .test_tokenfile import STEADY, wait_for

# The child: says where its file is, notes each SIGTERM, and (told so) stops on the first
# after a graceful pause.
CHILD = r"""
import os, signal, sys, time
out = sys.argv[1]
r, w = os.pipe()  # the C-level handler writes a byte per delivery: none is merged away
os.set_blocking(r, False)
os.set_blocking(w, False)
signal.set_wakeup_fd(w)
def term(signo, frame):
    time.sleep(0.5)  # a graceful stop takes a moment; a second SIGTERM would come in it
    got = os.read(r, 256)
    with open(out + ".term", "a") as f:
        f.write("TERM\n" * got.count(bytes([signal.SIGTERM])))
        f.write("USR1\n" * got.count(bytes([signal.SIGUSR1])))
    sys.exit(0)
signal.signal(signal.SIGTERM, term)
signal.signal(signal.SIGUSR1, lambda signo, frame: None)  # counted through the pipe
with open(out + ".tmp", "w") as f:
    f.write(f"{os.getpid()} {os.environ['COACTIVE_ACCESS_TOKEN_FILE']}\n")
os.rename(out + ".tmp", out)
while True:
    time.sleep(0.1)
"""


@pytest.fixture
def short() -> Iterator[FakeCoactive]:
    with FakeCoactiveThread(expires_in=STEADY) as f:
        f.add_personal_token(PERSONAL_TOKEN)
        yield f


def _start(home: Path, out: Path) -> tuple[subprocess.Popen[bytes], int, Path]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "coactive_credd",
            "exec",
            "--",
            sys.executable,
            "-c",
            CHILD,
            str(out),
        ],
        start_new_session=True,  # exec leads its own process group, off any terminal
    )
    wait_for(out.exists, what="the child to start")
    pid, path = out.read_text().split()
    return proc, int(pid), Path(path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


def test_sigkill_of_exec_stops_the_child_and_removes_the_token_file(
    home: Path, short: FakeCoactive
) -> None:
    login(short)
    d = start_daemon(home)
    try:
        out = home / "child"
        proc, child, path = _start(home, out)
        assert path.exists()
        proc.kill()
        proc.wait(10)
        wait_for(lambda: not _alive(child), what="the child to get the parent-death signal")
        assert (home / "child.term").read_text() == "TERM\n"
        wait_for(lambda: not path.exists(), what="the token file to go")
        assert not path.parent.exists(), "exec's folder outlived it"
    finally:
        d.stop()


def test_a_signal_to_execs_process_group_reaches_the_child_once(
    home: Path, short: FakeCoactive
) -> None:
    login(short)
    d = start_daemon(home)
    try:
        out = home / "child"
        proc, child, path = _start(home, out)
        # Off a terminal the child has a group of its own, so a signal to exec's group reaches
        # it only through exec. (Whether a double delivery shows depends on timing: the
        # kernel merges a second signal that comes while the first is still pending.)
        assert os.getpgid(child) != os.getpgid(proc.pid)
        for _ in range(10):  # kill -USR1 -PGID
            os.killpg(proc.pid, signal.SIGUSR1)
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGTERM)  # kill -TERM -PGID, as a supervisor does
        code = proc.wait(10)
        got = (home / "child.term").read_text().split()
        assert got.count("TERM") == 1, "the child got SIGTERM twice"
        assert got.count("USR1") == 10, got
        assert code == 0
        assert not path.exists()
    finally:
        d.stop()


def test_with_the_daemon_gone_execs_file_goes_when_the_token_stops_being_served(
    home: Path, short: FakeCoactive
) -> None:
    short.expires_in = 16  # skew min(30, 16/2) = 8: served 8 s, valid 16 s
    login(short)
    d = start_daemon(home)
    out = home / "child"
    proc, _child, path = _start(home, out)
    try:
        token = path.read_text()
        d.proc.kill()  # the daemon is gone; exec's file is exec's to keep right
        d.proc.wait()
        [issued] = [i for i in short.ledger if i.access_token == token]
        serve_until, expires_at = issued.issued_at + 8, issued.issued_at + 16
        wait_for(lambda: not path.exists(), timeout=20, what="exec's file to go")
        gone = time.time()
        assert gone < serve_until + 2.5, (gone - serve_until, expires_at - gone)
    finally:
        proc.terminate()
        proc.wait(10)
        d.stop()
