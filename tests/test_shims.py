"""One conformance suite for every client, driven by ``tests/vectors/conformance.json``.

Each case prepares a real ``coactive-credd serve`` and the fake Coactive (or none), then runs
each client for real as a subprocess: the POSIX sh shim under dash, the Python module's CLI,
the Node CLI, the Go CLI, ``coactive-credd token`` and the git credential helper. One vector
describes the call for all of them, and the test ids name the case and the client, so a
disagreement is a red test that says who disagrees (``pytest -v tests/test_shims.py`` shows
every client on every vector).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from coactive_credd.testing.fakeupstream import FakeCoactive, FakeCoactiveThread

from .conftest import (
    CLIENT_ID,
    CLIENT_SECRET,
    PERSONAL_TOKEN,
    Daemon,
    leaked,
    login,
    start_daemon,
    wait_ready,
)

ROOT = Path(__file__).resolve().parent.parent
SHIM = ROOT / "client_shim"
VECTORS = json.loads((Path(__file__).parent / "vectors" / "conformance.json").read_text())
CASES = {c["name"]: c for c in VECTORS["cases"]}
CLIS = ("sh", "python", "node", "go", "credd")
SHIMS = ("sh", "python", "node", "go")  # the coactive-token CLIs: one command line, this file's
PROGS = {name: c["prog"] for name, c in VECTORS["clients"].items()}


def _version() -> str:
    import tomllib

    return str(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"])


VERSION = _version()


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is not installed; .ci/run installs it")
    return path


@pytest.fixture(scope="session")
def go_cli(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Go CLI, built once per session."""
    out = tmp_path_factory.mktemp("go") / "coactive-token"
    subprocess.run(
        [_need("go"), "build", "-o", str(out), "./cmd/coactive-token"],
        cwd=SHIM / "go",
        check=True,
        timeout=110,
        env={**os.environ, "CGO_ENABLED": "0"},
    )
    return out


def cli_argv(shim: str, go_cli: Path | None) -> list[str]:
    if shim == "sh":
        return [_need("dash"), str(SHIM / "sh" / "coactive-token")]
    if shim == "python":
        return [sys.executable, str(SHIM / "python" / "coactive_token.py")]
    if shim == "node":
        return [_need("node"), str(SHIM / "node" / "bin" / "coactive-token.js")]
    if shim == "credd":
        return [sys.executable, "-m", "coactive_credd", "token"]
    assert go_cli is not None
    return [str(go_cli)]


def flags(case: dict[str, Any], shim: str) -> list[str]:
    """The case's command line for ``shim``: its raw ``argv``, or its ``args`` spelled out
    (``coactive-credd token`` spells --header as --format header)."""
    if "argv" in case:
        return [str(a) for a in case["argv"]]
    args = case.get("args", {})
    out: list[str] = []
    if "profile" in args:
        out += ["--profile", str(args["profile"])]
    if "min_ttl" in args:
        out += ["--min-ttl", str(args["min_ttl"])]
    if args.get("json"):
        out.append("--json")
    if args.get("header"):
        out += ["--format", "header"] if shim == "credd" else ["--header"]
    return out


def clients_of(case: dict[str, Any]) -> tuple[str, ...]:
    return SHIMS if case.get("clients", "all") == "shims" else CLIS


# Every cell of one set-up (the vector's ``setup``: a daemon with some state, or none) shares
# one daemon and one fake Coactive: a client only asks, so what one cell leaves behind is what
# the next one would have set up again. Starting a daemon (a login, then `serve`) costs about
# a second, and there are over two hundred cells.
def setup_key(case: dict[str, Any]) -> str:
    return json.dumps(case.get("setup", {}), sort_keys=True)


# set-up key -> the first case that has it (names the set-up: the param of `served`, groups)
SETUPS: dict[str, str] = {}
for _name, _case in CASES.items():
    SETUPS.setdefault(setup_key(_case), _name)

# Variables of the test run's own environment a cell must not see (the `home` fixture's list).
SCRUBBED = (
    "COACTIVE_CREDD_SOCKET",
    "COACTIVE_PROFILE",
    "NOTIFY_SOCKET",
    "LISTEN_FDS",
    "LISTEN_PID",
)


