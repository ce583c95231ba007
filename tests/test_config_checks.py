"""config.toml checks itself: a typo in a section or key, or a value of the wrong type, is one
line naming the file, the line and the closest known name, for serve, login, doctor and a
reload (which keeps serving). login rewrites only the lines it changes."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
from coactive_credd.testing.fakeupstream import FakeCoactive

from .conftest import PERSONAL_TOKEN, Daemon, login, run_cli

TYPOS = [
    # (file text, line, the name it should have been)
    ('[profiles.default]\nbase_ulr = "https://x.example"\n', 2, "base_url"),
    ("# tuning\n[deamon]\nskew = 10\n", 2, "daemon"),
    ("[daemon]\n\nskw = 10\n", 3, "skew"),
    (
        '[profiles.default]\nbase_url = "https://x.example"\ncredential_comand = ["pass"]\n',
        3,
        "credential_command",
    ),
    ("[daemon]\nallowed_uid = [1001]\n", 2, "allowed_uids"),
]
WRONG_TYPES = [
    ('[daemon]\nskew = "10"\n', 2, "skew"),
    ("[profiles.default]\nbase_url = 45\n", 2, "base_url"),
    ('[profiles.default]\ncredential_command = "pass show x"\n', 2, "credential_command"),
    ('[daemon]\nallowed_uids = "1001"\n', 2, "allowed_uids"),
]


def _write(home: Path, text: str) -> Path:
    path = home / "config.toml"
    path.write_text(text)
    path.chmod(0o600)
    return path


def _one_line_naming(text: str, path: Path, line: int, name: str) -> None:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    assert name in lines[0], text
    assert f"{path}:{line}" in lines[0], text
    assert "Traceback" not in text


@pytest.mark.parametrize(("text", "line", "name"), TYPOS + WRONG_TYPES)
def test_serve_refuses_a_config_it_cannot_read_whole(
    home: Path, text: str, line: int, name: str
) -> None:
    path = _write(home, text)
    out = run_cli("serve", timeout=30)
    assert out.returncode == 1
    _one_line_naming(out.stderr, path, line, name)
    if (text, line, name) in TYPOS:
        assert f"did you mean `{name}`?" in out.stderr
    assert not (home / "credd.sock").exists()


@pytest.mark.parametrize(("text", "line", "name"), TYPOS[:3])
def test_login_and_doctor_name_the_typo(
    home: Path, fake: FakeCoactive, text: str, line: int, name: str
) -> None:
    path = _write(home, text)
    out = run_cli(
        "login", "--base-url", fake.base_url, "--personal-token-stdin", input=PERSONAL_TOKEN + "\n"
    )
    assert out.returncode == 1
    _one_line_naming(out.stderr, path, line, name)
    assert path.read_text() == text  # nothing rewritten
    doctor = run_cli("doctor", "--json")
    assert doctor.returncode == 1
    problems = [f for f in json.loads(doctor.stdout)["findings"] if f["status"] == "problem"]
    assert any(
        f"{path}:{line}" in f["message"] and f"did you mean `{name}`?" in f["message"]
        for f in problems
    ), problems


def test_a_reload_with_a_typo_keeps_serving_the_previous_config(daemon: Daemon, home: Path) -> None:
    path = home / "config.toml"
    good = path.read_text()
    path.write_text(good + "\n[daemon]\nskw = 10\n")
    daemon.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    status = run_cli("status", "--json")
    while "skw" not in status.stdout and time.monotonic() < deadline:
        time.sleep(0.1)
        status = run_cli("status", "--json")
    assert "did you mean `skew`?" in status.stdout and f"{path}:" in status.stdout
    assert daemon.get("/v1/token?profile=default")[0] == 200
    assert daemon.proc.poll() is None


def test_login_keeps_comments_and_numbers_as_written(home: Path, fake: FakeCoactive) -> None:
    text = (
        "# my settings: keep them\n"
        "[daemon]\n"
        "skew = 45   # seconds, whole\n"
        "refresh_fraction = 0.3\n"
        "\n"
        "# the work account\n"
        "[profiles.work]\n"
        f'base_url = "{fake.base_url}"  # staging\n'
        'auth = "personal_token"\n'
    )
    path = _write(home, text)
    login(fake, "other")
    after = path.read_text()
    assert after.startswith(text), after  # every line the user wrote, as written
    assert "[profiles" in after[len(text) :] and "other" in after[len(text) :]
    login(fake, "work", "--proxy", "direct")
    again = path.read_text()
    assert "skew = 45   # seconds, whole\n" in again and "45.0" not in again
    assert f'base_url = "{fake.base_url}"  # staging\n' in again
    assert 'proxy = "direct"' in again and "# the work account\n" in again
    out = run_cli("logout", "--profile", "other")
    assert out.returncode == 0, out.stderr
    assert path.read_text().startswith("# my settings: keep them\n[daemon]\nskew = 45   #")
    assert "other" not in path.read_text()
