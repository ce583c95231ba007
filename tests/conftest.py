"""Shared fixtures: a private home, the fake Coactive, real daemons (subprocess and in-process).

Leak checks are built into the fixtures: every CLI run is checked for the long-lived
credentials (``CREDENTIALS``; an access token may be printed by ``token``, a credential never),
and every daemon log for the credentials and every access token the fake issued.

The suite runs in parallel (pyproject's addopts: ``-n 6 --dist loadgroup``, pytest-xdist), each
worker a process of its own with its own temporary folders. A test is safe there when what it
touches is its own: a ``home`` or ``tmp_path``, ports and uids it picked at run time (the
``fake`` listens on port 0; tests/test_trust.py derives its uids from the worker's pid). A test
that needs a fixed, shared resource (a fixed path outside its temporary folders, a fixed port
or uid whose state it changes, the user's real ~/.gitconfig, a system-wide setting) joins the
serial group, whose tests run one after another on one worker::

    @pytest.mark.xdist_group("serial")

(a module: ``pytestmark = pytest.mark.xdist_group("serial")``). Other workers go on beside it:
the group keeps its members from meeting each other, not from sharing the machine. Tests that
share an expensive module- or session-scoped fixture can share a group of their own (as each
``shims-*`` set-up does) so the fixture is made once; ``timing`` holds the scenario tests that
judge guarantees under a load of their own (soak, kill -9 loop, benchmark smoke), so that no two
of them run at once. A long scenario
test is marked ``@pytest.mark.heavy``: :func:`pytest_collection_modifyitems` hands it out
first, so it does not run alone at the end. ``python3 -m pytest -n 0`` runs all in one process.
"""

from __future__ import annotations

import datetime
import http.client
import ipaddress
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pytest
from coactive_credd.testing.fakeupstream import FakeCoactive, FakeCoactiveThread
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

if TYPE_CHECKING:
    from coactive_credd.vault import VaultData

PERSONAL_TOKEN = "cpt_Pers0nal.T0ken-for_tests~only"
CLIENT_ID = "client-4711"
CLIENT_SECRET = "cs_S3cret/with+odd=chars"
CREDENTIALS = frozenset({PERSONAL_TOKEN, CLIENT_SECRET})

# A shim that finds no daemon starts one by default. Tests start the daemons they want
# themselves, and some check what a shim does when there is none, so autostart is off for
# every process the tests run; tests/test_autostart.py turns it on where it tests it.
os.environ["COACTIVE_CREDD_AUTOSTART"] = "0"

# ---- what every process the tests start pays for at start-up ---------------------------------
#
# The suite starts about 1,500 Python processes (daemons, logins, shims), and the machine is
# CPU-bound, so their start-up is most of its time (docs/TESTING.md, "Where the time goes").
#
# - aiohttp builds two TLS contexts when it is imported, each loading the system's CA store
#   (144 certificates here): about 100 ms of CPU in every daemon. No test reaches a host the
#   system store vouches for; the tests that use TLS name their own CA (ca_bundle), so the
#   processes they start read an empty store instead. A user's own SSL_CERT_FILE is kept
#   (the machine CI runs on sets one in its environment: there, this changes nothing).
os.environ.setdefault("SSL_CERT_FILE", os.devnull)


def pytest_configure(config: pytest.Config) -> None:
    """Compile the package once, in the controller, before any worker starts.

    Where PYTHONDONTWRITEBYTECODE is set (CI's machine sets it) Python never caches bytecode,
    and an editable install is not compiled at install time, so every process the tests start
    compiled the package from source again: about 100 ms of CPU per daemon start.
    """
    if hasattr(config, "workerinput"):
        return
    import compileall

    root = Path(__file__).resolve().parent.parent
    compileall.compile_dir(root / "daemon" / "coactive_credd", quiet=1)
    compileall.compile_file(root / "client_shim" / "python" / "coactive_token.py", quiet=1)
    if config.getoption("numprocesses", None):
        _cache_rewritten_tests(config)