@dataclass
class SetUp:
    """One set-up made real: its home, the fake, the daemon (if any) and what clients get."""

    home: Path
    fake: FakeCoactive
    profile: str
    env: dict[str, str]  # COACTIVE_CREDD_HOME, and HOME for a curlrc
    socket: str
    daemon: Daemon | None = None
    cleanups: list[Callable[[], None]] = field(default_factory=list)


@dataclass
class Prepared:
    """One cell's view of its set-up: the env its client gets, what the fake had issued and
    how many logins it had counted when the cell began."""

    fake: FakeCoactive
    profile: str
    env: dict[str, str]
    socket: str
    daemon: Daemon | None = None
    logins_before: int = 0
    first_token: str | None = None

    def current_token(self) -> str:
        return self.fake.issued[-1]


def lock_vault() -> None:
    """Put the vault under a passphrase; a daemon started afterwards has it locked."""
    from coactive_credd.core import paths
    from coactive_credd.vault import Vault

    where = paths.resolve()
    vault = Vault(where.vault_file, where.key_file, where.lock_file, scrypt_cost=(10, 8, 1))
    vault.rekey_to_passphrase("correct horse battery staple")


def _make(setup: dict[str, Any], u: SetUp) -> None:
    """Prepare ``setup`` in ``u.home`` (COACTIVE_CREDD_HOME is set to it by the caller); what
    it starts is in ``u`` as soon as it runs, for the caller to stop when a later step fails."""
    home, fake, sock = u.home, u.fake, u.socket
    mode = setup.get("daemon", "up")
    if mode == "down":
        return
    if mode == "stale":
        # A socket file left behind by a daemon that died: connecting is refused.
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(sock)
        s.close()
        return
    if "curlrc" in setup:
        curl_home = home / "curl-home"
        curl_home.mkdir(exist_ok=True)
        (curl_home / ".curlrc").write_text(setup["curlrc"])
        u.env["HOME"] = str(curl_home)
    if "token" in setup:
        fake.next_tokens = [setup["token"]]
    if "first_expires_in" in setup:
        fake.expires_in = setup["first_expires_in"]
    if setup.get("verify", True):
        login(fake, u.profile)
    else:
        login(fake, u.profile, "--no-verify")
    if setup.get("revoked"):
        fake.revoke(PERSONAL_TOKEN)
    if setup.get("locked"):
        lock_vault()
    if "fault" in setup:
        fake.retry_after = None
        fake.fault = setup["fault"]
    args: list[str] = []
    if setup.get("socket") == "elsewhere":
        alt = Path(tempfile.mkdtemp(prefix="ccs-", dir="/tmp"))
        alt.chmod(0o700)
        u.cleanups.append(lambda: shutil.rmtree(alt, ignore_errors=True))
        sock = str(alt / "d.sock")
        args = ["--socket", sock]
    d = start_daemon(home, *args, wait=False)
    d.socket = Path(sock)
    u.daemon, u.socket = d, sock
    wait_ready(d, timeout=60)  # a poll: as long as a loaded machine needs, for every cell
    if "expires_in" in setup:
        fake.expires_in = setup["expires_in"]


@pytest.fixture(scope="module")
def served(request: pytest.FixtureRequest) -> Iterator[SetUp]:
    """The set-up of the case named by ``request.param`` (the first case that has it, from
    :data:`SETUPS`), made once for every cell that has it; the daemon's log is checked for
    tokens when the last of them is done."""
    setup = CASES[request.param].get("setup", {})
    # Short path under /tmp: a Unix socket path must fit in 108 bytes.
    home = Path(tempfile.mkdtemp(prefix="ccd-", dir="/tmp"))
    home.chmod(0o700)
    u: SetUp | None = None
    try:
        with FakeCoactiveThread(expires_in=3600) as fake:
            fake.add_personal_token(PERSONAL_TOKEN)
            fake.add_client(CLIENT_ID, CLIENT_SECRET)
            u = SetUp(
                home=home,
                fake=fake,
                profile=setup.get("profile", "default"),
                env={"COACTIVE_CREDD_HOME": str(home)},
                socket=str(home / "credd.sock"),
            )
            # the `home` fixture's environment, while the set-up is made (login, serve)
            with pytest.MonkeyPatch.context() as mp:
                mp.setenv("COACTIVE_CREDD_HOME", str(home))
                for var in SCRUBBED:
                    mp.delenv(var, raising=False)
                _make(setup, u)
            yield u
            if u.daemon is not None:
                u.daemon.stop()
                assert not leaked(u.daemon.log_text(), set(fake.issued)), "a token in the log"
    finally:
        if u is not None:
            if u.daemon is not None:
                u.daemon.stop()  # a set-up that failed half-way leaves no daemon behind
            for fn in u.cleanups:
                fn()
        shutil.rmtree(home, ignore_errors=True)


