"""Token files and `exec`: a token a program reads from a file stays current as long as it
runs, through real daemons, a real fake Coactive issuing short-lived tokens and real children."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from coactive_credd.testing.fakeupstream import FakeCoactive, FakeCoactiveThread

from .conftest import PERSONAL_TOKEN, leaked, login, run_cli, start_daemon

# Tokens of 24 s are served for 12 s and replaced about 10 s in (the daemon's floor between
# background logins is 10 s), so they never lapse on a busy machine; 6 s tokens (served 3 s)
# lapse before the next background login: the tests about lapses use those.
STEADY = 24
LIFETIME = 6


@pytest.fixture
def short() -> Iterator[FakeCoactive]:
    with FakeCoactiveThread(expires_in=STEADY) as f:
        f.add_personal_token(PERSONAL_TOKEN)
        yield f


def wait_for(cond: Callable[[], object], timeout: float = 15, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def add_keys(home: Path, **keys: str) -> None:
    """Add keys to the last profile table of the config `login` wrote."""
    cfg = home / "config.toml"
    cfg.write_text(cfg.read_text() + "".join(f'{k} = "{v}"\n' for k, v in keys.items()))


def read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def test_token_file_follows_rotations_and_is_removed_at_stop_and_logout(
    home: Path, short: FakeCoactive
) -> None:
    tok = home / "run" / "token"
    login(short)
    add_keys(home, token_file=str(tok), token_file_mode="0640")
    d = start_daemon(home)
    try:
        wait_for(lambda: read(tok), what="the token file")
        first = read(tok)
        assert first in short.issued and stat.S_IMODE(tok.stat().st_mode) == 0o640
        assert run_cli("refresh").returncode == 0  # a rotation, now
        wait_for(lambda: read(tok) not in (None, first), what="a rotation")
        assert read(tok) == short.issued[-1] != first
        assert [p.name for p in tok.parent.iterdir()] == ["token"]  # no temporary left over
    finally:
        d.stop()
    assert not tok.exists(), "a token file outlived the daemon"
    d = start_daemon(home)
    try:
        wait_for(lambda: read(tok), what="the token file after a restart")
        assert read(tok) in short.issued
        assert run_cli("logout").returncode == 0
        wait_for(lambda: not tok.exists(), what="the token file to go at logout")
    finally:
        d.stop()
    assert not leaked(d.log_text(), set(short.issued))


def test_token_file_is_removed_when_its_token_expires_unreplaced(
    home: Path, short: FakeCoactive
) -> None:
    tok = home / "run" / "token"
    short.expires_in = LIFETIME
    login(short)
    add_keys(home, token_file=str(tok))
    d = start_daemon(home)
    try:
        assert d.get("/v1/token")[0] == 200  # a fresh token, whatever the start took
        wait_for(lambda: read(tok), what="the token file")
        short.fault = "503"  # Coactive goes away: no new token can be had
        wait_for(lambda: not tok.exists(), timeout=LIFETIME * 2, what="the expired token to go")
        short.fault = None
        wait_for(lambda: read(tok), timeout=40, what="a new token once Coactive is back")
    finally:
        d.stop()


def test_token_file_in_a_folder_others_can_write_is_refused(
    home: Path, short: FakeCoactive
) -> None:
    loose = home / "loose"
    loose.mkdir()
    loose.chmod(0o777)
    login(short)
    add_keys(home, token_file=str(loose / "token"))
    d = start_daemon(home)
    try:
        wait_for(lambda: "cannot write the token file" in d.log_text(), what="the error")
        assert not (loose / "token").exists()
        assert d.get("/v1/token")[0] == 200  # the daemon still serves over the socket
        line = next(ln for ln in d.log_text().splitlines() if "token file" in ln)
        assert "chmod go-w" in line
    finally:
        d.stop()


READER = r"""
import os, sys, time
path = os.environ["COACTIVE_ACCESS_TOKEN_FILE"]
print("env", os.environ["COACTIVE_TOKEN_EXPIRES_AT"], os.environ["COACTIVE_BASE_URL"],
      os.environ["COACTIVE_CREDD_SOCKET"], os.environ["COACTIVE_ACCESS_TOKEN"], path, flush=True)
