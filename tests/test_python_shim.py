"""The Python shim (``coactive_token``) as a library, against a real daemon.

The conformance suite (test_shims.py) runs its CLI; this file covers what only a library
has: the keep-alive client, the async variant, and the requests/httpx auth that reports a
token Coactive rejected and retries once — also through the official ``coactive`` SDK.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import coactive_token as ct
import pytest
from coactive_credd.testing.fakeupstream import FakeCoactive

from .conftest import Daemon, start_daemon

ROOT = Path(__file__).resolve().parent.parent


# ---- a fake Coactive API that rejects chosen tokens ----------------------------------------


class FakeAPI:
    """Coactive's data API, reduced to what auth needs: 401 for a rejected token."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, bytes]] = []  # (path, Authorization, body)
        self.rejected: set[str] = set()
        self.reject_all = False
        api = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                auth = self.headers.get("Authorization", "")
                api.seen.append((self.path, auth, body))
                token = auth.removeprefix("Bearer ")
                if api.reject_all or token in api.rejected or not auth.startswith("Bearer "):
                    self._send(401, {"detail": "Invalid token"})
                elif self.path.startswith("/api/v1/datasets"):
                    page = {"currentPage": 0, "limit": 10, "offset": 0}
                    self._send(200, {"meta": {"page": page, "links": {}, "sort": []}, "data": []})
                else:
                    self._send(200, {"ok": True})

            do_GET = do_POST = do_PUT = _serve

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def auths(self) -> list[str]:
        return [a.removeprefix("Bearer ") for _, a, _ in self.seen]


@pytest.fixture
def api() -> Iterator[FakeAPI]:
    a = FakeAPI()
    a.thread.start()
    yield a
    a.server.shutdown()
    a.server.server_close()


# ---- the client --------------------------------------------------------------------------


def test_token_matches_the_daemon_and_hides_itself(daemon: Daemon, fake: FakeCoactive) -> None:
    tok = ct.fetch_token()
    assert tok.access_token == fake.issued[-1] == ct.get_token("default")
    assert tok.profile == "default" and tok.token_type == "Bearer"
    assert tok.expires_at.tzinfo is not None and tok.expires_at.utcoffset() == UTC.utcoffset(None)
    left = (tok.expires_at - datetime.now(UTC)).total_seconds()
    assert 3000 < left <= 3600 and abs(left - tok.expires_in) <= 5
    assert tok.authorization == f"Bearer {tok.access_token}"
    assert tok.access_token not in repr(tok) and tok.access_token not in str(tok)
    assert ct.format_token(tok, "header") == f"Authorization: Bearer {tok.access_token}"
    assert json.loads(ct.format_token(tok, "json"))["access_token"] == tok.access_token


def test_client_keeps_one_connection_and_reconnects_after_a_daemon_restart(
    daemon: Daemon, home: Path, fake: FakeCoactive
) -> None:
    with ct.Client() as client:
        client.token()
        conn = client._conn
        assert conn is not None and conn.sock is not None
        first_sock = conn.sock
        client.status()
        assert client._conn is conn and conn.sock is first_sock  # the same keep-alive connection
        daemon.stop()
        again = start_daemon(home)
        try:
            # The kept connection is dead; the client reconnects once and the call succeeds.
            assert client.token().access_token == fake.issued[-1]
        finally:
            again.stop()
        # With the daemon gone for good, the next call says so instead of retrying forever.
        with pytest.raises(ct.DaemonUnreachable):
            client.token()


def test_refresh_with_the_rejected_token_replaces_it_once(
    daemon: Daemon, fake: FakeCoactive
) -> None:
    with ct.Client() as client:
        old = client.token().access_token
        logins = fake.logins
        new = client.refresh(rejected_token=old)
        assert new.access_token != old and fake.logins == logins + 1
        # Reported again (another process saw the same 401): no second login.
        assert client.refresh(rejected_token=old).access_token == new.access_token
        assert fake.logins == logins + 1
        forced = client.refresh()
        assert forced.access_token != new.access_token and fake.logins == logins + 2