def prepare(u: SetUp, case: dict[str, Any]) -> Prepared:
    """Begin a cell of ``case`` on its set-up ``u``."""
    if u.daemon is not None:
        assert u.daemon.proc.poll() is None, (
            f"the daemon of this set-up exited ({u.daemon.proc.returncode}):\n"
            + u.daemon.log_text()
        )
    env = {**u.env, **case.get("env", {})}
    if u.daemon is not None:
        env.update({k: v.format(socket=u.socket) for k, v in case.get("env", {}).items()})
    return Prepared(
        fake=u.fake,
        profile=u.profile,
        env=env,
        socket=u.socket,
        daemon=u.daemon,
        logins_before=u.fake.logins,
        first_token=u.fake.issued[-1] if u.fake.issued else None,
    )


def run(
    argv: list[str], env: dict[str, str], stdin: str | None = None, *, clean: bool = False
) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run ``argv`` with ``env`` over this process's environment (without :data:`SCRUBBED`
    when ``clean``: a cell's client sees only its set-up's); returns it and its seconds."""
    base = {k: v for k, v in os.environ.items() if not (clean and k in SCRUBBED)}
    started = time.monotonic()
    proc = subprocess.run(
        argv,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env={**base, **env},
    )
    return proc, time.monotonic() - started


def record_cell(request: pytest.FixtureRequest, case_name: str, client: str) -> None:
    """Name this test as one client's cell on one vector: tests/conftest.py prints every cell
    that ran as one table at the end of the run (ok, FAIL, or - where it does not apply), from
    whichever xdist worker ran it."""
    case = CASES[case_name]
    applies = [*clients_of(case), *(["git"] if case.get("git") is not None else [])]
    request.node.user_properties.append(
        (
            "conformance",
            {
                "case": case_name,
                "order": list(CASES).index(case_name),
                "client": client,
                "columns": [*CLIS, "git"],
                "applies": applies,
            },
        )
    )


def on_setup(case_name: str, *rest: str, id: str) -> Any:
    """The parameters of one cell: its set-up (for :func:`served`, indirectly) first. Cells
    of a set-up with a daemon run in one xdist worker (group ``shims-<first case>``), so the
    daemon is started once; the ids stay the case's and the client's."""
    first = SETUPS[setup_key(CASES[case_name])]
    daemon = CASES[case_name].get("setup", {}).get("daemon", "up") == "up"
    marks = [pytest.mark.xdist_group(f"shims-{first}")] if daemon else []
    return pytest.param(first, case_name, *rest, id=id, marks=marks)


def cli_params() -> list[Any]:
    return [on_setup(c, s, id=f"{c}-{s}") for c, case in CASES.items() for s in clients_of(case)]


def check_help(text: str, prog: str) -> None:
    """``text`` is the help every coactive-token shim prints (conformance.json ``help``)."""
    want = VECTORS["help"]
    assert text.startswith(want["starts"].format(prog=prog)), text
    for piece in want["has"]:
        assert piece in text, (piece, text)


@pytest.mark.parametrize(
    ("served", "case_name", "shim"),
    cli_params(),
    indirect=["served"],
    scope="module",  # else pytest makes `served` anew for every test
)
def test_cli_conformance(
    served: SetUp, case_name: str, shim: str, request: pytest.FixtureRequest
) -> None:
    record_cell(request, case_name, shim)
    _check_cli(case_name, shim, served, request)


def _check_cli(case_name: str, shim: str, served: SetUp, request: pytest.FixtureRequest) -> None:
    case = CASES[case_name]
    go = request.getfixturevalue("go_cli") if shim == "go" else None
    p = prepare(served, case)
    proc, elapsed = run(cli_argv(shim, go) + flags(case, shim), p.env, clean=True)
    expect = case["expect"]
    prog = PROGS[shim]
    where = f"{shim} {case_name}: exit {proc.returncode}, out {proc.stdout!r}, err {proc.stderr!r}"

    def fill(text: str) -> str:
        token = p.current_token() if p.fake.issued else ""
        return text.format(token=token, prog=prog, version=VERSION)

    assert proc.returncode == expect["exit"], where
    if expect["exit"] == 0:
        assert proc.stderr == "", where
        if expect.get("help"):
            check_help(proc.stdout, prog)
        if "stdout" in expect:
            assert proc.stdout == fill(expect["stdout"]), where
        if "json" in expect:
            answer = json.loads(proc.stdout)
            for key, value in expect["json"].items():
                assert answer[key] == fill(value), where
            expires_at = datetime.fromisoformat(answer["expires_at"])
            left = (expires_at - datetime.now(UTC)).total_seconds()
            assert abs(left - answer["expires_in"]) <= 5, where
            assert 3000 < answer["expires_in"] <= 3600, where
        if expect.get("new_token"):
            assert p.current_token() != p.first_token, where
    else:
        assert proc.stdout == "", where
        assert proc.stderr.endswith("\n") and proc.stderr.count("\n") == 1, where
        # argparse names the subcommand in coactive-credd's own usage errors.
        prefixes = (f"{prog}: ", f"{prog} token: ") if shim == "credd" else (f"{prog}: ",)
        assert proc.stderr.startswith(prefixes), where
        if "stderr" in expect:
            assert proc.stderr == fill(expect["stderr"]), where
        for needle in expect.get("stderr_has", []):
            assert needle in proc.stderr, where
        assert not leaked(proc.stderr, set(p.fake.issued)), where
    if "logins_added" in expect:
        assert p.fake.logins - p.logins_before == expect["logins_added"], where
    if "max_seconds" in expect:
        assert elapsed < expect["max_seconds"], f"{where}: took {elapsed:.3f} s"


def test_every_shim_says_the_package_version(request: pytest.FixtureRequest) -> None:
    """--version everywhere, and the versions the shims carry are the package's."""
    go = request.getfixturevalue("go_cli")
    said = {}
    for shim in SHIMS:
        proc, _ = run([*cli_argv(shim, go), "--version"], {})
        said[shim] = proc.stdout
    helper, _ = run([_need("dash"), str(SHIM / "sh" / "git-credential-coactive"), "--version"], {})
    said["git"] = helper.stdout
    node_pkg = json.loads((SHIM / "node" / "package.json").read_text())["version"]
    assert said == {
        **{shim: f"{PROGS[shim]} {VERSION}\n" for shim in SHIMS},
        "git": f"git-credential-coactive {VERSION}\n",
    }
    assert node_pkg == VERSION