end = time.time() + float(sys.argv[1])
while time.time() < end:
    with open(path) as f:
        print(time.time(), f.read(), flush=True)
    time.sleep(0.05)
sys.exit(3)
"""


@pytest.mark.heavy  # long: started first, so it does not end the run alone
def test_exec_child_outliving_two_lifetimes_always_reads_a_valid_token_from_the_file(
    home: Path, short: FakeCoactive
) -> None:
    login(short)
    d = start_daemon(home)
    try:
        proc = run_cli("exec", "--", sys.executable, "-c", READER, str(STEADY * 2.1), timeout=120)
    finally:
        d.stop()
    assert proc.returncode == 3, proc.stderr  # the child's exit status
    lines = proc.stdout.splitlines()
    _, expires_at, base_url, sock, env_token, path = lines[0].split()
    assert base_url == short.base_url and sock == str(d.socket) and env_token in short.issued
    assert expires_at.endswith("Z") and expires_at.startswith(time.strftime("%Y-", time.gmtime()))
    expiry = {i.access_token: i.issued_at + i.expires_in for i in short.ledger}
    seen = []
    for line in lines[1:]:
        at, token = line.split()
        assert token in expiry, "the file held something Coactive never issued"
        assert float(at) < expiry[token], "the file held an expired token"
        if token not in seen:
            seen.append(token)
    assert len(seen) >= 3, seen  # it was replaced at least twice while the child ran
    assert float(lines[-1].split()[0]) - float(lines[1].split()[0]) > STEADY * 2
    assert not Path(path).exists() and not Path(path).parent.exists(), "exec left its file"


def test_exec_token_file_option_and_relayed_signal(home: Path, short: FakeCoactive) -> None:
    login(short)
    d = start_daemon(home)
    mine = home / "mine"
    mine.mkdir(mode=0o700)
    script = (
        "import os, signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: (print('got TERM', flush=True), sys.exit(0)))\n"
        "print(os.environ['COACTIVE_ACCESS_TOKEN_FILE'], flush=True)\n"
        "time.sleep(30)\n"
    )
    try:
        with subprocess.Popen(
            [
                sys.executable,
                "-m",
                "coactive_credd",
                "exec",
                "--token-file",
                str(mine / "t"),
                "--",
                sys.executable,
                "-c",
                script,
            ],
            stdout=subprocess.PIPE,
            text=True,
        ) as proc:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == str(mine / "t")
            assert (mine / "t").read_text() in short.issued
            assert stat.S_IMODE((mine / "t").stat().st_mode) == 0o600
            proc.send_signal(signal.SIGTERM)
            assert proc.stdout.readline().strip() == "got TERM"
            assert proc.wait(10) == 0
        assert not (mine / "t").exists()
        # a command that does not exist: 127 and one line, as a shell says
        bad = run_cli("exec", "--", "no-such-command-xyz")
        assert bad.returncode == 127 and bad.stderr.count("\n") == 1
    finally:
        d.stop()


def test_exec_killed_child_ends_exec_the_same_way(home: Path, short: FakeCoactive) -> None:
    login(short)
    d = start_daemon(home)
    try:
        proc = run_cli("exec", "--", sys.executable, "-c", "import os; os.kill(os.getpid(), 9)")
    finally:
        d.stop()
    assert proc.returncode == -signal.SIGKILL
    assert os.environ.get("COACTIVE_ACCESS_TOKEN") is None


WATCHER = r"""
import os, sys, time
path = os.environ["COACTIVE_ACCESS_TOKEN_FILE"]
print(path, flush=True)
end = time.time() + 60
while time.time() < end:
    try:
        with open(path) as f:
            print(time.time(), f.read(), flush=True)
    except FileNotFoundError:
        print(time.time(), "MISSING", flush=True)
    time.sleep(0.05)