def _cache_rewritten_tests(config: pytest.Config) -> None:
    """Rewrite the asserts of every test module once, here, into the cache pytest reads.

    Each xdist worker imports every test module, and pytest rewrites its asserts as it does;
    under PYTHONDONTWRITEBYTECODE it keeps none of that work, so six workers each spent 7 s of
    CPU rewriting the same files (collecting took 12.8 s of CPU without the cache, 5.6 s
    with). pytest reads a rewritten module's cache whether or not it may write one, so the
    workers load what is written here. This uses pytest's own (private) functions, and does
    nothing where they are not there.
    """
    if config.getoption("assertmode", "rewrite") != "rewrite":
        return
    try:
        from _pytest.assertion import rewrite

        state = config.stash[rewrite.assertstate_key]
        read_pyc, rewrite_test, write_pyc = (
            rewrite._read_pyc,
            rewrite._rewrite_test,
            rewrite._write_pyc,
        )
        cache_dir, tail, makedirs = rewrite.get_cache_dir, rewrite.PYC_TAIL, rewrite.try_makedirs
    except (ImportError, AttributeError, KeyError):
        return
    here = Path(__file__).resolve().parent
    for fn in sorted(here.glob("test_*.py")):
        pyc = cache_dir(fn) / (fn.name[:-3] + tail)
        if read_pyc(fn, pyc, state.trace) is not None:
            continue
        if not makedirs(pyc.parent):
            return  # a read-only tree: each worker rewrites as before
        source_stat, co = rewrite_test(fn, config)
        write_pyc(state, co, source_stat, pyc)


# ---- in CI, a skip is a failure -------------------------------------------------------------
#
# CI (CI=true, root, .ci/setup run) has every tool the suite drives, so a test that skips there
# tests nothing while looking green. Under CI every skip is turned into a failure unless its
# test is listed here, with the reason it may skip on CI's machine. Keep the list short.
CI_MAY_SKIP: dict[str, str] = {
    # "tests/test_x.py::test_y": "why it cannot run on CI's Linux machine",
}


def _ci_allows_skip(nodeid: str) -> bool:
    return any(nodeid == k or nodeid.startswith(k + "[") for k in CI_MAY_SKIP)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if (
        os.environ.get("CI")
        and report.skipped
        and not hasattr(report, "wasxfail")  # an xfail is not a skip
        and not _ci_allows_skip(item.nodeid)
    ):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = (
            f"skipped in CI ({reason}); install what it needs in .ci/setup, or allow-list it "
            "in tests/conftest.py CI_MAY_SKIP with the reason"
        )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``heavy`` first, the rest in their order (xdist hands out work in this
    order, after the groups, the largest first)."""
    items.sort(key=lambda item: item.get_closest_marker("heavy") is None)


# ---- the conformance table (tests/test_shims.py) --------------------------------------------
#
# Each conformance cell names itself in a "conformance" user property; the reports reach this
# process from whichever xdist worker ran the cell, and the table is printed once, at the end.
_CONFORMANCE: dict[str, dict[str, Any]] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when != "call":
        return
    for key, cell in report.user_properties:
        if key == "conformance":
            row = _CONFORMANCE.setdefault(cell["case"], {**cell, "marks": {}})
            row["marks"][cell["client"]] = "ok" if report.passed else "FAIL"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Every client on every vector that ran: ok, FAIL, or - (does not apply)."""
    if not _CONFORMANCE or hasattr(terminalreporter.config, "workerinput"):
        return
    rows = sorted(_CONFORMANCE.items(), key=lambda item: int(item[1]["order"]))
    columns = rows[0][1]["columns"]
    width = max(len(name) for name, _ in rows)
    terminalreporter.write_line("")
    terminalreporter.write_line("conformance: " + " ".join(f"{c:>6}" for c in columns))
    for name, row in rows:
        marks = [row["marks"].get(c, "" if c in row["applies"] else "-") for c in columns]
        terminalreporter.write_line(f"{name:<{width}} " + " ".join(f"{m:>6}" for m in marks))


def leaked(text: str, extra: set[str] | None = None) -> list[str]:
    """The credentials (and ``extra`` secrets) that appear in ``text``."""
    return sorted(s for s in CREDENTIALS | (extra or set()) if s and s in text)