@pytest.mark.verified_login
def test_status_and_generic_requests(daemon: Daemon, fake: FakeCoactive) -> None:
    with ct.Client() as client:
        status = client.status()
        assert [p["name"] for p in status["profiles"]] == ["default"]
        assert fake.issued[-1] not in json.dumps(status)
        code, body = client.request("POST", "/v1/admin/reload")
        assert code == 200, body
        code, body = client.request("GET", "/healthz")
        assert code == 200
        code, body = client.request("GET", "/v1/token?profile=nope")
        assert code == 404 and body["error"]["code"] == "unknown_profile"


def test_errors_carry_code_exit_code_and_a_one_line_message(daemon: Daemon) -> None:
    with pytest.raises(ct.UnknownProfile) as info:
        ct.get_token("nope")
    err = info.value
    assert isinstance(err, LookupError) and isinstance(err, ct.CredddError)
    assert (err.code, err.exit_code, err.status) == ("unknown_profile", 4, 404)
    assert str(err) == f"{err.message} ({err.hint})" and "\n" not in str(err)
    assert "coactive-credd login --profile nope" in err.hint
    with pytest.raises(ct.BadRequest) as bad:
        ct.get_token(min_ttl=-1)
    assert isinstance(bad.value, ValueError) and bad.value.exit_code == 2


@pytest.mark.parametrize(
    ("status", "code", "cls", "exit_code"),
    [
        (400, "bad_request", ct.BadRequest, 2),
        (403, "forbidden", ct.BadRequest, 2),
        (404, "unknown_profile", ct.UnknownProfile, 4),
        (423, "locked", ct.VaultLocked, 7),
        (424, "reauth_required", ct.ReauthRequired, 5),
        (503, "upstream_unavailable", ct.UpstreamUnavailable, 6),
        (500, "", ct.CredddError, 1),
    ],
)
def test_error_answers_map_by_code_then_status(
    status: int, code: str, cls: type[ct.CredddError], exit_code: int
) -> None:
    # The mapping itself, for codes the real daemon cannot be driven to (forbidden, locked).
    with_code = ct._error_from_answer(
        status, json.dumps({"error": {"code": code, "message": "m", "hint": "h"}}).encode()
    )
    bare = ct._error_from_answer(status, b"<html>oops</html>")
    for err in (with_code, bare):
        assert type(err) is cls and err.exit_code == exit_code and err.status == status


def test_unreachable_fails_fast(home: Path) -> None:
    started = time.perf_counter()
    with pytest.raises(ct.DaemonUnreachable) as info:
        ct.get_token()
    assert time.perf_counter() - started < 0.1
    err = info.value
    assert isinstance(err, ConnectionError) and err.exit_code == 3
    assert str(home / "credd.sock") in str(err) and "coactive-credd serve" in str(err)


