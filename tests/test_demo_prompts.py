"""The demo cleans up however it ends and says what really happened; the token prompt on a
terminal never echoes and ends cleanly on Ctrl-D; a meaningless COACTIVE_CREDD_AUTOSTART is
refused."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from coactive_credd.testing.fakeupstream import FakeCoactive

from .conftest import PERSONAL_TOKEN, call, run_cli


def _demo(duration: str = "60") -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "coactive_credd", "demo", "--duration", duration],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _until(proc: subprocess.Popen[str], marker: str, timeout: float = 40) -> str:
    """The demo's output up to the first line holding ``marker``."""
    assert proc.stdout is not None
    seen = ""
    deadline = time.monotonic() + timeout
    while marker not in seen and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen += line
    assert marker in seen, seen
    return seen


def _home_of(text: str) -> Path:
    return Path(text.split("Files in ", 1)[1].split(",", 1)[0])


def _daemon_pid(home: Path) -> int:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            code, body = call(home / "credd.sock", "GET", "/v1/status")
            if code == 200:
                return int(body["pid"])
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError("the demo's daemon never answered")


def _gone(pid: int, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(") ", 1)[1].startswith("Z"):
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.heavy  # long: started first, so it does not end the run alone
@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTERM])
def test_the_demo_cleans_up_on_hangup_and_terminate(sig: signal.Signals) -> None:
    proc = _demo()
    try:
        seen = _until(proc, "get_token()")
        home = _home_of(seen)
        pid = _daemon_pid(home)
        # A closed terminal hangs up the whole process group (the daemon takes SIGHUP as
        # "reload"); `timeout` terminates the demo alone.
        if sig == signal.SIGHUP:
            os.kill(pid, sig)
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + sig, out
    assert "cleaning up" in out and "Traceback" not in out
    assert _gone(pid), "the demo's daemon outlived it"
    assert not home.exists()


def test_the_demo_says_what_happened_and_starts_no_stray_daemon() -> None:
    proc = _demo("12")
    try:
        seen = _until(proc, "get_token()")
        home = _home_of(seen)
        os.kill(_daemon_pid(home), signal.SIGKILL)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, out
    assert "every caller served" not in out and "the daemon exited" in out
    last = [line for line in out.splitlines() if "done:" in line][-1]
    assert " not (see above)" in last, out
    assert not home.exists()


def test_the_demo_ends_with_the_commands_that_start_real_use() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "coactive_credd", "demo", "--duration", "3"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    tail = out.stdout.strip().splitlines()[-3:]
    assert [line.split()[1] for line in tail] == ["login", "install-service", "token"], tail
    assert "callers served" in out.stdout


def _on_pty(argv: list[str], env: dict[str, str]) -> tuple[int, int]:
    import pty

    pid, fd = pty.fork()
    if pid == 0:
        try:
            os.execve(sys.executable, [sys.executable, "-m", "coactive_credd", *argv], env)  # noqa: S606
        finally:
            os._exit(127)
    return pid, fd


def _read(fd: int, until: bytes, timeout: float = 30) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while until not in seen and time.monotonic() < deadline:
        if select.select([fd], [], [], 0.1)[0]:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    return seen


def _finish(pid: int, fd: int) -> tuple[int, bytes]:
    rest = _read(fd, b"\0", timeout=20)
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), rest


def test_a_token_pasted_on_a_terminal_with_stdin_flag_is_not_echoed(
    home: Path, fake: FakeCoactive
) -> None:
    argv = ["login", "--base-url", fake.base_url, "--personal-token-stdin"]
    pid, fd = _on_pty(argv, dict(os.environ))
    seen = _read(fd, b": ")
    assert b"Personal token" in seen, seen
    os.write(fd, PERSONAL_TOKEN.encode() + b"\n")
    code, rest = _finish(pid, fd)
    assert code == 0, seen + rest
    assert PERSONAL_TOKEN.encode() not in seen + rest


def test_ctrl_d_at_the_token_prompt_is_one_clean_line(home: Path, fake: FakeCoactive) -> None:
    pid, fd = _on_pty(["login", "--profile", "prod", "--base-url", fake.base_url], dict(os.environ))
    seen = _read(fd, b"Personal token: ")
    os.write(fd, b"\x04")
    code, rest = _finish(pid, fd)
    text = (seen + rest).decode(errors="replace")
    assert code == 2, text
    assert "internal error" not in text and "EOFError" not in text
    lines = [line for line in text.split("Personal token: ", 1)[1].splitlines() if line.strip()]
    assert len(lines) == 1 and "--profile prod" in lines[0], text


def test_a_meaningless_autostart_setting_is_refused(home: Path) -> None:
    for argv in (["token"], ["refresh"], ["exec", "--", "true"]):
        out = run_cli(*argv, env={"COACTIVE_CREDD_AUTOSTART": "nope"})
        assert out.returncode == 2, out
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and "COACTIVE_CREDD_AUTOSTART='nope'" in lines[0], out.stderr


@pytest.mark.parametrize(
    ("argv", "answers", "prompt"),
    [
        (["unlock"], [], b"Vault passphrase: "),
        (["rekey", "--passphrase"], [], b"New passphrase: "),
        (["rekey", "--passphrase"], [b"a new passphrase\n"], b"Again: "),
    ],
)
def test_ctrl_d_at_the_passphrase_prompt_is_one_clean_line(
    home: Path, fake: FakeCoactive, argv: list[str], answers: list[bytes], prompt: bytes
) -> None:
    from .conftest import login

    assert login(fake).returncode == 0  # a vault (with its key file) to rekey
    before = sorted(p.name for p in home.rglob("*"))
    pid, fd = _on_pty(argv, dict(os.environ))
    seen = b""
    for answer in answers:
        seen += _read(fd, b"passphrase: ")
        os.write(fd, answer)
    seen += _read(fd, prompt)
    assert prompt in seen, seen
    os.write(fd, b"\x04")
    code, rest = _finish(pid, fd)
    text = (seen + rest).decode(errors="replace")
    assert code == 2, text
    assert "internal error" not in text and "EOFError" not in text and "Traceback" not in text
    lines = [line for line in text.split(prompt.decode(), 1)[1].splitlines() if line.strip()]
    assert len(lines) == 1 and "no passphrase given" in lines[0], text
    assert sorted(p.name for p in home.rglob("*")) == before  # nothing was changed