@pytest.fixture
def home(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    # Short path under /tmp: a Unix socket path must fit in 108 bytes.
    d = Path(tempfile.mkdtemp(prefix="ccd-", dir="/tmp"))
    d.chmod(0o700)
    monkeypatch.setenv("COACTIVE_CREDD_HOME", str(d))
    monkeypatch.delenv("COACTIVE_CREDD_SOCKET", raising=False)
    monkeypatch.delenv("COACTIVE_PROFILE", raising=False)
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.delenv("LISTEN_FDS", raising=False)
    monkeypatch.delenv("LISTEN_PID", raising=False)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def fake() -> Iterator[FakeCoactive]:
    with FakeCoactiveThread(expires_in=3600) as f:
        f.add_personal_token(PERSONAL_TOKEN)
        f.add_client(CLIENT_ID, CLIENT_SECRET)
        yield f


def run_cli(
    *args: str, input: str | None = None, env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """Run ``coactive-credd ARGS`` in a process of its own, and check its output carries no
    credential.

    The process is forked from one that has imported the CLI already (:mod:`tests.clifork`:
    about 0.05 s of CPU instead of 0.1 to 0.5), with its own stdin, stdout, stderr, environment,
    working folder and exit status. A test about the process as Python starts it (what it
    imports, how long its start takes) runs ``python3 -m coactive_credd`` itself, as
    tests/test_walls.py does.
    """
    from . import clifork

    proc = clifork.run(list(args), input=input, env={**os.environ, **(env or {})}, timeout=timeout)
    found = leaked(proc.stdout + proc.stderr)
    assert not found, f"coactive-credd {args[0] if args else ''} printed a credential"
    return proc


def login(
    fake: FakeCoactive, profile: str = "default", *extra: str, token: str = PERSONAL_TOKEN
) -> subprocess.CompletedProcess[str]:
    """``coactive-credd login`` of a personal token against ``fake``; from an in-process
    test, run it in a thread (it asks the daemon in the test's event loop to reload).

    Runs as :func:`run_cli` runs it, and must succeed."""
    args = ["login", "--profile", profile, "--base-url", fake.base_url, "--personal-token-stdin"]
    proc = run_cli(*args, *extra, input=token + "\n")
    assert proc.returncode == 0, proc.stderr
    return proc


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 10) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def call(
    sock: str | Path,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """One request over the socket; returns (status, parsed JSON or text)."""
    conn = UnixHTTP(str(sock))
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=data, headers=headers or {})
        resp = conn.getresponse()
        raw = resp.read().decode()
        ctype = resp.getheader("Content-Type", "")
        return resp.status, json.loads(raw) if "json" in ctype else raw
    finally:
        conn.close()


class Process(Protocol):
    """What the tests use of a daemon's process: a :class:`subprocess.Popen`, or a
    :class:`tests.clifork.Forked`."""

    pid: int
    returncode: int | None

    def poll(self) -> int | None: ...
    def wait(self, timeout: float | None = None) -> int: ...
    def send_signal(self, sig: int) -> None: ...
    def terminate(self) -> None: ...
    def kill(self) -> None: ...


@dataclass
class Daemon:
    socket: Path
    log: Path
    proc: Process
    home: Path
    env: dict[str, str] = field(default_factory=dict)

    def get(self, path: str, **kw: Any) -> tuple[int, Any]:
        return call(self.socket, "GET", path, **kw)

    def post(self, path: str, body: Any = None) -> tuple[int, Any]:
        return call(self.socket, "POST", path, body)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def start_daemon(
    home: Path,
    *args: str,
    env: dict[str, str] | None = None,
    wait: bool = True,
    wrap: Sequence[str] = (),
    fresh: bool = False,
) -> Daemon:
    """``coactive-credd serve ARGS``, its stdout and stderr in a log file in ``home``; waits
    until it answers unless ``wait`` is false.

    Forked from a process that has imported it already (:func:`tests.clifork.spawn`: 0.04 s
    of CPU instead of 0.65), unless ``fresh`` asks for a ``python3 -m coactive_credd serve``
    of its own, for a test about the process as the kernel shows it (its argv, its
    environment), or ``wrap`` gives a command that execs it (say ``setpriv ...``: the pid is
    the daemon's)."""
    sock = home / "credd.sock"
    logf = home / f"daemon-{time.monotonic_ns()}.log"
    full_env = {**os.environ, **(env or {})}
    proc: Process
    with open(logf, "wb") as out:
        if wrap or fresh:
            proc = subprocess.Popen(
                [*wrap, sys.executable, "-m", "coactive_credd", "serve", *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=full_env,
            )
        else:
            from . import clifork

            with open(os.devnull, "rb") as null:
                proc = clifork.spawn(
                    ["serve", *args],
                    env=full_env,
                    stdin=null.fileno(),
                    stdout=out.fileno(),
                    stderr=out.fileno(),
                )
    d = Daemon(socket=sock, log=logf, proc=proc, home=home, env=full_env)
    if wait:
        wait_ready(d)
    return d


def wait_ready(d: Daemon, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if d.proc.poll() is not None:
            raise AssertionError(f"daemon exited with {d.proc.returncode}:\n{d.log_text()}")
        try:
            if d.get("/healthz")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.02)
    raise AssertionError(f"daemon not ready after {timeout} s:\n{d.log_text()}")


def wait_for_token(d: Daemon, profile: str = "default", timeout: float = 15) -> None:
    """Wait until ``d``'s status shows a token for ``profile`` (its own first login done),
    asking nothing that counts as a token handed out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, st = d.get("/v1/status")
        if any(p["name"] == profile and p.get("expires_at") for p in st.get("profiles", [])):
            return
        time.sleep(0.02)
    raise AssertionError(f"no token for {profile!r} after {timeout} s:\n{d.log_text()}")


@pytest.fixture
def daemon(
    request: pytest.FixtureRequest, home: Path, fake: FakeCoactive, logged_in_home: Path
) -> Iterator[Daemon]:
    """A real `coactive-credd serve` with profile `default` saved for the fake. Saved by the
    one ``login --no-verify`` of :func:`logged_in_home` (not a login process per test; the
    daemon logs in itself as it starts), or, for a test marked ``verified_login``, by a real
    ``coactive-credd login`` that verifies and leaves its token in the vault."""
    verified = request.node.get_closest_marker("verified_login") is not None
    if verified:
        login(fake)
    else:
        logged_in(logged_in_home, home, fake.base_url)
    d = start_daemon(home)
    if not verified:
        wait_for_token(d)  # as after a verified login: the test starts with a token held
    yield d
    d.stop()
    assert not leaked(d.log_text(), set(fake.issued)), "a secret appeared in the daemon log"


# A base URL nothing listens on, replaced per test by the test's own fake Coactive.
PLACEHOLDER_URL = "http://127.0.0.1:9"


@pytest.fixture(scope="session")
def logged_in_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home where the real ``coactive-credd login --no-verify`` saved profile `default` (the
    personal token) with base URL :data:`PLACEHOLDER_URL`: once per run, as a login costs a
    Python start-up (about 0.4 s) and the in-process tests need hundreds of them."""
    d = tmp_path_factory.mktemp("logged-in")
    d.chmod(0o700)
    proc = run_cli(
        "login",
        "--profile",
        "default",
        "--base-url",
        PLACEHOLDER_URL,
        "--personal-token-stdin",
        "--no-verify",
        input=PERSONAL_TOKEN + "\n",
        # its own socket path too: a COACTIVE_CREDD_SOCKET of the user's must not be told
        env={"COACTIVE_CREDD_HOME": str(d), "COACTIVE_CREDD_SOCKET": str(d / "credd.sock")},
    )
    assert proc.returncode == 0, proc.stderr
    return d


def logged_in(template: Path, home: Path, base_url: str) -> None:
    """Copy the files of ``template`` (see :func:`logged_in_home`) into ``home``, modes kept,
    with the profile's base URL set to ``base_url``."""
    for src in template.iterdir():
        shutil.copy2(src, home / src.name)
    config = home / "config.toml"
    text = config.read_text()
    assert f'base_url = "{PLACEHOLDER_URL}"' in text, text
    config.write_text(text.replace(f'"{PLACEHOLDER_URL}"', f'"{base_url}"'))


# ---- an in-process daemon with a clock the test moves --------------------------------------


class FakeClock:
    """The daemon's two clocks, moved by the test: the wall clock (``now``, epoch seconds; the
    object is called for it) and the boot clock (:meth:`boot_time`: counts suspend, never
    steps). Setting ``now`` or :meth:`jump` moves both, as time passing does; :meth:`step_wall`
    steps the wall clock alone (NTP, ``date -s``); :meth:`suspend` advances the boot clock
    alone (a sleep the wall clock has not been corrected for yet)."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start
        self.boot_offset = 1000.0 - self.now  # the boot clock reads 1000 s at the start

    def __call__(self) -> float:
        return self.now

    def boot_time(self) -> float:
        return self.now + self.boot_offset

    def jump(self, seconds: float) -> None:
        self.now += seconds

    def step_wall(self, seconds: float) -> None:
        self.now += seconds
        self.boot_offset -= seconds

    def suspend(self, seconds: float) -> None:
        self.boot_offset += seconds


def on_disk(ip: InProc) -> VaultData:
    """The in-process daemon's vault as a restarted daemon would read it (a second
    :class:`~coactive_credd.vault.Vault` on the same files)."""
    from coactive_credd.vault import Vault

    v = ip.daemon.vault
    return Vault(v.vault_path, v.key_path, v.lock_path).load()


@dataclass
class InProc:
    daemon: Any
    clock: FakeClock
    fake: FakeCoactive
    socket: Path
    session: Any
    via: str = "fast"  # "fast": FastSite as in production; "aiohttp": aiohttp alone

    async def get(self, path: str, **kw: Any) -> tuple[int, Any]:
        async with self.session.get("http://localhost" + path, **kw) as r:
            return r.status, (
                await r.json() if r.content_type == "application/json" else await r.text()
            )

    async def post(self, path: str, json_body: Any = None) -> tuple[int, Any]:
        async with self.session.post("http://localhost" + path, json=json_body) as r:
            return r.status, await r.json()

    async def settle(self, timeout: float = 20.0) -> None:
        """Let the scheduler and refresh tasks run after a clock jump, until no refresh is in
        flight (twice in a row, 10 ms apart). Fails the test when that does not happen within
        ``timeout`` seconds, rather than letting it go on against a daemon still busy."""
        import asyncio

        self.daemon.wake()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            await asyncio.sleep(0.01)
            if not any(p.inflight for p in self.daemon.profiles.values()):
                await asyncio.sleep(0.01)
                if not any(p.inflight for p in self.daemon.profiles.values()):
                    return
        busy = sorted(n for n, p in self.daemon.profiles.items() if p.inflight)
        raise AssertionError(f"refreshes still in flight after {timeout} s: {busy}")


# Run a test against both ways a request is served: the fast path in front of aiohttp (what
# answers nearly every real token request) and aiohttp alone (what answers everything the
# fast path hands over). Use where the two could differ:
#     @both_paths
#     async def test_x(inproc: InProc) -> None: ...
both_paths = pytest.mark.parametrize("inproc", ["fast", "aiohttp"], indirect=True)


@pytest.fixture
async def inproc(
    home: Path,
    logged_in_home: Path,
    caplog: pytest.LogCaptureFixture,
    request: pytest.FixtureRequest,
) -> AsyncIterator[InProc]:
    """Fake Coactive + a Daemon in this event loop, with a FakeClock; profile `default` logged in
    (the files of :func:`logged_in_home`, pointed at this test's fake).

    Served the way ``coactive-credd serve`` serves (:func:`server.make_runner` and
    :func:`server.start_sites`: the fast path in front of aiohttp, production's limits), or,
    parametrized indirectly with ``"aiohttp"`` (see :data:`both_paths`), by aiohttp alone with
    the same settings. At teardown the daemon's log records are scanned for credentials and
    issued tokens.

    ``@pytest.mark.coactive_fault("503")`` switches the fake's fault on before the daemon
    starts: its first login fails, so it begins with no token, in backoff.
    """
    import logging

    caplog.set_level(logging.DEBUG)
    import asyncio

    import aiohttp
    from coactive_credd.core import paths
    from coactive_credd.server import api, refresh
    from coactive_credd.server import process as server

    via = getattr(request, "param", "fast")
    assert via in ("fast", "aiohttp"), via
    f = FakeCoactive(expires_in=3600)
    f.add_personal_token(PERSONAL_TOKEN)
    f.add_client(CLIENT_ID, CLIENT_SECRET)
    if (fault := request.node.get_closest_marker("coactive_fault")) is not None:
        f.fault = fault.args[0]
    await f.start()
    logged_in(logged_in_home, home, f.base_url)
    clock = FakeClock()
    p = paths.resolve()
    d = refresh.Daemon(p, clock=clock, boot_clock=clock.boot_time, rand=lambda: 0.5)
    d.load()
    sock = server.bind_socket(p.socket)
    a = api.Api(d)
    runner = await server.make_runner(a)
    # "aiohttp": the daemon's own switch that hands every connection to aiohttp at once
    await server.start_sites(runner, a, [sock], fast=via == "fast")
    sched = asyncio.create_task(d.scheduler())
    session = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(p.socket)))
    ip = InProc(daemon=d, clock=clock, fake=f, socket=p.socket, session=session, via=via)
    await ip.settle()
    try:
        yield ip
        # it runs until the daemon stops: a scheduler that ended (a fault) refreshes nothing
        if sched.done():
            raise AssertionError(f"the scheduler ended: {sched.exception()!r}")
    finally:
        sched.cancel()
        await session.close()
        await runner.cleanup()
        await d.flush()
        await d.upstream.close()
        await f.stop()
        assert not leaked(caplog.text, set(f.issued)), "a secret appeared in the daemon log"


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake coactive")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path