GIT_CASES = [name for name, c in CASES.items() if c.get("git") is not None]


@pytest.mark.parametrize(
    ("served", "case_name"),
    [on_setup(c, id=c) for c in GIT_CASES],
    indirect=["served"],
    scope="module",  # else pytest makes `served` anew for every test
)
def test_git_helper_conformance(
    served: SetUp, case_name: str, request: pytest.FixtureRequest
) -> None:
    record_cell(request, case_name, "git")
    _check_git(case_name, served)


def _check_git(case_name: str, served: SetUp) -> None:
    case = CASES[case_name]
    p = prepare(served, case)
    host = p.fake.base_url.split("://", 1)[1]
    stdin = f"protocol=http\nhost={host}\n"
    if "profile" in case.get("args", {}):
        stdin += f"username={case['args']['profile']}\n"
    argv = [_need("dash"), str(SHIM / "sh" / "git-credential-coactive"), "get"]
    proc, _ = run(argv, p.env, stdin + "\n", clean=True)
    where = (
        f"git {case_name}: exit {proc.returncode}, stdout {proc.stdout!r}, stderr {proc.stderr!r}"
    )
    assert proc.returncode == 0, where
    assert not leaked(proc.stderr, set(p.fake.issued)), where
    if case["git"] == "nothing":
        assert proc.stdout == "", where
        return
    lines = proc.stdout.splitlines()
    assert [line.split("=", 1)[0] for line in lines] == [
        "username",
        "password",
        "password_expiry_utc",
    ], where
    answer = dict(line.split("=", 1) for line in lines)
    assert answer["username"] == p.profile, where
    assert answer["password"] == p.current_token(), where
    # The serving deadline: expires_at minus the daemon's 30 s skew.
    left = int(answer["password_expiry_utc"]) - time.time()
    assert 3000 < left <= 3600 - 30 + 1, where