"""


def test_exec_file_goes_while_coactive_is_down_and_comes_back(
    home: Path, short: FakeCoactive
) -> None:
    short.expires_in = LIFETIME
    login(short)
    d = start_daemon(home)
    try:
        with subprocess.Popen(
            [sys.executable, "-m", "coactive_credd", "exec", "--", sys.executable, "-c", WATCHER],
            stdout=subprocess.PIPE,
            text=True,
        ) as proc:
            assert proc.stdout is not None
            path = Path(proc.stdout.readline().strip())
            seen: list[str] = []  # the child's lines, read as it prints them
            reader = threading.Thread(target=lambda: seen.extend(proc.stdout or ()), daemon=True)
            reader.start()
            short.fault = "503"  # no new token can be had: the current one dies
            wait_for(lambda: not path.exists(), timeout=LIFETIME * 2, what="the dead token to go")
            # Coactive answers again only once the child has seen the file gone (on a busy
            # machine it may not have looked in the moment the file was missing)
            wait_for(lambda: any("MISSING" in ln for ln in seen), what="the child to see it")
            short.fault = None
            # a refresh inside the daemon's backoff window is answered 503 without a login
            wait_for(lambda: run_cli("refresh").returncode == 0, timeout=40, what="a refresh")
            wait_for(lambda: read(path), what="the new token in the file")
            assert read(path) == short.issued[-1]
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=10)
            reader.join(timeout=10)
    finally:
        d.stop()
    expiry = {i.access_token: i.issued_at + i.expires_in for i in short.ledger}
    lines = [ln.split() for ln in seen]
    assert any(tok == "MISSING" for _, tok in lines)
    for at, tok in lines:
        assert tok == "MISSING" or float(at) < expiry[tok], "the child read a dead token"


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ('token_file_mode = "0666"', "token_file_mode must be an octal string"),
        ('token_file = "relative/token"', "token_file must be an absolute path"),
        ('credential_file = "secret"', "or $CREDENTIALS_DIRECTORY/NAME"),
    ],
)
def test_bad_container_keys_are_one_line_at_start(
    home: Path, short: FakeCoactive, line: str, says: str
) -> None:
    login(short)
    cfg = home / "config.toml"
    cfg.write_text(cfg.read_text() + line + "\n")
    bad = run_cli("serve")
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and says in bad.stderr, bad.stderr
    assert "Traceback" not in bad.stderr


def test_login_and_config_rewrites_keep_the_container_keys(home: Path, short: FakeCoactive) -> None:
    login(short)
    cfg = home / "config.toml"
    cfg.write_text(
        "[daemon]\nallowed_uids = [1001, 1002]\n\n"
        + cfg.read_text().split("\n", 1)[1]
        + f'token_file = "{home}/run/token"\ntoken_file_mode = "0640"\n'
    )
    login(short)  # login again rewrites the config
    text = cfg.read_text()
    assert "allowed_uids = [1001, 1002]" in text
    assert f'token_file = "{home}/run/token"' in text and 'token_file_mode = "0640"' in text


def test_token_file_goes_when_the_vault_is_locked(home: Path, short: FakeCoactive) -> None:
    tok = home / "run" / "token"
    login(short)
    add_keys(home, token_file=str(tok))
    rekey = run_cli("rekey", "--passphrase-stdin", input="correct horse battery staple\n")
    assert rekey.returncode == 0, rekey.stderr
    d = start_daemon(home)
    try:
        assert not tok.exists()  # a locked vault: nothing to serve
        unlock = run_cli("unlock", "--passphrase-stdin", input="correct horse battery staple\n")
        assert unlock.returncode == 0, unlock.stderr
        wait_for(lambda: read(tok), what="the token file after unlock")
        assert run_cli("lock").returncode == 0
        wait_for(lambda: not tok.exists(), what="the token file to go at lock")
    finally:
        d.stop()
