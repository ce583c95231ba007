"""git-credential-coactive, with real git and fed directly, against a real daemon.

git here runs the helper for ``credential.<url>.helper = coactive`` (or a global
``credential.helper``) with a private HOME and global config; the helper is found on PATH.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import socketserver
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from coactive_credd.testing.fakeupstream import FakeCoactive

from .conftest import Daemon, leaked, login, run_cli

ROOT = Path(__file__).resolve().parent.parent
HELPER = ROOT / "client_shim" / "sh" / "git-credential-coactive"


@pytest.fixture
def git_env(tmp_path: Path) -> dict[str, str]:
    """Environment for git: private HOME and config, the helper first on PATH, no prompts."""
    if shutil.which("git") is None:
        pytest.fail("git is not installed")
    gh = tmp_path / "githome"
    gh.mkdir()
    env = {
        **os.environ,
        "HOME": str(gh),
        "GIT_CONFIG_GLOBAL": str(gh / ".gitconfig"),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ASKPASS": "",
        "SSH_ASKPASS": "",
        "PATH": f"{HELPER.parent}{os.pathsep}{os.environ['PATH']}",
    }
    (gh / ".gitconfig").write_text("")
    return env


def git(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", *args], input=stdin, capture_output=True, text=True, env=env, timeout=60
    )


def helper(
    action: str, stdin: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["dash", str(HELPER), action],
        input=stdin,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
    )


def parse(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def host_of(fake: FakeCoactive) -> str:
    return fake.base_url.split("://", 1)[1]


@pytest.fixture
def configured(git_env: dict[str, str], fake: FakeCoactive) -> dict[str, str]:
    r = git(git_env, "config", "--global", f"credential.{fake.base_url}.helper", "coactive")
    assert r.returncode == 0, r.stderr
    return git_env


def fill(env: dict[str, str], url: str) -> subprocess.CompletedProcess[str]:
    return git(env, "credential", "fill", stdin=f"url={url}\n\n")


# ---- real git ---------------------------------------------------------------------------


def test_fill_returns_the_daemons_current_token(
    daemon: Daemon, fake: FakeCoactive, configured: dict[str, str]
) -> None:
    r = fill(configured, fake.base_url + "/repo.git")
    assert r.returncode == 0, r.stderr
    got = parse(r.stdout)
    assert got["username"] == "default"
    assert got["password"] == fake.issued[-1]
    # password_expiry_utc: git learned it in 2.41 and Debian 12's 2.39 drops it from fill's
    # output, so the helper's own answer is where it is checked (test_authtype_...).
    assert not leaked(r.stderr, set(fake.issued))


def test_reject_makes_the_next_fill_return_a_new_token_with_one_login(
    daemon: Daemon, fake: FakeCoactive, configured: dict[str, str]
) -> None:
    old = parse(fill(configured, fake.base_url).stdout)
    logins = fake.logins
    rejected = "".join(f"{k}={v}\n" for k, v in old.items()) + "\n"
    rejected = f"protocol=http\nhost={host_of(fake)}\n" + rejected
    for _ in range(3):  # reported again and again, as concurrent git processes would
        r = git(configured, "credential", "reject", stdin=rejected)
        assert r.returncode == 0, r.stderr
        assert r.stdout == ""
        assert not leaked(r.stderr, set(fake.issued))
    assert fake.logins == logins + 1
    new = parse(fill(configured, fake.base_url).stdout)
    assert new["password"] == fake.issued[-1]
    assert new["password"] != old["password"]


def test_fill_for_another_host_gets_nothing_even_when_configured_globally(
    daemon: Daemon, fake: FakeCoactive, git_env: dict[str, str]
) -> None:
    assert git(git_env, "config", "--global", "credential.helper", "coactive").returncode == 0
    r = fill(git_env, "https://github.com/coactive-ai/coactive-credd.git")
    assert r.returncode != 0  # no helper answered and prompting is off
    assert "password=" not in r.stdout
    assert not leaked(r.stdout + r.stderr, set(fake.issued))
    # The helper itself, fed the same request, prints nothing at all.
    direct = helper("get", "protocol=https\nhost=github.com\n\n")
    assert (direct.returncode, direct.stdout, direct.stderr) == (0, "", "")
    # The same helper still answers for the configured Coactive host.
    assert parse(fill(git_env, fake.base_url).stdout)["password"] == fake.issued[-1]


def test_approve_changes_nothing(
    daemon: Daemon, fake: FakeCoactive, configured: dict[str, str]
) -> None:
    got = parse(fill(configured, fake.base_url).stdout)
    before = sorted(p.name for p in daemon.home.iterdir())
    logins = fake.logins
    cred = f"protocol=http\nhost={host_of(fake)}\nusername=default\npassword={got['password']}\n\n"
    r = git(configured, "credential", "approve", stdin=cred)
    assert (r.returncode, r.stdout) == (0, "")
    r = git(configured, "credential", "approve", stdin=cred.replace(got["password"], "other"))
    assert (r.returncode, r.stdout) == (0, "")
    assert fake.logins == logins
    assert sorted(p.name for p in daemon.home.iterdir()) == before
    assert parse(fill(configured, fake.base_url).stdout)["password"] == got["password"]


# ---- the helper fed directly ------------------------------------------------------------


def test_authtype_capability_answers_a_bearer_credential(
    daemon: Daemon, fake: FakeCoactive
) -> None:
    r = helper(
        "get",
        f"capability[]=authtype\ncapability[]=state\nprotocol=http\nhost={host_of(fake)}\n"
        'wwwauth[]=Bearer realm="coactive"\n\n',
    )
    assert r.returncode == 0
    lines = r.stdout.splitlines()
    assert lines[0] == "capability[]=authtype"
    got = parse(r.stdout)
    assert got["authtype"] == "Bearer"
    assert got["credential"] == fake.issued[-1]
    assert "password" not in got
    # the last moment the daemon itself serves the token: expires_at - skew (30 s)
    _, status = daemon.get("/v1/status")
    expires_at = datetime.datetime.fromisoformat(status["profiles"][0]["expires_at"])
    assert int(got["password_expiry_utc"]) == int(expires_at.timestamp()) - 30


def test_parser_ignores_unknown_keys_and_stops_at_the_blank_line(
    daemon: Daemon, fake: FakeCoactive
) -> None:
    r = helper(
        "get",
        f"protocol=http\nfuture_key=a=b=c\nnot a pair\nhost={host_of(fake)}\npath=x/y\n\n"
        "host=github.com\n",
    )
    assert parse(r.stdout)["password"] == fake.issued[-1]
    # EOF without a blank line (or a final newline) ends the input too.
    r = helper("get", f"protocol=http\nhost={host_of(fake)}")
    assert parse(r.stdout)["password"] == fake.issued[-1]
    # A value after the blank line never overrides what came before it.
    r = helper("get", "protocol=https\nhost=github.com\n\nprotocol=http\nhost=" + host_of(fake))
    assert r.stdout == ""


@pytest.mark.parametrize(
    "request_text",
    [
        "protocol=https\nhost={host}\n",  # scheme differs
        "protocol=http\nhost=127.0.0.1\n",  # port differs (default port)
        "protocol=http\nhost=127.0.0.2:{port}\n",  # host differs
        "protocol=http\n",  # no host
        "host={host}\n",  # no protocol
    ],
)
def test_no_answer_unless_scheme_host_and_port_match(
    daemon: Daemon, fake: FakeCoactive, request_text: str
) -> None:
    host = host_of(fake)
    text = request_text.format(host=host, port=host.rsplit(":", 1)[1])
    r = helper("get", text + "\n")
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")


@pytest.mark.verified_login
def test_username_and_coactive_profile_pick_among_matching_profiles(
    daemon: Daemon, fake: FakeCoactive
) -> None:
    fake.next_tokens = ["cat_second-profile"]
    login(fake, "second")
    assert daemon.post("/v1/admin/reload")[0] == 200
    host = host_of(fake)
    base = f"protocol=http\nhost={host}\n"
    first = parse(helper("get", base + "\n").stdout)
    assert first["username"] == "default"
    second = parse(helper("get", base + "username=second\n\n").stdout)
    assert (second["username"], second["password"]) == ("second", "cat_second-profile")
    # A username that is no profile: nothing, never another identity's token.
    assert helper("get", base + "username=someone\n\n").stdout == ""
    preferred = parse(helper("get", base + "\n", env={"COACTIVE_PROFILE": "second"}).stdout)
    assert preferred["username"] == "second"


def test_host_matches_without_case_and_with_the_default_port_folded(
    daemon: Daemon, fake: FakeCoactive
) -> None:
    # A profile at the default port of a loopback address: git's host has no port, or :80.
    r = run_cli(
        "login",
        "--profile",
        "portless",
        "--base-url",
        "http://LocalHost",
        "--personal-token-stdin",
        "--no-verify",
        input="cpt_unused\n",
    )
    assert r.returncode == 0, r.stderr
    assert daemon.post("/v1/admin/reload")[0] == 200
    for host in ("localhost", "LOCALHOST:80"):
        got = helper("get", f"protocol=http\nhost={host}\n\n")
        # Nothing listens on port 80, so there is no token: the helper matched the profile,
        # said why on stderr, and let git move on.
        assert got.stdout == ""
        assert "portless" in got.stderr, got.stderr
    assert helper("get", "protocol=http\nhost=localhost:8080\n\n").stderr == ""


@pytest.mark.verified_login
def test_erase_reports_the_token_only_for_a_matching_host(
    daemon: Daemon, fake: FakeCoactive
) -> None:
    token = fake.issued[-1]
    host = host_of(fake)
    logins = fake.logins
    # Another host, no password, or a token that is no longer current: nothing is replaced.
    for text in (
        f"protocol=https\nhost=github.com\npassword={token}\n",
        f"protocol=http\nhost={host}\nusername=default\n",
        f"protocol=http\nhost={host}\npassword=not-the-current-token\n",
    ):
        r = helper("erase", text + "\n")
        assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    assert fake.logins == logins
    # The current token, reported as a `credential` (authtype flow): replaced once.
    r = helper(
        "erase", f"capability[]=authtype\nprotocol=http\nhost={host}\ncredential={token}\n\n"
    )
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    assert fake.logins == logins + 1
    assert fake.issued[-1] != token


def test_store_and_erase_succeed_quietly_when_the_daemon_is_down(
    home: Path, fake: FakeCoactive
) -> None:
    text = f"protocol=http\nhost={host_of(fake)}\nusername=default\npassword=x\n\n"
    for action in ("get", "store", "erase", "unknown-action"):
        r = helper(action, text)
        assert (r.returncode, r.stdout, r.stderr) == (0, "", ""), action


def test_helper_is_posix_sh() -> None:
    """dash parses both shims, and ShellCheck finds nothing beyond POSIX sh in them.

    ShellCheck's SC3xxx checks ("In POSIX sh, X is undefined") cover every line statically,
    as devscripts' checkbashisms would, from one small Debian package (.ci/setup installs it);
    its style warnings (SC1007 for the deliberate ``a= b=``) are not this test's business.
    """
    for script in (HELPER, HELPER.parent / "coactive-token"):
        r = subprocess.run(["dash", "-n", str(script)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        r = subprocess.run(
            ["shellcheck", "--shell=sh", "--format=gcc", str(script)],
            capture_output=True,
            text=True,
        )
        found = [ln for ln in r.stdout.splitlines() if " error: " in ln or "[SC3" in ln]
        assert not found, "\n".join(found)


@pytest.fixture
def sha_tools_hidden(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A PATH on which the helper finds openssl but not sha256sum."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("curl", "awk", "sed", "date", "id", "uname", "openssl", "dash"):
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    yield {"PATH": str(bin_dir)}


def test_erase_hashes_with_openssl_when_sha256sum_is_missing(
    daemon: Daemon, fake: FakeCoactive, sha_tools_hidden: dict[str, str]
) -> None:
    token = fake.issued[-1]
    logins = fake.logins
    r = subprocess.run(
        [str(Path(sha_tools_hidden["PATH"]) / "dash"), str(HELPER), "erase"],
        input=f"protocol=http\nhost={host_of(fake)}\npassword={token}\n\n",
        capture_output=True,
        text=True,
        env={**os.environ, **sha_tools_hidden},
        timeout=60,
    )
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    assert fake.logins == logins + 1


# ---- the query and the parser, against a stand-in daemon ---------------------------------


class _StandIn(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


@pytest.fixture
def stand_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, dict[str, Any]]]:
    """A stand-in daemon on a Unix socket: ``answers[path]`` is ``(status, body)``; the
    request paths it was sent go to ``answers["seen"]``.  The config names one profile at
    https://api.coactive.ai, so the helper asks about that origin only."""
    answers: dict[str, Any] = {"seen": []}
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    (home / "config.toml").write_text(
        '[profiles."coactive"]\nbase_url = "https://api.coactive.ai"\n'
    )
    monkeypatch.setenv("COACTIVE_CREDD_HOME", str(home))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            answers["seen"].append(self.path)
            status, doc = answers[self.path.split("?", 1)[0]]
            body = json.dumps(doc, separators=(",", ":")).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def address_string(self) -> str:
            return "unix"

        def log_message(self, format: str, *args: Any) -> None:
            pass

    path = str(tmp_path / "s.sock")
    server = _StandIn(path, Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield path, answers
    server.shutdown()
    server.server_close()


def _token_answer(profile: str, token: str) -> dict[str, Any]:
    return {
        "profile": profile,
        "access_token": token,
        "token_type": "Bearer",
        "expires_at": "2030-01-01T00:00:00Z",
        "expires_in": 3600,
        "password_expiry_utc": 1893455970,
    }


def test_one_request_carries_gits_values_intact(stand_in: tuple[str, dict[str, Any]]) -> None:
    path, answers = stand_in
    answers["/v1/credential"] = (200, _token_answer("coactive", "cat_stand-in"))
    env = {"COACTIVE_CREDD_SOCKET": path, "COACTIVE_PROFILE": "pre ferred&x=1"}
    host = "API.coactive.ai:443"
    user = "me@example.com?&username=x %41+"
    r = helper("get", f"protocol=https\nhost={host}\nusername={user}\n\n", env)
    assert r.returncode == 0 and r.stderr == ""
    got = parse(r.stdout)
    assert (got["username"], got["password"]) == ("coactive", "cat_stand-in")
    assert got["password_expiry_utc"] == "1893455970"  # the daemon's, as it sent it
    assert len(answers["seen"]) == 1  # one request, nothing else
    route, query = answers["seen"][0].split("?", 1)
    assert route == "/v1/credential"
    assert parse_qs(query, keep_blank_values=True, strict_parsing=True) == {
        "protocol": ["https"],
        "host": [host],
        "username": [user],
        "profile": ["pre ferred&x=1"],
    }
    # No username and no COACTIVE_PROFILE: neither is sent.
    answers["seen"].clear()
    helper("get", "protocol=https\nhost=api.coactive.ai\n\n", {"COACTIVE_CREDD_SOCKET": path})
    assert parse_qs(answers["seen"][0].split("?", 1)[1]) == {
        "protocol": ["https"],
        "host": ["api.coactive.ai"],
    }


def test_other_schemes_are_not_even_asked(stand_in: tuple[str, dict[str, Any]]) -> None:
    path, answers = stand_in
    answers["/v1/credential"] = (200, _token_answer("coactive", "cat_stand-in"))
    for protocol in ("ssh", "cert", "ftp"):
        r = helper(
            "get", f"protocol={protocol}\nhost=api.coactive.ai\n\n", {"COACTIVE_CREDD_SOCKET": path}
        )
        assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    assert answers["seen"] == []


@pytest.mark.parametrize(
    ("status", "doc", "stderr_has"),
    [
        (404, {"error": {"code": "no_match", "message": "no profile", "hint": "h"}}, None),
        (404, {"error": {"code": "not_found", "message": "no such path", "hint": "h"}}, None),
        (400, {"error": {"code": "bad_request", "message": "bad", "hint": "h"}}, None),
        # 424 reauth_required and 423 locked come from the real daemon: test_git_errors.py
        (503, "not json", "coactive-credd answered 503"),
        # 200s that are not a token answer git could carry.
        (200, _token_answer("coactive", "cat_bad\nusername=evil"), None),
        (200, _token_answer("coactive", ""), None),
        (200, _token_answer("bad name\npassword=x", "cat_ok"), None),
        (200, {"profile": "coactive"}, None),
        (200, "not json", None),
    ],
)
def test_anything_but_a_token_answer_prints_nothing_for_git(
    stand_in: tuple[str, dict[str, Any]], status: int, doc: Any, stderr_has: str | None
) -> None:
    path, answers = stand_in
    answers["/v1/credential"] = (status, doc)
    r = helper("get", "protocol=https\nhost=api.coactive.ai\n\n", {"COACTIVE_CREDD_SOCKET": path})
    assert (r.returncode, r.stdout) == (0, "")
    if stderr_has is None:
        assert r.stderr == ""
    else:
        assert r.stderr.startswith("git-credential-coactive: ") and stderr_has in r.stderr
        assert r.stderr.count("\n") == 1
    # erase and store stay quiet whatever the answer.
    for action in ("erase", "store"):
        r = helper(
            action,
            "protocol=https\nhost=api.coactive.ai\npassword=cat_ok\n\n",
            {"COACTIVE_CREDD_SOCKET": path},
        )
        assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
