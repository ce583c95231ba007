"""The real `coactive-credd` commands and daemon process, end to end against the fake Coactive."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from coactive_credd.testing.fakeupstream import FakeCoactive

from .conftest import (
    CLIENT_ID,
    CLIENT_SECRET,
    PERSONAL_TOKEN,
    Daemon,
    call,
    leaked,
    login,
    run_cli,
    start_daemon,
)


@pytest.mark.verified_login
def test_personal_token_login_serve_and_every_client_command(
    daemon: Daemon, fake: FakeCoactive
) -> None:
    first = fake.requests[0]
    assert first.method == "POST" and first.path == "/api/v0/login"
    assert first.headers["Authorization"] == f"Bearer {PERSONAL_TOKEN}"
    assert first.headers["Content-Type"].startswith("application/json")
    assert first.body == {"grant_type": "refresh_token"}
    # `login` verified with one exchange and left that token in the vault: the daemon needs none
    assert fake.logins == 1
    token = run_cli("token")
    assert token.returncode == 0 and token.stdout == fake.issued[-1] + "\n"
    as_json = json.loads(run_cli("token", "--json").stdout)
    assert as_json["access_token"] == fake.issued[-1] and as_json["profile"] == "default"
    assert (
        run_cli("token", "--format", "header").stdout
        == f"Authorization: Bearer {fake.issued[-1]}\n"
    )
    curl = subprocess.run(
        ["curl", "-s", "--unix-socket", str(daemon.socket), "http://localhost/v1/token"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(curl.stdout)["access_token"] == fake.issued[-1]
    out = run_cli(
        "exec", "--", sys.executable, "-c", "import os; print(os.environ['COACTIVE_ACCESS_TOKEN'])"
    )
    assert out.returncode == 0 and out.stdout.strip() == fake.issued[-1]
    st = run_cli("status")
    assert st.returncode == 0 and "default" in st.stdout and "valid" in st.stdout
    assert fake.issued[-1] not in st.stdout
    refreshed = run_cli("refresh")
    assert refreshed.returncode == 0 and fake.logins == 2
    assert fake.issued[-1] not in refreshed.stdout + refreshed.stderr


@pytest.mark.verified_login
def test_status_json_has_the_spec_fields_and_no_secret(daemon: Daemon, fake: FakeCoactive) -> None:
    status, body = daemon.get("/v1/status")
    assert status == 200
    assert {"version", "pid", "locked", "profiles"} <= body.keys()
    assert body["pid"] == daemon.proc.pid and body["locked"] is False
    (p,) = body["profiles"]
    # The SPEC's keys are all there; more (serve_until, client_id, ...) are welcome.
    assert set(p) >= {
        "name",
        "auth",
        "base_url",
        "state",
        "expires_at",
        "next_refresh_at",
        "last_refresh_at",
        "last_error",
        # beyond the spec: the route to Coactive and the personal token's age
        "proxy",
        "proxy_route",
        "credential_created",
        "credential_expires_at",
        "credential_days_left",
        "credential_warning",
    }
    assert (
        p["auth"] == "personal_token" and p["state"] == "valid" and p["base_url"] == fake.base_url
    )
    assert not leaked(json.dumps(body), set(fake.issued))
    assert daemon.get("/healthz") == (200, "ok")


def test_system_credentials_and_several_profiles(home: Path, fake: FakeCoactive) -> None:
    proc = run_cli(
        "login",
        "--profile",
        "prod",
        "--base-url",
        fake.base_url,
        "--client-id",
        CLIENT_ID,
        "--client-secret-stdin",
        input=CLIENT_SECRET + "\n",
    )
    assert proc.returncode == 0, proc.stderr
    import base64

    req = fake.requests[-1]
    expected = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    assert req.headers["Authorization"] == f"Basic {expected}"
    assert req.body == {"grant_type": "client_credentials"}
    login(fake, "staging")
    d = start_daemon(home)
    try:
        prod = run_cli("token", "--profile", "prod").stdout.strip()
        staging = run_cli("token", env={"COACTIVE_PROFILE": "staging"}).stdout.strip()
        assert prod != staging and {prod, staging} <= set(fake.issued)
        _, st = d.get("/v1/status")
        assert {(p["name"], p["auth"]) for p in st["profiles"]} == {
            ("prod", "client_credentials"),
            ("staging", "personal_token"),
        }
        missing = run_cli("token")
        assert (
            missing.returncode == 4 and "coactive-credd login --profile default" in missing.stderr
        )
    finally:
        d.stop()
    assert not leaked(d.log_text(), set(fake.issued))


def test_restart_within_the_lifetime_needs_no_login(
    home: Path, daemon: Daemon, fake: FakeCoactive
) -> None:
    assert run_cli("refresh").returncode == 0  # a token only the daemon has seen
    before = run_cli("token").stdout
    assert before.strip() == fake.issued[-1] and fake.logins == 2
    assert daemon.stop() == 0  # a clean stop writes it to the vault
    assert not daemon.socket.exists()  # removed on SIGTERM
    d2 = start_daemon(home)
    try:
        assert run_cli("token").stdout == before
        assert fake.logins == 2
    finally:
        d2.stop()


def test_vault_holds_no_secret_in_clear_and_files_are_private(
    home: Path, daemon: Daemon, fake: FakeCoactive
) -> None:
    raw = (home / "vault.bin").read_bytes()
    for secret in [PERSONAL_TOKEN, *fake.issued]:
        assert secret.encode() not in raw
    for name in ("vault.bin", "vault.key", "config.toml"):
        assert stat.S_IMODE((home / name).stat().st_mode) == 0o600, name
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert stat.S_IMODE(daemon.socket.stat().st_mode) == 0o600
    assert PERSONAL_TOKEN not in (home / "config.toml").read_text()


def test_a_running_daemon_picks_up_new_credentials(
    home: Path, daemon: Daemon, fake: FakeCoactive
) -> None:
    login(fake, "second")
    out = run_cli("token", "--profile", "second")
    assert out.returncode == 0 and out.stdout.strip() == fake.issued[-1]
    assert run_cli("logout", "--profile", "second").returncode == 0
    assert run_cli("token", "--profile", "second").returncode == 4


def test_relogin_lifts_reauth_required(daemon: Daemon, fake: FakeCoactive) -> None:
    fake.revoke(PERSONAL_TOKEN)
    assert run_cli("refresh").returncode == 5
    st = json.loads(run_cli("status", "--json").stdout)
    assert st["profiles"][0]["state"] == "reauth_required"
    rejected = login_result = run_cli(
        "login", "--base-url", fake.base_url, "--personal-token-stdin", input=PERSONAL_TOKEN + "\n"
    )
    assert rejected.returncode == 5 and "rejected" in login_result.stderr
    fake.add_personal_token("cpt_new-one")
    ok = run_cli(
        "login", "--base-url", fake.base_url, "--personal-token-stdin", input="cpt_new-one\n"
    )
    assert ok.returncode == 0
    st = json.loads(run_cli("status", "--json").stdout)
    assert st["profiles"][0]["state"] == "valid"
    assert run_cli("token").stdout.strip() == fake.issued[-1]


def test_second_daemon_is_refused_and_a_stale_socket_replaced(home: Path, daemon: Daemon) -> None:
    second = subprocess.run(
        [sys.executable, "-m", "coactive_credd", "serve"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert second.returncode != 0 and "already running" in second.stderr
    assert daemon.get("/healthz")[0] == 200
    daemon.stop()
    # a crash leaves a socket file nobody answers on
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(daemon.socket))
    s.close()
    d2 = start_daemon(home)
    try:
        assert d2.get("/healthz") == (200, "ok")
        assert "stale socket" in d2.log_text()
    finally:
        d2.stop()


def test_loose_socket_folder_is_refused(home: Path, fake: FakeCoactive, tmp_path: Path) -> None:
    loose = Path(f"/tmp/ccd-loose-{os.getpid()}")
    loose.mkdir(mode=0o755, exist_ok=True)
    loose.chmod(0o755)
    try:
        out = subprocess.run(
            [sys.executable, "-m", "coactive_credd", "serve", "--socket", str(loose / "s")],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert out.returncode != 0 and str(loose) in out.stderr and "chmod 700" in out.stderr
    finally:
        loose.rmdir()


def test_bad_input_gets_a_clear_4xx_and_the_daemon_keeps_serving(daemon: Daemon) -> None:
    cases = [
        ("GET", "/v1/token?profile=nope", 404, "unknown_profile"),
        ("GET", "/v1/token?profile=../etc", 400, "bad_request"),
        ("GET", "/v1/token?min_ttl=-1", 400, "bad_request"),
        ("GET", "/v1/token?min_ttl=abc", 400, "bad_request"),
        ("GET", "/v1/token?min_ttl=99999999999999999999", 400, "bad_request"),
        ("GET", "/nope", 404, "not_found"),
        ("DELETE", "/v1/token", 405, "bad_request"),
    ]
    for method, path, status, code in cases:
        got, body = call(daemon.socket, method, path)
        assert (got, body["error"]["code"]) == (status, code), path
        assert body["error"]["message"] and body["error"]["hint"]
    got, body = call(
        daemon.socket, "POST", "/v1/token/refresh", body={"rejected_token_sha256": "zz"}
    )
    assert got == 400 and "64 hex" in body["error"]["message"]
    got, body = call(daemon.socket, "POST", "/v1/token/refresh", body="x" * 10_000)
    assert got == 413

    def raw(data: bytes) -> bytes:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        s.connect(str(daemon.socket))
        s.sendall(data)
        out = s.recv(4096)
        s.close()
        return out

    assert raw(b"\x00\x01garbage\r\n\r\n").split(b" ")[1] == b"400"
    assert raw(b"GET /v1/token HTTP/1.1\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n").split(b" ")[
        1
    ] in (b"400", b"431")
    # a slow client holding a half-sent request does not stop anyone else
    slow = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    slow.connect(str(daemon.socket))
    slow.sendall(b"GET /v1/tok")
    try:
        assert daemon.get("/v1/token")[0] == 200
    finally:
        slow.close()
    assert daemon.proc.poll() is None


def test_client_commands_fail_fast_with_exit_3_when_no_daemon(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COACTIVE_CREDD_AUTOSTART", "0")
    t0 = time.monotonic()
    out = run_cli("token")
    assert out.returncode == 3
    assert "coactive-credd serve" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    for args in (["status"], ["refresh"], ["exec", "--", "true"]):
        assert run_cli(*args).returncode == 3
    assert time.monotonic() - t0 < 20


def test_login_refuses_bad_input_with_the_fix(home: Path, fake: FakeCoactive) -> None:
    plain = run_cli(
        "login", "--base-url", "http://api.example.com", "--personal-token-stdin", input="x\n"
    )
    assert plain.returncode == 2 and "http://" in plain.stderr and "https" in plain.stderr
    empty = run_cli("login", "--base-url", fake.base_url, "--personal-token-stdin", input="\n")
    assert empty.returncode == 2 and "empty" in empty.stderr
    notty = run_cli("login", "--base-url", fake.base_url)
    assert notty.returncode == 2 and "--personal-token-stdin" in notty.stderr
    wrong = run_cli(
        "login", "--base-url", fake.base_url, "--personal-token-stdin", input="cpt_wrong\n"
    )
    assert wrong.returncode == 5 and "nothing was saved" in wrong.stderr
    assert not (home / "vault.bin").exists()
    fake.fault = "503"
    down = run_cli(
        "login", "--base-url", fake.base_url, "--personal-token-stdin", input=PERSONAL_TOKEN + "\n"
    )
    assert down.returncode == 6 and "--no-verify" in down.stderr
    unverified = run_cli(
        "login",
        "--base-url",
        fake.base_url,
        "--personal-token-stdin",
        "--no-verify",
        input=PERSONAL_TOKEN + "\n",
    )
    assert unverified.returncode == 0
    bad_profile = run_cli("token", "--profile", "a b")
    assert bad_profile.returncode == 2


def test_flipped_byte_or_loose_mode_is_refused_and_the_vault_left_as_it_was(
    home: Path, fake: FakeCoactive
) -> None:
    login(fake)
    vault = home / "vault.bin"
    good = vault.read_bytes()
    flipped = bytearray(good)
    flipped[-5] ^= 0x01
    vault.write_bytes(bytes(flipped))
    out = subprocess.run(
        [sys.executable, "-m", "coactive_credd", "serve"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode != 0 and str(vault) in out.stderr
    relogin = run_cli(
        "login",
        "--profile",
        "other",
        "--base-url",
        fake.base_url,
        "--personal-token-stdin",
        input=PERSONAL_TOKEN + "\n",
    )
    assert relogin.returncode != 0
    assert vault.read_bytes() == bytes(flipped)
    vault.write_bytes(good)
    vault.chmod(0o644)
    out = subprocess.run(
        [sys.executable, "-m", "coactive_credd", "serve"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode != 0 and "chmod 600" in out.stderr
    assert vault.read_bytes() == good and stat.S_IMODE(vault.stat().st_mode) == 0o644


def test_demo_runs_and_leaves_nothing_behind() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "coactive_credd", "demo", "--duration", "4"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "curl" in out.stdout and "python" in out.stdout and "HTTP 200" in out.stdout
    demo_home = Path(out.stdout.split("Files in ", 1)[1].split(",", 1)[0])
    assert demo_home.name.startswith("ccd-demo-") and not demo_home.exists()


def test_sighup_rereads_config_and_vault(daemon: Daemon, fake: FakeCoactive) -> None:
    # a login the daemon is not told about (its notification goes to another socket)
    quiet = run_cli(
        "login",
        "--profile",
        "later",
        "--base-url",
        fake.base_url,
        "--personal-token-stdin",
        input=PERSONAL_TOKEN + "\n",
        env={"COACTIVE_CREDD_SOCKET": "/nonexistent/s"},
    )
    assert quiet.returncode == 0
    assert run_cli("token", "--profile", "later").returncode == 4
    daemon.proc.send_signal(1)  # SIGHUP
    deadline = time.monotonic() + 10
    while run_cli("token", "--profile", "later").returncode != 0:
        assert time.monotonic() < deadline, daemon.log_text()
        time.sleep(0.1)
    assert "reloaded: 2 profile(s)" in daemon.log_text()


def test_the_daemon_process_is_hardened(daemon: Daemon) -> None:
    proc = Path(f"/proc/{daemon.proc.pid}")
    status = (proc / "status").read_text()
    assert "Umask:\t0077" in status
    limits = (proc / "limits").read_text()
    core = next(line for line in limits.splitlines() if line.startswith("Max core file size"))
    assert core.split()[4:6] == ["0", "0"]


@pytest.mark.heavy  # long: started first, so it does not end the run alone
def test_two_processes_adding_fifty_profiles_each_lose_nothing(
    daemon: Daemon, fake: FakeCoactive
) -> None:
    script = (
        "import io, sys\n"
        "from coactive_credd.cli.main import main\n"
        "prefix, url, secret = sys.argv[1], sys.argv[2], sys.stdin.readline()\n"
        "for i in range(50):\n"
        "    sys.stdin = io.StringIO(secret)\n"
        "    rc = main(['login', '--profile', f'{prefix}{i}', '--base-url', url,\n"
        "              '--personal-token-stdin', '--no-verify'])\n"
        "    assert rc == 0, rc\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, prefix, fake.base_url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for prefix in ("a", "b")
    ]
    for p in procs:
        out, err = p.communicate(PERSONAL_TOKEN + "\n", timeout=120)
        assert p.returncode == 0, err
        assert PERSONAL_TOKEN not in out + err
    _, st = daemon.get("/v1/status")
    names = {p["name"] for p in st["profiles"]}
    assert names == {"default"} | {f"{x}{i}" for x in "ab" for i in range(50)}
    assert run_cli("token", "--profile", "b49").returncode == 0


def test_ca_bundle_for_a_tls_inspecting_proxy(home: Path, tls_files: tuple[Path, Path]) -> None:
    import ssl

    from coactive_credd.testing.fakeupstream import FakeCoactiveThread

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*tls_files)
    with FakeCoactiveThread(ssl_context=context) as tls:
        tls.add_personal_token(PERSONAL_TOKEN)
        args = ["login", "--base-url", tls.base_url, "--personal-token-stdin"]
        untrusted = run_cli(*args, input=PERSONAL_TOKEN + "\n")
        assert untrusted.returncode == 6 and "ca_bundle" in untrusted.stderr
        trusted = run_cli(*args, "--ca-bundle", str(tls_files[0]), input=PERSONAL_TOKEN + "\n")
        assert trusted.returncode == 0, trusted.stderr
        assert f'ca_bundle = "{tls_files[0]}"' in (home / "config.toml").read_text()
        d = start_daemon(home)
        try:
            assert run_cli("refresh").returncode == 0  # the daemon trusts the bundle too
            assert tls.logins == 2
        finally:
            d.stop()


async def test_a_daemon_whose_socket_is_removed_or_replaced_stops(tmp_path: Path) -> None:
    import asyncio

    from coactive_credd.server.process import watch_socket

    sock = tmp_path / "s"
    for replace in (False, True):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(str(sock))
        stop = asyncio.Event()
        task = asyncio.create_task(watch_socket(sock, sock.stat().st_ino, stop, interval=0.02))
        await asyncio.sleep(0.1)
        assert not stop.is_set()  # still ours: keep serving
        sock.unlink()
        other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if replace:
            other.bind(str(sock))
        await asyncio.wait_for(task, 2)
        assert stop.is_set()
        s.close()
        other.close()
        sock.unlink(missing_ok=True)


def test_keep_alive_answers_and_uvloop_is_used_when_installed(daemon: Daemon) -> None:
    import importlib.util

    from .conftest import UnixHTTP

    conn = UnixHTTP(str(daemon.socket))
    try:
        for _ in range(3):  # keep-alive: one connection, three answers
            conn.request("GET", "/v1/token")
            assert conn.getresponse().read()
    finally:
        conn.close()
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    assert f"(event loop: {loop})" in daemon.log_text()


def test_credential_route_matches_gits_origin_to_a_profile(
    daemon: Daemon, fake: FakeCoactive
) -> None:
    login(fake, "zeta")
    port = fake.base_url.rsplit(":", 1)[1]
    here = f"/v1/credential?protocol=http&host=127.0.0.1:{port}"
    tokens = {n: run_cli("token", "--profile", n).stdout.strip() for n in ("default", "zeta")}
    status, body = daemon.get(here)
    assert status == 200 and (body["profile"], body["access_token"]) == (
        "default",
        tokens["default"],
    )
    assert daemon.get(here + "&username=zeta")[1]["profile"] == "zeta"
    assert daemon.get(here + "&profile=zeta")[1]["profile"] == "zeta"
    # A username that names no profile gets nothing, whatever the client's profile says:
    # one identity's token is never handed over under another's name.
    status, body = daemon.get(here + "&username=nobody&profile=zeta")
    assert (status, body["error"]["code"]) == (404, "no_match")
    assert not leaked(json.dumps(body), set(fake.issued))
    for other in (
        "protocol=https&host=github.com",
        "protocol=http&host=127.0.0.1",
        f"protocol=https&host=127.0.0.1:{port}",
        f"protocol=http&host=localhost:{port}",
    ):
        status, body = daemon.get(f"/v1/credential?{other}")
        assert (status, body["error"]["code"]) == (404, "no_match"), other
        assert not leaked(json.dumps(body), set(fake.issued))
    assert daemon.get("/v1/credential?host=x")[0] == 400


def test_interactive_login_prompts_on_the_terminal_without_echo(
    home: Path, fake: FakeCoactive
) -> None:
    import pty
    import select

    pid, fd = pty.fork()
    if pid == 0:  # the child: the real command on a terminal, and nothing else
        try:
            os.execvp(  # noqa: S606 - the command under test, on a pseudo-terminal
                sys.executable,
                [sys.executable, "-m", "coactive_credd", "login", "--base-url", fake.base_url],
            )
        finally:
            os._exit(127)
    seen = b""

    def read_until(marker: bytes, timeout: float = 20) -> None:
        nonlocal seen
        deadline = time.monotonic() + timeout
        while marker not in seen and time.monotonic() < deadline:
            if select.select([fd], [], [], 0.1)[0]:
                try:
                    seen += os.read(fd, 4096)
                except OSError:
                    break

    read_until(b"Personal token: ")
    assert b"Personal token: " in seen
    os.write(fd, PERSONAL_TOKEN.encode() + b"\n")
    read_until(b"verified")
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0, seen
    assert b"verified" in seen
    assert PERSONAL_TOKEN.encode() not in seen  # no echo
    assert fake.logins == 1
