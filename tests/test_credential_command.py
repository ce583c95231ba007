"""credential_command: a profile's credential from a program (a password manager).

Real programs throughout: `pass` with a throwaway GNUPGHOME, a stand-in for 1Password's `op`
(its CLI cannot be installed here), and small sh scripts for failure, hang and huge output;
real daemons against the fake Coactive.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from coactive_credd.core import config
from coactive_credd.testing.fakeupstream import FakeCoactive
from coactive_credd.vault import Vault
from coactive_credd.vault.credcommand import MAX_LINE, CommandFailed, run

from .conftest import PERSONAL_TOKEN, leaked, run_cli, start_daemon


def script(folder: Path, name: str, body: str) -> Path:
    path = folder / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


# --- the runner ---------------------------------------------------------------------------


def test_the_first_line_of_stdout_is_the_credential(tmp_path: Path) -> None:
    tool = script(tmp_path, "pm", f'printf "%s\\r\\n" "{PERSONAL_TOKEN}"; echo second line\n')
    assert run([str(tool)]) == PERSONAL_TOKEN


def test_no_shell_the_environment_and_no_stdin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CCD_TEST_VALUE", "from-the-daemon-env")
    # Arguments reach the program as they are: no shell expands them.
    assert run(["printf", "%s\\n", "$HOME;`id`"]) == "$HOME;`id`"
    assert run(["sh", "-c", 'echo "$CCD_TEST_VALUE"']) == "from-the-daemon-env"
    # Standard input is closed: a program that reads it gets end-of-file at once.
    with pytest.raises(CommandFailed, match="printed nothing"):
        run(["cat"], timeout=5)


def test_a_failure_names_the_status_and_stderr_line(tmp_path: Path) -> None:
    tool = script(
        tmp_path, "pm", "echo 'Error: coactive/x is not in the password store.' >&2; exit 1\n"
    )
    with pytest.raises(CommandFailed) as info:
        run([str(tool), "show", "coactive/x"])
    msg = str(info.value)
    assert "exited with status 1" in msg
    assert "Error: coactive/x is not in the password store." in msg
    assert "\n" not in msg


def test_stderr_that_repeats_the_credential_is_not_shown(tmp_path: Path) -> None:
    tool = script(
        tmp_path,
        "pm",
        f'echo "{PERSONAL_TOKEN}"; echo "debug: got {PERSONAL_TOKEN[3:20]}" >&2; exit 2\n',
    )
    with pytest.raises(CommandFailed) as info:
        run([str(tool)])
    assert "exited with status 2" in str(info.value)
    assert not leaked(str(info.value)) and PERSONAL_TOKEN[3:20] not in str(info.value)


def test_a_missing_program(tmp_path: Path) -> None:
    with pytest.raises(CommandFailed, match="no such program"):
        run([str(tmp_path / "no-such-pm")])


def test_a_hang_is_stopped_with_its_children(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    tool = script(tmp_path, "pm", f"sleep 300 & echo $! >{pidfile}; wait\n")
    started = time.monotonic()
    with pytest.raises(CommandFailed, match="did not finish within 1 s"):
        run([str(tool)], timeout=1)
    assert time.monotonic() - started < 5
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
        if Path(f"/proc/{child}/stat").read_text().split()[2] == "Z":
            break
        time.sleep(0.05)
    stat = Path(f"/proc/{child}/stat")
    assert not stat.exists() or stat.read_text().split()[2] == "Z"  # killed with its group


def test_huge_output_is_read_in_bounded_memory(tmp_path: Path) -> None:
    # A first line, then far more than anyone needs: the first line is taken, quickly.
    tool = script(tmp_path, "pm", f'echo "{PERSONAL_TOKEN}"; exec yes xxxxxxxxxxxxxxxx\n')
    started = time.monotonic()
    assert run([str(tool)], timeout=20) == PERSONAL_TOKEN
    assert time.monotonic() - started < 10
    # No line end at all: refused once the first line outgrows MAX_LINE.
    endless = script(tmp_path, "endless", "exec tr '\\0' x </dev/zero\n")
    with pytest.raises(CommandFailed, match=f"longer than {MAX_LINE} bytes"):
        run([str(endless)], timeout=20)


# --- config -------------------------------------------------------------------------------


def test_config_takes_a_list_of_strings() -> None:
    cfg = config.parse('[profiles.default]\ncredential_command = ["pass", "show", "coactive/t"]\n')
    assert cfg.profiles["default"].credential_command == ("pass", "show", "coactive/t")
    assert "credential_command" in config.render(cfg)
    assert config.parse(config.render(cfg)) == cfg
    for bad in ('"pass show x"', "[]", '[""]', "[1, 2]"):
        with pytest.raises(config.ConfigError, match="credential_command must be a list"):
            config.parse(f"[profiles.default]\ncredential_command = {bad}\n")


# --- real pass, a stand-in op, real daemons -----------------------------------------------


@pytest.fixture(scope="module")
def password_store() -> Iterator[dict[str, str]]:
    """A throwaway GNUPGHOME with a passphrase-less key and a pass store holding the token."""
    if not shutil.which("pass") or not shutil.which("gpg"):
        pytest.skip("needs pass and gnupg (.ci/setup installs them)")
    root = Path(tempfile.mkdtemp(prefix="ccd-pass-", dir="/tmp"))  # gpg-agent's socket path
    env = {
        **os.environ,
        "GNUPGHOME": str(root / "gnupg"),
        "PASSWORD_STORE_DIR": str(root / "store"),
    }
    (root / "gnupg").mkdir(mode=0o700)
    subprocess.run(
        [
            "gpg",
            "--batch",
            "--passphrase",
            "",
            "--quick-gen-key",
            "t <t@example.invalid>",
            "default",
            "default",
            "never",
        ],
        env=env,
        check=True,
        capture_output=True,
        timeout=60,
    )
    out = subprocess.run(
        ["gpg", "--list-keys", "--with-colons"], env=env, check=True, capture_output=True, text=True
    ).stdout
    fpr = next(line.split(":")[9] for line in out.splitlines() if line.startswith("fpr"))
    subprocess.run(["pass", "init", fpr], env=env, check=True, capture_output=True)
    subprocess.run(
        ["pass", "insert", "-m", "coactive/personal-token"],
        env=env,
        check=True,
        input=PERSONAL_TOKEN + "\nuser: someone\n",
        text=True,
        capture_output=True,
    )
    yield {k: env[k] for k in ("GNUPGHOME", "PASSWORD_STORE_DIR")}
    subprocess.run(
        ["gpgconf", "--homedir", str(root / "gnupg"), "--kill", "all"], env=env, capture_output=True
    )
    shutil.rmtree(root, ignore_errors=True)


def _status(d: object) -> dict[str, object]:
    status, body = d.get("/v1/status")  # type: ignore[attr-defined]
    assert status == 200
    return body["profiles"][0]  # type: ignore[no-any-return]


def _wait(pred: object, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_login_with_pass_and_the_daemon_serves(
    home: Path, fake: FakeCoactive, password_store: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for k, v in password_store.items():
        monkeypatch.setenv(k, v)
    done = run_cli(
        "login",
        "--base-url",
        fake.base_url,
        "--credential-command",
        "pass show coactive/personal-token",
    )
    assert done.returncode == 0, done.stderr
    assert "verified" in done.stderr
    assert fake.logins == 1  # one exchange checked it
    text = (home / "config.toml").read_text()
    assert 'credential_command = ["pass", "show", "coactive/personal-token"]' in text
    assert PERSONAL_TOKEN not in text
    # Never written: the vault keeps only the token the check got (nor any file holds it).
    entry = Vault(home / "vault.bin", home / "vault.key", home / "vault.lock").load().profiles
    assert entry["default"].secret == "" and entry["default"].token is not None
    for f in home.rglob("*"):
        if f.is_file():
            assert PERSONAL_TOKEN.encode() not in f.read_bytes(), f
    d = start_daemon(home)
    try:
        token = run_cli("token")
        assert token.returncode == 0, token.stderr
        assert token.stdout.strip() in fake.issued
        assert _status(d)["state"] == "valid"
        assert fake.logins == 1  # the login's token, served: no second exchange
        assert run_cli("refresh").returncode == 0  # a new login: runs pass again
        assert fake.logins == 2
        newest = run_cli("token").stdout
    finally:
        d.stop()
    assert not leaked(d.log_text(), set(fake.issued))
    # A restart within the token's lifetime serves the cached token: no command, no login.
    monkeypatch.setenv("PASSWORD_STORE_DIR", "/nonexistent")  # pass would fail now
    d = start_daemon(home)
    try:
        again = run_cli("token")
        assert again.returncode == 0, again.stderr
        assert again.stdout == newest and fake.logins == 2
    finally:
        d.stop()
    for f in home.rglob("*"):
        if f.is_file():
            assert PERSONAL_TOKEN.encode() not in f.read_bytes(), f


def test_an_op_stand_in(home: Path, fake: FakeCoactive, tmp_path: Path) -> None:
    """1Password's `op read op://vault/item/field` prints the field and a newline."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script(
        bin_dir,
        "op",
        f'[ "$1" = read ] && [ "$2" = "op://Private/Coactive/token" ] || {{ echo "[ERROR] bad args" >&2; exit 1; }}\necho "{PERSONAL_TOKEN}"\n',
    )
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    done = run_cli(
        "login",
        "--base-url",
        fake.base_url,
        "--credential-command",
        "op read op://Private/Coactive/token",
        env=env,
    )
    assert done.returncode == 0, done.stderr
    d = start_daemon(home, env=env)
    try:
        assert run_cli("token").returncode == 0
    finally:
        d.stop()