GIT_CLI = {c["name"]: c for c in VECTORS["git_cli"]}


@pytest.mark.parametrize("case_name", GIT_CLI)
def test_git_helper_command_line(case_name: str, home: Path) -> None:
    """The helper's own command line: --help, --version, usage errors, git's operations."""
    case = GIT_CLI[case_name]
    argv = [_need("dash"), str(SHIM / "sh" / "git-credential-coactive"), *case["argv"]]
    proc, _ = run(argv, {}, "protocol=https\nhost=api.coactive.ai\npassword=cat_x\n\n")
    expect = case["expect"]
    where = f"git {case_name}: exit {proc.returncode}, out {proc.stdout!r}, err {proc.stderr!r}"
    assert proc.returncode == expect["exit"], where
    for stream, text in (("stdout", proc.stdout), ("stderr", proc.stderr)):
        if stream in expect:
            assert text == expect[stream].format(version=VERSION), where
        if f"{stream}_starts" in expect:
            assert text.startswith(expect[f"{stream}_starts"]), where


# The rule written out here (docs/ARCHITECTURE.md), not taken from any shim: every shim, the
# Python one included, is compared with it.
_RUN_USER = f"/run/user/{os.getuid()}"
_FALLBACK = (
    f"{_RUN_USER}/coactive-credd/credd.sock"
    if os.path.isdir(_RUN_USER)
    else f"/tmp/runtime-{os.getuid()}/coactive-credd/credd.sock"
)
SOCKET_ENVS = {
    "explicit": (
        {"COACTIVE_CREDD_SOCKET": "/nonexistent/a.sock", "COACTIVE_CREDD_HOME": "/nx/h"},
        "/nonexistent/a.sock",
    ),
    "home": ({"COACTIVE_CREDD_HOME": "/nonexistent/home"}, "/nonexistent/home/credd.sock"),
    "xdg": ({"XDG_RUNTIME_DIR": "/nonexistent/xdg"}, "/nonexistent/xdg/coactive-credd/credd.sock"),
    "fallback": ({}, _FALLBACK),
}


@pytest.mark.parametrize("shim", CLIS)
def test_every_shim_computes_the_same_default_socket_path(
    shim: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    go = request.getfixturevalue("go_cli") if shim == "go" else None
    for name, (env, expected) in SOCKET_ENVS.items():
        for var in ("COACTIVE_CREDD_SOCKET", "COACTIVE_CREDD_HOME", "XDG_RUNTIME_DIR"):
            monkeypatch.delenv(var, raising=False)
        for var, value in env.items():
            monkeypatch.setenv(var, value)
        proc, _ = run(cli_argv(shim, go), {})
        assert proc.returncode == 3, (name, proc.stderr)
        assert f"(no socket at {expected})" in proc.stderr, (name, expected, proc.stderr)


def test_node_unit_tests_pass() -> None:
    """client_shim/node's own tests (`node --test`), so CI runs them with the rest."""
    proc = subprocess.run(
        [_need("node"), "--test", "test/"],
        cwd=SHIM / "node",
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "# fail 0" in proc.stdout


def test_go_unit_tests_pass() -> None:
    """client_shim/go's own tests (`go vet` and `go test ./...`), so CI runs them too."""
    go = _need("go")
    env = {**os.environ, "CGO_ENABLED": "0"}
    for args in (["vet", "./..."], ["test", "-v", "-count=1", "./..."]):
        proc = subprocess.run(
            [go, *args], cwd=SHIM / "go", capture_output=True, text=True, timeout=110, env=env
        )
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    # -v shows what plain `go test` keeps quiet: a test that skipped passes as "ok" there
    skipped = [ln.strip() for ln in proc.stdout.splitlines() if "--- SKIP" in ln]
    assert not skipped, "Go tests skipped:\n" + proc.stdout[-4000:]
    assert proc.stdout.count("--- PASS") >= 10, proc.stdout[-4000:]
    gofmt = shutil.which("gofmt") or str(Path(go).resolve().parent / "gofmt")
    proc = subprocess.run(
        [gofmt, "-l", "."], cwd=SHIM / "go", capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and proc.stdout == "", f"gofmt: {proc.stdout}{proc.stderr}"
