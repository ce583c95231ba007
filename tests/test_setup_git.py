"""``coactive-credd setup-git`` with real git: no other helper ever stores the token."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from coactive_credd.testing.fakeupstream import FakeCoactive

from .conftest import Daemon, login, run_cli
from .test_git_helper import fill, git, git_env, parse

__all__ = ["git_env"]  # the fixture, used here by name


def helpers(env: dict[str, str], url: str) -> list[str]:
    r = git(env, "config", "--global", "--get-all", f"credential.{url}.helper")
    return r.stdout.splitlines()


def fill_and_approve(env: dict[str, str], url: str) -> dict[str, str]:
    r = fill(env, url)
    assert r.returncode == 0, r.stderr
    assert git(env, "credential", "approve", stdin=r.stdout + "\n").returncode == 0
    return parse(r.stdout)


def test_a_store_helper_never_keeps_the_short_lived_token(
    daemon: Daemon, fake: FakeCoactive, git_env: dict[str, str]
) -> None:
    stored = Path(git_env["HOME"]) / ".git-credentials"
    assert git(git_env, "config", "--global", "credential.helper", "store").returncode == 0
    r = run_cli("setup-git", env=git_env)
    assert r.returncode == 0, r.stderr
    got = fill_and_approve(git_env, f"{fake.base_url}/repo.git")
    assert got["password"] == fake.issued[-1]
    assert not stored.exists() or fake.issued[-1] not in stored.read_text()
    # Other hosts still get the user's store helper.
    git(
        git_env,
        "credential",
        "approve",
        stdin="url=https://example.com\nusername=u\npassword=p\n\n",
    )
    assert "example.com" in stored.read_text()


def test_a_helper_configured_later_never_answers_before_the_daemon(
    daemon: Daemon, fake: FakeCoactive, git_env: dict[str, str]
) -> None:
    """A later `credential.helper=store` comes after coactive: it may keep a copy (see the
    README), but git asks the daemon first, so a stale copy is never sent."""
    assert run_cli("setup-git", env=git_env).returncode == 0
    assert git(git_env, "config", "--global", "credential.helper", "store").returncode == 0
    old = fill_and_approve(git_env, f"{fake.base_url}/repo.git")["password"]
    assert daemon.post("/v1/token/refresh")[0] == 200
    new = fill_and_approve(git_env, f"{fake.base_url}/repo.git")["password"]
    assert new == fake.issued[-1] != old


def test_the_old_advice_lets_store_keep_the_token(
    daemon: Daemon, fake: FakeCoactive, git_env: dict[str, str]
) -> None:
    """Why setup-git writes the empty helper: the one-line config leaks the token to store."""
    git(git_env, "config", "--global", "credential.helper", "store")
    git(git_env, "config", "--global", f"credential.{fake.base_url}.helper", "coactive")
    fill_and_approve(git_env, f"{fake.base_url}/repo.git")
    assert fake.issued[-1] in (Path(git_env["HOME"]) / ".git-credentials").read_text()


def test_setup_git_is_idempotent_and_names_the_origin_only(
    home: Path, fake: FakeCoactive, git_env: dict[str, str]
) -> None:
    login(fake)
    for _ in range(2):
        r = run_cli("setup-git", env=git_env)
        assert r.returncode == 0, r.stderr
        assert helpers(git_env, fake.base_url) == ["", "coactive"]
    assert f"credential.{fake.base_url}.helper" in r.stdout
    # A base_url with a path: git asks about the origin, so the origin is what is written.
    login(fake, "pathy", "--base-url", "https://API.example.com:443/coactive", "--no-verify")
    assert run_cli("setup-git", "--profile", "pathy", env=git_env).returncode == 0
    assert helpers(git_env, "https://api.example.com") == ["", "coactive"]


@pytest.mark.verified_login
def test_a_second_profile_of_the_same_origin_is_named_for_git(
    daemon: Daemon, fake: FakeCoactive, git_env: dict[str, str]
) -> None:
    fake.next_tokens = ["cat_prod-token"]
    login(fake, "prod")
    assert daemon.post("/v1/admin/reload")[0] == 200
    assert run_cli("setup-git", "--profile", "prod", env=git_env).returncode == 0
    got = parse(fill(git_env, f"{fake.base_url}/repo.git").stdout)
    assert (got["username"], got["password"]) == ("prod", "cat_prod-token")


def test_unknown_profile_is_one_line_and_exit_4(home: Path, git_env: dict[str, str]) -> None:
    r = run_cli("setup-git", "--profile", "nope", env=git_env)
    assert r.returncode == 4
    assert r.stderr.count("\n") == 1 and "coactive-credd login --profile nope" in r.stderr
    assert git(git_env, "config", "--global", "--list").stdout == ""


@pytest.mark.verified_login
def test_setup_git_again_for_the_default_really_switches_back(
    daemon: Daemon, fake: FakeCoactive, git_env: dict[str, str]
) -> None:
    default_token = fake.issued[-1]
    fake.next_tokens = ["cat_prod-token"]
    login(fake, "prod")
    assert daemon.post("/v1/admin/reload")[0] == 200
    assert run_cli("setup-git", "--profile", "prod", env=git_env).returncode == 0
    assert parse(fill(git_env, f"{fake.base_url}/repo.git").stdout)["password"] == "cat_prod-token"
    r = run_cli("setup-git", env=git_env)
    assert r.returncode == 0 and "profile 'default'" in r.stdout, r
    assert "username removed" in r.stdout
    user = git(git_env, "config", "--global", "--get-all", f"credential.{fake.base_url}.username")
    assert user.stdout == ""
    got = parse(fill(git_env, f"{fake.base_url}/repo.git").stdout)
    assert got["password"] == default_token
    doctor = run_cli("doctor", "--json", env=git_env)
    gits = [f for f in json.loads(doctor.stdout)["findings"] if f["check"] == "git"]
    assert [f["status"] for f in gits] == ["ok"], gits
    assert f"git gets profile 'default' for {fake.base_url}" in gits[0]["message"]
    assert run_cli("setup-git", "--profile", "prod", env=git_env).returncode == 0
    doctor = run_cli("doctor", "--json", env=git_env)
    gits = [f for f in json.loads(doctor.stdout)["findings"] if f["check"] == "git"]
    assert "profile 'prod'" in gits[0]["message"] and ".username = prod" in gits[0]["message"]
