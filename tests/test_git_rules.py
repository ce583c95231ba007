"""The git helper's rules (SPEC, git): which origin, which identity, which deadline, and
nothing from the user's environment — through real ``git credential`` and a real daemon."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from urllib.parse import urlencode

import pytest
from coactive_credd.testing.fakeupstream import FakeCoactive

from .conftest import Daemon, call, login, run_cli
from .test_git_helper import fill, git, git_env, helper, host_of, parse

__all__ = ["git_env"]  # the fixture, used here by name

BIN = Path(sys.executable).parent


def _helper_globally(env: dict[str, str]) -> None:
    assert git(env, "config", "--global", "credential.helper", "coactive").returncode == 0


def _reload(daemon: Daemon) -> None:
    assert daemon.post("/v1/admin/reload")[0] == 200


@pytest.mark.verified_login
def test_a_username_that_names_no_profile_gets_nothing(
    daemon: Daemon, fake: FakeCoactive, git_env: dict[str, str]
) -> None:
    fake.next_tokens = ["cat_prod-token"]
    login(fake, "prod")
    _reload(daemon)
    _helper_globally(git_env)
    host = host_of(fake)
    r = fill(git_env, f"http://ops-bot@{host}/repo.git")
    assert "password=" not in r.stdout and r.returncode != 0
    got = parse(fill(git_env, f"http://prod@{host}/repo.git").stdout)
    assert (got["username"], got["password"]) == ("prod", "cat_prod-token")
    assert run_cli("logout", "--profile", "prod").returncode == 0
    _reload(daemon)
    r = fill(git_env, f"http://prod@{host}/repo.git")
    assert "password=" not in r.stdout and r.returncode != 0  # not default's token
    assert parse(fill(git_env, f"http://{host}/repo.git").stdout)["username"] == "default"


def test_without_username_default_wins_then_the_only_profile(
    daemon: Daemon, fake: FakeCoactive
) -> None:
    login(fake, "Prod_1.x")  # sorts before "default" in ASCII
    _reload(daemon)
    ask = f"protocol=http\nhost={host_of(fake)}\n\n"
    assert parse(helper("get", ask).stdout)["username"] == "default"
    chosen = parse(helper("get", ask, {"COACTIVE_PROFILE": "Prod_1.x"}).stdout)
    assert chosen["username"] == "Prod_1.x"
    # COACTIVE_PROFILE naming a profile of another origin: the default one of this origin.
    assert parse(helper("get", ask, {"COACTIVE_PROFILE": "elsewhere"}).stdout)["username"] == (
        "default"
    )
    assert run_cli("logout", "--profile", "default").returncode == 0
    _reload(daemon)
    assert parse(helper("get", ask).stdout)["username"] == "Prod_1.x"  # the only one
    login(fake, "staging")
    _reload(daemon)
    r = helper("get", ask)  # two, neither of them default
    assert (r.returncode, r.stdout) == (0, "")


@pytest.mark.parametrize(
    "host",
    [
        "evil.example@{host}",
        "{host}\r",
        "{host}\t",
        "{name}\t:{port}",
        "{host}/path",
        "{host}?x",
        "{host}#x",
        "{host} ",
        "{name}:+{port}",
        "{name}:{port}:{port}",
        "[{name}]:{port}",
    ],
)
def test_only_the_exact_origin_matches(daemon: Daemon, fake: FakeCoactive, host: str) -> None:
    name, port = host_of(fake).rsplit(":", 1)
    sent = host.format(host=host_of(fake), name=name, port=port)
    r = helper("get", f"protocol=http\nhost={sent}\n\n")
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    # The daemon holds the same rule, whoever asks it.
    status, _ = daemon.get("/v1/credential?" + urlencode({"protocol": "http", "host": sent}))
    assert status == 404


def test_userinfo_smuggled_into_the_host_gets_nothing_through_git(
    daemon: Daemon, fake: FakeCoactive, git_env: dict[str, str]
) -> None:
    _helper_globally(git_env)
    r = fill(git_env, f"http://a@evil.example@{host_of(fake)}/repo.git")
    assert "password=" not in r.stdout and r.returncode != 0


def test_password_expiry_is_the_serving_deadline(daemon: Daemon, fake: FakeCoactive) -> None:
    got = parse(helper("get", f"protocol=http\nhost={host_of(fake)}\n\n").stdout)
    status, doc = daemon.get("/v1/token")
    assert status == 200 and doc["access_token"] == got["password"]
    expires_at = datetime.fromisoformat(doc["expires_at"].replace("Z", "+00:00")).timestamp()
    assert int(got["password_expiry_utc"]) == int(expires_at - 30)  # the default skew


def test_other_hosts_never_wait_on_a_wedged_daemon(
    daemon: Daemon, fake: FakeCoactive, git_env: dict[str, str]
) -> None:
    _helper_globally(git_env)
    os.kill(daemon.proc.pid, signal.SIGSTOP)
    try:
        start = time.monotonic()
        r = git(git_env, "credential", "fill", stdin="url=https://example.com/x.git\n\n")
        assert time.monotonic() - start < 5, "git waited on the stopped daemon"
        assert "password=" not in r.stdout
        start = time.monotonic()
        r = helper("get", "protocol=https\nhost=github.com\n\n")
        assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
        assert time.monotonic() - start < 5
    finally:
        os.kill(daemon.proc.pid, signal.SIGCONT)


def test_no_config_means_no_question_to_the_daemon(daemon: Daemon, fake: FakeCoactive) -> None:
    (daemon.home / "config.toml").rename(daemon.home / "config.toml.away")
    try:
        r = helper("get", f"protocol=http\nhost={host_of(fake)}\n\n")
        assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
        # Unless COACTIVE_CREDD_SOCKET names a daemon whose config is elsewhere (a sidecar).
        sidecar = {"COACTIVE_CREDD_SOCKET": str(daemon.socket)}
        r = helper("get", f"protocol=http\nhost={host_of(fake)}\n\n", sidecar)
        assert parse(r.stdout)["password"] == fake.issued[-1]
    finally:
        (daemon.home / "config.toml.away").rename(daemon.home / "config.toml")


@pytest.mark.parametrize(
    "text",
    [
        '# edited by hand\n[profiles.default]\nbase_url = "{url}/"  # trailing comment\n',
        "[profiles]\ndefault = {{ base_url = '{url}' }}\n",
        "[profiles.default]\n  base_url='{url}'\n",
    ],
)
def test_a_config_edited_by_hand_still_finds_its_origin(
    daemon: Daemon, fake: FakeCoactive, text: str
) -> None:
    path = daemon.home / "config.toml"
    saved = path.read_text()
    path.write_text(text.format(url=fake.base_url))
    try:
        got = parse(helper("get", f"protocol=http\nhost={host_of(fake)}\n\n").stdout)
        assert got["password"] == fake.issued[-1]
    finally:
        path.write_text(saved)


def test_a_curlrc_changes_nothing_git_reads(
    home: Path, fake: FakeCoactive, git_env: dict[str, str]
) -> None:
    login(fake)
    (Path(git_env["HOME"]) / ".curlrc").write_text(
        '-w "\\n"\n-i\n-v\nproxy = "http://127.0.0.1:9"\n'
    )
    env = {
        **git_env,
        "COACTIVE_CREDD_HOME": str(home),
        "COACTIVE_CREDD_AUTOSTART": "1",
        "COACTIVE_CREDD_COMMAND": str(BIN / "coactive-credd"),
        "http_proxy": "http://127.0.0.1:9",
        "ALL_PROXY": "http://127.0.0.1:9",
    }
    _helper_globally(env)
    try:
        r = fill(env, f"{fake.base_url}/repo.git")  # starts the daemon, then answers
        assert r.returncode == 0, r.stderr
        assert parse(r.stdout)["password"] == fake.issued[-1]
        r = subprocess.run(
            ["dash", str(Path(__file__).parent.parent / "client_shim/sh/coactive-token")],
            capture_output=True,
            text=True,
            env=env,
            timeout=30,
        )
        assert (r.returncode, r.stdout, r.stderr) == (0, fake.issued[-1] + "\n", "")
    finally:
        if (home / "credd.sock").exists():
            os.kill(call(home / "credd.sock", "GET", "/v1/status")[1]["pid"], signal.SIGTERM)
