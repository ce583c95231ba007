"""The API proxy on the socket, driven by curl against the real daemon and the fake Coactive.

What a program sends under ``/api/`` reaches the profile's base URL with the current token
and only its end-to-end headers; what is not the API's (logins, CONNECT, other hosts,
malformed targets, other uids) reaches nothing; a 401 is replayed once; bodies of any size
flow both ways while the daemon's memory stays put.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest
from coactive_credd.testing.fakeupstream import FakeCoactive, pattern

from .conftest import Daemon
from .test_peer import as_nobody

MiB = 1024 * 1024


def curl(sock: Path, *args: str, timeout: float = 60) -> tuple[int, dict[str, str], bytes]:
    """One curl over the socket: (status, headers in lower case, body)."""
    out = subprocess.run(
        ["curl", "-q", "-sS", "-i", "--unix-socket", str(sock), *args],
        capture_output=True,
        timeout=timeout,
    )
    assert out.returncode == 0, out.stderr.decode(errors="replace")
    head, _, body = out.stdout.partition(b"\r\n\r\n")
    while head.startswith(b"HTTP/1.1 100"):
        head, _, body = body.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return int(lines[0].split()[1]), headers, body


def echoed(body: bytes) -> dict[str, object]:
    doc = json.loads(body)
    assert isinstance(doc, dict)
    return doc


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_request_reaches_coactive_with_the_current_token_and_end_to_end_headers_only(
    daemon: Daemon, fake: FakeCoactive
) -> None:
    status, _headers, body = curl(
        daemon.socket,
        "-X",
        "PATCH",
        "-H",
        "Authorization: Bearer caller-sent-this",
        "-H",
        "Connection: keep-alive, X-Hop",
        "-H",
        "X-Hop: hop-value-never-forwarded",
        "-H",
        "Keep-Alive: timeout=5",
        "-H",
        "Proxy-Authorization: Basic c2VjcmV0",
        "-H",
        "TE: trailers",
        "-H",
        "X-End-To-End: kept",
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        '{"name": "x"}',
        "http://localhost/api/v1/echo/items?q=a%20b&n=1",
    )
    assert status == 200, body
    doc = echoed(body)
    assert doc["method"] == "PATCH" and doc["path"] == "/api/v1/echo/items"
    assert doc["query"] == "q=a%20b&n=1" and doc["body"] == '{"name": "x"}'
    sent = {k.lower(): v for k, v in doc["headers"]}  # type: ignore[union-attr]
    scheme, _, token = sent["authorization"].partition(" ")
    assert scheme == "Bearer" and token == fake.issued[-1]
    assert sent["x-end-to-end"] == "kept" and sent["content-type"] == "application/json"
    for hop in ("x-hop", "keep-alive", "proxy-authorization", "te", "coactive-profile"):
        assert hop not in sent, hop
    assert sent["host"] == fake.base_url.split("//")[1]


@pytest.mark.parametrize(
    ("args", "status", "code"),
    [
        (["-X", "POST", "http://localhost/api/v0/login"], 404, "not_found"),
        (["-X", "POST", "http://localhost/api/v0/login/"], 404, "not_found"),
        (
            ["--request-target", "http://evil.invalid/api/v1/echo", "http://localhost/"],
            400,
            "bad_request",
        ),
        (
            ["-X", "CONNECT", "--request-target", "evil.invalid:443", "http://localhost/"],
            400,
            "bad_request",
        ),
        (["-H", "Host: evil.invalid", "http://localhost/api/v1/echo"], 400, "bad_request"),
        (["--path-as-is", "http://localhost/api/v1/../../v1/token"], 400, "bad_request"),
        (["--path-as-is", "http://localhost/api/v1/%2e%2e/x"], 400, "bad_request"),
        # the login, spelled with percent-encoded unreserved characters (RFC 3986 §6.2.2.2)
        (["-X", "POST", "http://localhost/api/v0/%6cogin"], 404, "not_found"),
        (["-X", "POST", "http://localhost/api/%76%30/logi%6E"], 404, "not_found"),
        # segments a front end may read otherwise: an encoded /, an empty segment, `..;`
        (["-X", "POST", "http://localhost/api/v0%2flogin"], 400, "bad_request"),
        (["--path-as-is", "http://localhost/api/%2f..%2fv1/token"], 400, "bad_request"),
        (["-X", "POST", "http://localhost/api/v0//login"], 400, "bad_request"),
        (["--path-as-is", "http://localhost/api/..;/v1/token"], 400, "bad_request"),
        (
            ["-H", "Coactive-Profile: nobody-has-it", "http://localhost/api/v1/echo"],
            404,
            "unknown_profile",
        ),
        (["-H", "Coactive-Profile: bad name!", "http://localhost/api/v1/echo"], 400, "bad_request"),
    ],
)
def test_what_is_not_an_api_call_reaches_nothing(
    daemon: Daemon, fake: FakeCoactive, args: list[str], status: int, code: str
) -> None:
    got, _headers, body = curl(daemon.socket, *args)
    assert (got, json.loads(body)["error"]["code"]) == (status, code)
    assert fake.api_requests == []
    assert [r.path for r in fake.requests] == ["/api/v0/login"]  # the daemon's own, at login


def test_a_redirect_is_passed_back_not_followed(daemon: Daemon, fake: FakeCoactive) -> None:
    status, headers, _ = curl(daemon.socket, "http://localhost/api/v1/redirect")
    assert status == 302 and headers["location"] == "https://elsewhere.invalid/"
    assert len(fake.api_requests) == 1


def test_a_401_is_a_rejected_token_report_and_the_request_is_replayed_once(
    daemon: Daemon, fake: FakeCoactive
) -> None:
    curl(daemon.socket, "http://localhost/api/v1/echo")  # warm: the token in use
    first = fake.issued[-1]
    logins = fake.logins
    fake.api_401 = 1
    status, _, body = curl(
        daemon.socket, "--data-binary", "x" * 1000, "http://localhost/api/v1/echo"
    )
    assert status == 200, body
    assert echoed(body)["body_bytes"] == 1000
    assert fake.logins == logins + 1
    tokens = [r.headers["Authorization"] for r in fake.api_requests[-2:]]
    assert tokens == [f"Bearer {first}", f"Bearer {fake.issued[-1]}"] and first != fake.issued[-1]
    # Coactive refusing twice in a row: one replay only, its 401 passes through
    fake.api_401 = 2
    status, _, body = curl(daemon.socket, "http://localhost/api/v1/echo")
    assert status == 401 and json.loads(body) == {"detail": "Invalid or expired token"}


def test_a_401_to_a_body_too_large_to_hold_passes_through(
    daemon: Daemon, fake: FakeCoactive, tmp_path: Path
) -> None:
    big = tmp_path / "big"
    big.write_bytes(b"b" * (2 * MiB))
    curl(daemon.socket, "http://localhost/api/v1/echo")
    fake.api_401 = 1
    status, _, _ = curl(daemon.socket, "--data-binary", f"@{big}", "http://localhost/api/v1/echo")
    assert status == 401
    assert len([r for r in fake.api_requests if r.status == 401]) == 1  # not replayed


def test_no_login_for_a_401_inside_a_backoff_window(daemon: Daemon, fake: FakeCoactive) -> None:
    curl(daemon.socket, "http://localhost/api/v1/echo")
    fake.fault, fake.retry_after = "503", "600"
    status, _ = daemon.post("/v1/token/refresh")  # a failed login: a 600 s Retry-After window
    assert status == 503
    fake.fault = None
    logins = fake.logins
    fake.api_401 = 1
    status, _, _ = curl(daemon.socket, "http://localhost/api/v1/echo")
    assert status == 401 and fake.logins == logins


@pytest.mark.heavy  # long: started first, so it does not end the run alone
def test_bodies_of_200_mib_flow_both_ways_in_bounded_memory(
    daemon: Daemon, fake: FakeCoactive, tmp_path: Path
) -> None:
    size = 200 * MiB
    up = tmp_path / "up"
    with open(up, "wb") as f:
        for off in range(0, size, 4 * MiB):
            f.write(pattern(off, 4 * MiB))
    curl(daemon.socket, "http://localhost/api/v1/echo")
    before = rss_kib(daemon.proc.pid)
    status, _, body = curl(
        daemon.socket, "-T", str(up), "-X", "PUT", "http://localhost/api/v1/echo", timeout=120
    )
    assert status == 200, body
    digest = hashlib.sha256(up.read_bytes()).hexdigest()
    assert echoed(body)["body_bytes"] == size and echoed(body)["body_sha256"] == digest
    for chunked in ("0", "1"):
        out = subprocess.run(
            [
                "curl",
                "-q",
                "-sS",
                "--unix-socket",
                str(daemon.socket),
                "-o",
                "-",
                f"http://localhost/api/v1/stream?bytes={size}&chunked={chunked}",
            ],
            capture_output=True,
            timeout=120,
        )
        assert out.returncode == 0 and hashlib.sha256(out.stdout).hexdigest() == digest
    grown = rss_kib(daemon.proc.pid) - before
    assert grown < 32 * 1024, f"the daemon grew by {grown} KiB moving 600 MiB"


def test_another_uid_is_refused_before_anything_is_forwarded(
    home: Path, daemon: Daemon, fake: FakeCoactive
) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to act as another uid (CI runs as root)")
    home.chmod(0o711)
    daemon.socket.chmod(0o666)
    try:
        out = subprocess.run(
            as_nobody(
                "curl",
                "-q",
                "-s",
                "--unix-socket",
                str(daemon.socket),
                "-w",
                "\n%{http_code}",
                "http://localhost/api/v1/echo",
            ),
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        home.chmod(0o700)
    body, _, code = out.stdout.rpartition("\n")
    assert code == "403" and json.loads(body)["error"]["code"] == "forbidden"
    assert fake.api_requests == []


def test_metrics_status_and_audit_count_proxied_requests_and_logs_carry_none_of_them(
    daemon: Daemon, fake: FakeCoactive
) -> None:
    for _ in range(3):
        curl(
            daemon.socket,
            "-H",
            "X-Note: header-value-XYZZY",
            "--data-binary",
            "body-PLUGH",
            "http://localhost/api/v1/echo",
        )
    curl(daemon.socket, "http://localhost/api/v1/nothing-here")
    status, text = daemon.get("/metrics")
    assert status == 200
    assert (
        'coactive_credd_proxy_requests_total{method="POST",profile="default",status_class="2xx"} 3.0'
        in text
    )
    assert (
        'coactive_credd_proxy_requests_total{method="GET",profile="default",status_class="4xx"} 1.0'
        in text
    )
    assert 'coactive_credd_proxy_request_duration_seconds_count{profile="default"} 4.0' in text
    status, doc = daemon.get("/v1/status")
    px = doc["profiles"][0]["api_proxy"]
    assert px["requests"] == 4 and px["last_status"] == 404 and px["errors"] == 0
    status, audit = daemon.get("/v1/audit")
    curls = [c for c in audit["clients"] if c["exe"].endswith("/curl")]
    assert sum(c["proxied"].get("default", 0) for c in curls) == 4
    shown = subprocess.run(
        ["python3", "-m", "coactive_credd", "status"],
        capture_output=True,
        text=True,
        env={**os.environ, "COACTIVE_CREDD_SOCKET": str(daemon.socket)},
        timeout=30,
    ).stdout
    assert "default: API proxy: 4 requests, 0 errors" in shown
    daemon.stop()
    log = daemon.log_text()
    for secret in ("XYZZY", "PLUGH", *fake.issued):
        assert secret not in log


def test_the_proxy_trusts_the_profiles_ca_bundle_as_its_logins_do(
    home: Path, tls_files: tuple[Path, Path]
) -> None:
    import ssl

    from coactive_credd.testing.fakeupstream import FakeCoactiveThread

    from .conftest import PERSONAL_TOKEN, run_cli, start_daemon

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*tls_files)
    with FakeCoactiveThread(ssl_context=context) as tls:
        tls.add_personal_token(PERSONAL_TOKEN)
        args = ["login", "--base-url", tls.base_url, "--personal-token-stdin"]
        proc = run_cli(*args, "--ca-bundle", str(tls_files[0]), input=PERSONAL_TOKEN + "\n")
        assert proc.returncode == 0, proc.stderr
        d = start_daemon(home)
        try:
            status, _, body = curl(d.socket, "http://localhost/api/v1/echo")
            assert status == 200, body
            assert echoed(body)["path"] == "/api/v1/echo"
        finally:
            d.stop()
        # and without the bundle, Coactive's certificate is refused: a 502 that says why
        config = home / "config.toml"
        config.write_text(
            "\n".join(
                ln for ln in config.read_text().splitlines() if not ln.startswith("ca_bundle")
            )
            + "\n"
        )
        d = start_daemon(home)
        try:
            status, _, body = curl(d.socket, "http://localhost/api/v1/echo")
            assert status == 502 and json.loads(body)["error"]["code"] == "bad_gateway"
        finally:
            d.stop()