def test_default_socket_path_rule(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("COACTIVE_CREDD_SOCKET", "/s/explicit.sock")
    monkeypatch.setenv("COACTIVE_CREDD_HOME", str(tmp_path))
    assert ct.default_socket_path() == "/s/explicit.sock"
    monkeypatch.setenv("COACTIVE_CREDD_SOCKET", "")  # empty counts as unset
    assert ct.default_socket_path() == str(tmp_path / "credd.sock")
    monkeypatch.delenv("COACTIVE_CREDD_HOME")
    if sys.platform != "darwin":
        monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/4711")
        assert ct.default_socket_path() == "/run/user/4711/coactive-credd/credd.sock"
        monkeypatch.delenv("XDG_RUNTIME_DIR")
        uid = os.getuid()
        expected = (
            f"/run/user/{uid}/coactive-credd/credd.sock"
            if os.path.isdir(f"/run/user/{uid}")
            else f"/tmp/runtime-{uid}/coactive-credd/credd.sock"
        )
        assert ct.default_socket_path() == expected
    monkeypatch.delenv("COACTIVE_PROFILE", raising=False)
    assert ct.default_profile() == "default"
    monkeypatch.setenv("COACTIVE_PROFILE", "staging")
    assert ct.default_profile() == "staging"


async def test_async_variant(daemon: Daemon, fake: FakeCoactive, home: Path) -> None:
    assert await ct.aget_token() == fake.issued[-1]
    tok = await ct.afetch_token("default", min_ttl=60)
    assert tok.access_token == fake.issued[-1]
    with pytest.raises(ct.UnknownProfile):
        await ct.aget_token("nope")
    new = await ct.arefresh(rejected_token=tok.access_token)
    assert new.access_token != tok.access_token
    with pytest.raises(ct.DaemonUnreachable):
        await ct.aget_token(socket_path=str(home / "missing.sock"))


def test_import_stays_light() -> None:
    code = (
        "import sys, coactive_token; "
        "heavy = {'asyncio', 'aiohttp', 'cryptography', 'requests', 'httpx'} & set(sys.modules); "
        "print(sorted(heavy))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    )
    assert out.stdout.strip() == "[]"


# ---- requests / httpx auth --------------------------------------------------------------


def test_requests_auth_reports_a_rejected_token_and_retries_once(
    daemon: Daemon, fake: FakeCoactive, api: FakeAPI
) -> None:
    requests = pytest.importorskip("requests")
    old = fake.issued[-1]
    api.rejected.add(old)
    logins = fake.logins
    with requests.Session() as s:
        s.auth = ct.CoactiveAuth()
        r = s.post(api.url + "/api/v1/things", json={"q": 1})
        assert r.status_code == 200
        assert [h.status_code for h in r.history] == [401]
        assert api.auths() == [old, fake.issued[-1]]
        assert [body for _, _, body in api.seen] == [b'{"q": 1}'] * 2
        assert fake.logins == logins + 1
        # Rejected again and again: one retry, then the 401 is the caller's.
        api.seen.clear()
        api.reject_all = True
        r = s.get(api.url + "/api/v1/things")
        assert r.status_code == 401 and len(api.seen) == 2
        assert fake.logins == logins + 2
        # A streamed body cannot be sent twice: its 401 comes back without a retry.
        api.seen.clear()
        r = s.put(api.url + "/upload", data=iter([b"chunk"]))
        assert r.status_code == 401 and len(api.seen) == 1


def test_httpx_auth_reports_a_rejected_token_and_retries_once(
    daemon: Daemon, fake: FakeCoactive, api: FakeAPI
) -> None:
    httpx = pytest.importorskip("httpx")
    old = fake.issued[-1]
    api.rejected.add(old)
    logins = fake.logins
    with httpx.Client(auth=ct.CoactiveAuth()) as client:
        r = client.post(api.url + "/api/v1/things", json={"q": 1})
        assert r.status_code == 200 and [h.status_code for h in r.history] == [401]
        assert api.auths() == [old, fake.issued[-1]]
        assert len({body for _, _, body in api.seen}) == 1
        assert fake.logins == logins + 1
        api.seen.clear()
        api.reject_all = True
        assert client.get(api.url + "/x").status_code == 401 and len(api.seen) == 2


async def test_httpx_async_auth_retries_once_without_blocking_the_loop(
    daemon: Daemon, fake: FakeCoactive, api: FakeAPI
) -> None:
    httpx = pytest.importorskip("httpx")
    old = fake.issued[-1]
    api.rejected.add(old)
    async with httpx.AsyncClient(auth=ct.CoactiveAuth()) as client:
        r = await client.get(api.url + "/api/v1/things")
        assert r.status_code == 200
    assert api.auths() == [old, fake.issued[-1]]


def test_coactive_sdk_gets_its_token_from_the_daemon(
    daemon: Daemon, fake: FakeCoactive, api: FakeAPI
) -> None:
    """The official SDK, wired as client_shim/python/README.md shows."""
    pytest.importorskip("coactive", reason="the official SDK: pip install --no-deps coactive")
    httpx = pytest.importorskip("httpx")
    from coactive.client import Coactive
    from coactive.core.client_wrapper import SyncClientWrapper

    # --- as in the README
    sdk = Coactive(client_id="unused", client_secret="unused", base_url=api.url)
    SyncClientWrapper.__init__(
        sdk._client_wrapper,
        token=ct.get_token,
        base_url=api.url,
        httpx_client=httpx.Client(auth=ct.CoactiveAuth(), timeout=60),
    )
    # ---
    old = fake.issued[-1]
    datasets = sdk.dataset.list()
    assert datasets.data == []
    assert api.auths() == [old]
    # Coactive rejects the token: the SDK call still succeeds, with one new login.
    api.rejected.add(old)
    logins = fake.logins
    sdk.dataset.list()
    assert api.auths()[1:] == [old, fake.issued[-1]] and fake.logins == logins + 1
    assert all("unused" not in a for a in api.auths())