def test_a_failing_command_is_reauth_required_and_not_run_again(
    home: Path, fake: FakeCoactive, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    tool = script(
        tmp_path, "pm", f"echo run >>{runs}; echo 'vault is sealed, try later' >&2; exit 3\n"
    )
    (home / "config.toml").write_text(
        f'[profiles.default]\nbase_url = "{fake.base_url}"\ncredential_command = {json.dumps([str(tool)])}\n'
    )
    (home / "config.toml").chmod(0o600)
    d = start_daemon(home)
    try:
        _wait(lambda: _status(d)["state"] == "reauth_required")
        err = str(_status(d)["last_error"])
        assert "exited with status 3" in err and "vault is sealed, try later" in err
        token = run_cli("token")
        assert token.returncode == 5 and len(token.stderr.strip().splitlines()) == 1
        for _ in range(5):
            run_cli("token")
        time.sleep(1)
        assert runs.read_text().count("run") == 1  # no loop: asked once
        assert fake.logins == 0
        # `refresh` runs it again (once), and so does a reload.
        assert run_cli("refresh").returncode != 0
        assert runs.read_text().count("run") == 2
        d.proc.send_signal(signal.SIGHUP)
        _wait(lambda: runs.read_text().count("run") == 3)
        time.sleep(0.5)
        assert runs.read_text().count("run") == 3
        # Fixed: the next refresh logs in with its answer.
        script(tmp_path, "pm", f'echo run >>{runs}; echo "{PERSONAL_TOKEN}"\n')
        assert run_cli("refresh").returncode == 0
        assert run_cli("token").returncode == 0 and fake.logins == 1
    finally:
        d.stop()
    log = d.log_text()
    assert "vault is sealed, try later" in log
    assert not leaked(log, set(fake.issued))


def test_a_hanging_command_does_not_stop_the_daemon_serving(
    home: Path, fake: FakeCoactive, tmp_path: Path
) -> None:
    tool = script(tmp_path, "pm", "exec sleep 300\n")
    (home / "config.toml").write_text(
        f'[profiles.default]\nbase_url = "{fake.base_url}"\n'
        f"credential_command = {json.dumps([str(tool)])}\n"
        f'[profiles.other]\nbase_url = "{fake.base_url}"\n'
    )
    (home / "config.toml").chmod(0o600)
    d = start_daemon(home)
    try:
        _wait(lambda: _status(d)["state"] == "refreshing")
        started = time.monotonic()
        for _ in range(20):  # the event loop answers while the command hangs in a thread
            assert d.get("/healthz")[0] == 200
        assert time.monotonic() - started < 2
        stopped = time.monotonic()
    finally:
        d.stop()
    assert time.monotonic() - stopped < 5  # and stops without waiting for it
    assert d.proc.returncode == 0
    out = subprocess.run(["pgrep", "-f", str(tool)], capture_output=True, text=True)
    assert out.stdout.strip() == "", "the command outlived the daemon"


def test_login_refuses_a_failing_command_and_saves_nothing(
    home: Path, fake: FakeCoactive, tmp_path: Path
) -> None:
    tool = script(
        tmp_path, "pm", "echo 'Error: coactive/x is not in the password store.' >&2; exit 1\n"
    )
    done = run_cli(
        "login", "--base-url", fake.base_url, "--credential-command", f"{tool} show coactive/x"
    )
    assert done.returncode == 1
    assert len(done.stderr.strip().splitlines()) == 1
    assert "exited with status 1: Error: coactive/x is not in the password store." in done.stderr
    assert not (home / "config.toml").exists()
    bad = run_cli("login", "--credential-command", "pass show 'unterminated")
    assert bad.returncode == 2 and "split like a shell" in bad.stderr
