"""Hints never change where a credential goes: every "log in again" names the same profile
and its --base-url; a refusal during Retry-After says when refresh works; a dead personal
token is told to make a new one; a mistyped profile gets the closest name."""

from __future__ import annotations

from pathlib import Path

from coactive_credd.testing.fakeupstream import FakeCoactive

from .conftest import PERSONAL_TOKEN, Daemon, login, run_cli, start_daemon


def _one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


def test_a_rejected_first_login_names_the_profile_and_its_base_url(
    home: Path, fake: FakeCoactive
) -> None:
    out = run_cli(
        "login", "--profile", "newp", "--base-url", fake.base_url, "--personal-token-stdin",
        input="cpt_not-a-known-token\n",
    )  # fmt: skip
    assert out.returncode == 5
    line = _one_line(out.stderr)
    assert f"coactive-credd login --profile newp --base-url {fake.base_url}" in line
    assert "generate a new personal token" in line and "Settings > Credentials" in line


def test_bearer_and_empty_token_hints_keep_the_profile_and_base_url(
    home: Path, fake: FakeCoactive
) -> None:
    for given in ("Bearer " + PERSONAL_TOKEN, "   "):
        out = run_cli(
            "login", "--profile", "prod", "--base-url", fake.base_url, "--personal-token-stdin",
            input=given + "\n",
        )  # fmt: skip
        assert out.returncode == 2
        line = _one_line(out.stderr)
        assert f"--profile prod --base-url {fake.base_url} --personal-token-stdin" in line, line
    bearer = run_cli("login", "--profile", "prod", "--personal-token-stdin", input="Bearer x.y\n")
    assert "Bearer" in bearer.stderr and "--profile prod" in bearer.stderr


def test_during_retry_after_the_hint_says_when_refresh_works(
    home: Path, fake: FakeCoactive
) -> None:
    login(fake, "default", "--no-verify")  # no token yet
    fake.fault, fake.retry_after = "503", "120"
    d = start_daemon(home)
    try:
        out = run_cli("token")
        assert out.returncode == 6
        line = _one_line(out.stderr)
        assert "refresh --profile default` works in 1" in line, line  # 120 s, give or take
    finally:
        d.stop()


def test_a_dead_personal_token_is_told_to_make_a_new_one(
    daemon: Daemon, fake: FakeCoactive
) -> None:
    fake.revoke(PERSONAL_TOKEN)
    out = run_cli("refresh")
    assert out.returncode == 5
    for text in (out.stderr, run_cli("status").stdout):
        assert "generate a new personal token (Coactive > Settings > Credentials" in text, text
        assert f"coactive-credd login --profile default --base-url {fake.base_url}" in text


def test_a_mistyped_profile_gets_the_closest_name(daemon: Daemon, fake: FakeCoactive) -> None:
    login(fake, "prod")
    out = run_cli("token", "--profile", "prdo")
    assert out.returncode == 4
    assert "did you mean `--profile prod`?" in _one_line(out.stderr)
    env = run_cli("token", env={"COACTIVE_PROFILE": "prdo"})
    line = _one_line(env.stderr)
    assert env.returncode == 4 and "COACTIVE_PROFILE=prdo" in line and "`--profile prod`" in line


def test_an_empty_profile_name_is_refused_not_taken_for_default(
    home: Path, fake: FakeCoactive
) -> None:
    login(fake)
    out = run_cli("logout", "--profile", "")
    assert out.returncode == 2 and "--profile is empty" in _one_line(out.stderr)
    assert "default" in (home / "config.toml").read_text()
    assert run_cli("token", "--profile", "").returncode == 2
