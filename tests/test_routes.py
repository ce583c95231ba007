"""The routes' refusals, exact (SPEC "Errors": status, code, message and hint), and the
cases of the routes that their everyday use does not reach: ``GET /v1/credential``,
``POST /v1/token/refresh``, ``expires_in`` as the clock moves, a reload that fails. The daemon runs in this process as ``serve`` serves it (the ``inproc`` fixture),
so mutation testing sees every line these tests run."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from coactive_credd.core import engine
from coactive_credd.server import service
from coactive_credd.server.profile import rfc3339
from prometheus_client.parser import text_string_to_metric_families

from .conftest import InProc, both_paths, run_cli

PASSPHRASE = "correct horse battery staple"
SHAPE = 'send {"rejected_token_sha256": "<hex>"}'


def refusal(code: str, message: str, hint: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "hint": hint}}


async def ask(
    ip: InProc, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, str, Any]:
    """(status, content type, the JSON document or the text) of one request."""
    async with ip.session.request(
        method, "http://localhost" + path, data=body, headers=headers or {}
    ) as r:
        text = await r.text()
        return (
            r.status,
            r.content_type,
            json.loads(text) if r.content_type.endswith("json") else text,
        )


def origin(ip: InProc) -> str:
    """The git query for the origin of the fake Coactive's base URL (``http://127.0.0.1:PORT``)."""
    return "protocol=http&host=" + ip.fake.base_url.removeprefix("http://")


NEEDED = refusal(
    "bad_request",
    "protocol (https or http) and host are needed",
    "pass ?protocol=https&host=HOST[:PORT]",
)


@pytest.mark.parametrize(
    "query", ["", "?protocol=https", "?host=api.coactive.ai", "?protocol=ftp&host=x", "?host="]
)
async def test_a_credential_needs_a_protocol_git_speaks_and_a_host(
    inproc: InProc, query: str
) -> None:
    assert await ask(inproc, "GET", "/v1/credential" + query) == (400, "application/json", NEEDED)
    assert inproc.fake.logins == 1  # the fixture's


async def test_a_credential_for_an_origin_no_profile_answers(inproc: InProc) -> None:
    hint = "`coactive-credd status` lists the profiles and their base URLs"
    got = await ask(inproc, "GET", "/v1/credential?protocol=https&host=elsewhere.example")
    assert got == (
        404,
        "application/json",
        refusal("no_match", "no profile answers for https://'elsewhere.example'", hint),
    )
    # a long host is quoted to 256 characters
    got = await ask(inproc, "GET", "/v1/credential?protocol=https&host=" + "a" * 300)
    message = "no profile answers for https://'" + "a" * 256 + "'"
    assert got == (404, "application/json", refusal("no_match", message, hint))


async def test_a_credential_in_text_is_the_token_alone(inproc: InProc) -> None:
    got = await ask(
        inproc, "GET", f"/v1/credential?{origin(inproc)}", headers={"Accept": "text/plain"}
    )
    assert got == (200, "text/plain", inproc.fake.issued[-1])


async def test_a_credential_refused_keeps_its_refusal(inproc: InProc) -> None:
    """A ``min_ttl`` no token could meet is refused on ``/v1/credential`` as on ``/v1/token``:
    the refusal is passed on as it is, not dressed up as a credential."""
    status, _, body = await ask(inproc, "GET", f"/v1/credential?{origin(inproc)}&min_ttl=99999")
    assert status == 400 and set(body) == {"error"} and body["error"]["code"] == "bad_request"
    assert (await inproc.get("/v1/token?min_ttl=99999")) == (400, body)


async def test_a_credential_of_a_locked_vault(inproc: InProc) -> None:
    rekey = await asyncio.to_thread(run_cli, "rekey", "--passphrase-stdin", input=PASSPHRASE + "\n")
    assert rekey.returncode == 0, rekey.stderr
    assert (await inproc.post("/v1/admin/lock"))[0] == 200
    got = await ask(inproc, "GET", f"/v1/credential?{origin(inproc)}")
    locked = refusal("locked", "the vault is locked", "run `coactive-credd unlock`")
    assert got == (423, "application/json", locked)


@pytest.mark.parametrize(
    ("body", "message", "hint"),
    [
        (b'{"rejected_token_sha256": 5}', "rejected_token_sha256 must be a string", SHAPE),
        (b'{"rejected_token_sha256": null}', "rejected_token_sha256 must be a string", SHAPE),
        (
            b'{"rejected_token_sha256": "abc"}',
            "rejected_token_sha256 must be 64 hex digits",
            "send the SHA-256 of the rejected token, in hex",
        ),
        (b"[1]", "body is not a JSON object", SHAPE),
        (b'{"rejected', "body is not a JSON object", SHAPE),
    ],
)
async def test_a_refresh_with_a_malformed_report(
    inproc: InProc, body: bytes, message: str, hint: str
) -> None:
    got = await ask(inproc, "POST", "/v1/token/refresh", body)
    assert got == (400, "application/json", refusal("bad_request", message, hint))
    assert inproc.fake.logins == 1  # refused before any login


async def test_a_refresh_with_an_empty_object_is_a_plain_refresh(inproc: InProc) -> None:
    before = inproc.fake.issued[-1]
    status, _, body = await ask(inproc, "POST", "/v1/token/refresh", b"{}")
    assert status == 200 and body["access_token"] == inproc.fake.issued[-1] != before
    assert inproc.fake.logins == 2


async def test_a_report_of_a_token_already_replaced_makes_no_login(inproc: InProc) -> None:
    """A program reports the token it was handed after the daemon had replaced it: the
    current one is answered, with no login (upper-case hex is the same digest)."""
    old = inproc.fake.issued[-1]
    assert (await inproc.post("/v1/token/refresh"))[0] == 200
    current = inproc.fake.issued[-1]
    digest = hashlib.sha256(old.encode()).hexdigest().upper()
    report = json.dumps({"rejected_token_sha256": digest}).encode()
    status, _, body = await ask(inproc, "POST", "/v1/token/refresh", report)
    assert status == 200 and body["access_token"] == current != old
    assert inproc.fake.logins == 2


@both_paths
async def test_expires_in_counts_down_in_whole_seconds(inproc: InProc) -> None:
    """``expires_in`` is the whole seconds left (rounded down) as the clock moves, on the
    same token: down to 0 for a token with less than a second left that may still be served
    (a 1 s lifetime, its skew half of it)."""
    first = (await inproc.get("/v1/token"))[1]
    inproc.clock.jump(100.5)
    again = (await inproc.get("/v1/token"))[1]
    assert again["access_token"] == first["access_token"]
    assert again["expires_in"] == first["expires_in"] - 101  # 3499.5 s left: 3499
    inproc.fake.expires_in = 1
    assert (await inproc.post("/v1/token/refresh"))[0] == 200
    inproc.clock.jump(0.3)
    status, body = await inproc.get("/v1/token")
    assert status == 200 and body["access_token"] == inproc.fake.issued[-1]
    assert body["expires_in"] == 0


@both_paths
async def test_expires_at_is_when_expires_in_runs_out_after_a_suspend(inproc: InProc) -> None:
    """After a suspend the wall clock has not caught up with, the token has less time left
    than its ``expires_at`` says: the answer's ``expires_at`` moves earlier with
    ``expires_in``, to the second (RFC 3339 has whole seconds here)."""
    tok = inproc.daemon.profiles["default"].rt.token
    assert tok is not None
    body = (await inproc.get("/v1/token"))[1]
    assert body["expires_at"] == rfc3339(tok.expires_at)  # no suspend: the token's own
    inproc.clock.suspend(600)
    body = (await inproc.get("/v1/token"))[1]
    assert body["access_token"] == tok.access_token
    assert body["expires_in"] == 3000
    at = datetime.fromisoformat(body["expires_at"].replace("Z", "+00:00")).timestamp()
    now = inproc.clock.now
    assert now + body["expires_in"] < at <= now + body["expires_in"] + 1, (at, now)


async def test_a_reload_that_fails_keeps_the_state_and_says_why(
    inproc: InProc, home: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A reload of a broken config keeps what was loaded, answers status with the reason,
    logs it, and tells the service manager it is ready again; the next good reload forgets
    the failure. A reload while locked says so in its log line."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(tmp_path / "notify"))
    listener.settimeout(5)
    d = inproc.daemon
    d.notifier = service.Notifier(str(tmp_path / "notify"))
    config_file = home / "config.toml"
    good = config_file.read_text()
    config_file.write_text(good + "\n[oops\n")
    caplog.clear()
    assert (await inproc.post("/v1/admin/reload"))[0] == 200
    assert listener.recv(4096).startswith(b"RELOADING=1\nMONOTONIC_USEC=")
    assert listener.recv(4096).startswith(b"READY=1\nSTATUS=1 profile(s)")
    status = (await inproc.get("/v1/status"))[1]
    assert "not valid TOML" in status["last_reload_error"]
    assert status["last_reload_error"] == d.last_reload_error
    [line] = [r.getMessage() for r in caplog.records if "reload" in r.getMessage()]
    assert line == f"reload failed, keeping the previous state: {d.last_reload_error}"
    assert (await inproc.get("/v1/token"))[0] == 200  # still serving
    config_file.write_text(good)
    caplog.clear()
    assert (await inproc.post("/v1/admin/reload"))[0] == 200
    assert (await inproc.get("/v1/status"))[1]["last_reload_error"] is None
    assert [r.getMessage() for r in caplog.records if "reload" in r.getMessage()] == [
        "reloaded: 1 profile(s)"
    ]
    rekey = await asyncio.to_thread(run_cli, "rekey", "--passphrase-stdin", input=PASSPHRASE + "\n")
    assert rekey.returncode == 0, rekey.stderr
    assert (await inproc.post("/v1/admin/lock"))[0] == 200
    caplog.clear()
    d.reload()
    assert [r.getMessage() for r in caplog.records if "reload" in r.getMessage()] == [
        "reloaded: 1 profile(s), vault locked"
    ]
    listener.close()


@both_paths
@pytest.mark.parametrize(
    ("query", "status", "doc"),
    [
        (
            "?profile=-x",
            400,
            refusal(
                "bad_request",
                "invalid profile name '-x' (use 1-64 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit)",
                "pass ?profile=NAME",
            ),
        ),
        (
            "?profile=nope",
            404,
            refusal(
                "unknown_profile",
                "no profile named 'nope'",
                "run `coactive-credd login --profile nope`",
            ),
        ),
        (
            "?min_ttl=-5",
            400,
            refusal(
                "bad_request",
                "min_ttl must be a whole number of seconds from 0 to 86400, got '-5'",
                "pass ?min_ttl=SECONDS",
            ),
        ),
        (
            "?min_ttl=3700",
            400,
            refusal(
                "bad_request",
                "min_ttl=3700 is longer than the tokens Coactive issues (3600 s)",
                "ask for a smaller min_ttl",
            ),
        ),
    ],
)
async def test_a_token_request_refused(
    inproc: InProc, query: str, status: int, doc: dict[str, Any]
) -> None:
    assert await ask(inproc, "GET", "/v1/token" + query) == (status, "application/json", doc)
    assert inproc.fake.logins == 1  # the fixture's


@both_paths
async def test_a_token_of_a_locked_vault(inproc: InProc) -> None:
    rekey = await asyncio.to_thread(run_cli, "rekey", "--passphrase-stdin", input=PASSPHRASE + "\n")
    assert rekey.returncode == 0, rekey.stderr
    assert (await inproc.post("/v1/admin/lock"))[0] == 200
    locked = refusal("locked", "the vault is locked", "run `coactive-credd unlock`")
    for method, path in (("GET", "/v1/token"), ("POST", "/v1/token/refresh")):
        assert await ask(inproc, method, path) == (423, "application/json", locked)
    # an unknown profile is still unknown, locked or not
    assert (await ask(inproc, "GET", "/v1/token?profile=nope"))[0] == 404


# ... works in N s: Coactive's Retry-After (or the backoff) refuses a forced refresh until then.
HINT_DOWN = (
    "check the network and `coactive-credd status`; `coactive-credd refresh --profile default` "
    "works in "
)


@both_paths
async def test_a_dead_token_while_coactive_is_down_is_a_503_never_the_token(
    inproc: InProc,
) -> None:
    inproc.fake.fault = "503"
    inproc.clock.jump(3600)  # dead by both clocks; the caller waits for a login that fails
    status, _, body = await ask(inproc, "GET", "/v1/token")
    assert status == 503 and set(body) == {"error"}
    assert body["error"]["code"] == "upstream_unavailable"
    assert body["error"]["message"].startswith(
        "no valid token for profile 'default' and Coactive cannot be reached ("
    )
    assert body["error"]["hint"].startswith(HINT_DOWN)


@both_paths
async def test_a_min_ttl_the_new_token_cannot_meet_either_is_a_400_after_one_login(
    inproc: InProc,
) -> None:
    """A caller needs 3000 s and the token has 2000 s left: one login. Coactive now issues
    2500 s tokens, so the new one cannot meet it either: 400, naming the new lifetime; a
    caller who needs less gets the new token."""
    inproc.clock.jump(1600)
    inproc.fake.expires_in = 2500
    got = await ask(inproc, "GET", "/v1/token?min_ttl=3000")
    message = "min_ttl=3000 is longer than the tokens Coactive issues (2500 s)"
    assert got == (
        400,
        "application/json",
        refusal("bad_request", message, "ask for a smaller min_ttl"),
    )
    assert inproc.fake.logins == 2
    status, body = await inproc.get("/v1/token?min_ttl=2000")
    assert status == 200 and body["access_token"] == inproc.fake.issued[-1]
    assert inproc.fake.logins == 2


@both_paths
async def test_a_min_ttl_login_that_fails_is_a_503_and_the_token_still_serves(
    inproc: InProc,
) -> None:
    inproc.clock.jump(1600)  # 2000 s left, served until 1970 s from now
    inproc.fake.fault = "503"
    status, _, body = await ask(inproc, "GET", "/v1/token?min_ttl=3000")
    assert status == 503 and body["error"]["code"] == "upstream_unavailable"
    assert body["error"]["message"].startswith(
        "no new token for profile 'default': Coactive cannot be reached ("
    )
    assert body["error"]["message"].endswith("; the current token is still served for 1970 s")
    assert body["error"]["hint"].startswith(HINT_DOWN)
    assert (await inproc.get("/v1/token"))[0] == 200


@both_paths
async def test_an_unknown_path_or_method_is_refused_and_counted(inproc: InProc) -> None:
    api_is = "the API is GET /v1/token, POST /v1/token/refresh, GET /v1/status, GET /healthz"
    nowhere = refusal("not_found", "no such path: /v2/token", api_is)
    assert await ask(inproc, "GET", "/v2/token") == (404, "application/json", nowhere)
    assert await ask(inproc, "GET", "/v2/token") == (404, "application/json", nowhere)
    wrong = refusal("bad_request", "DELETE is not allowed on /v1/token", "see docs/PROTOCOL.md")
    assert await ask(inproc, "DELETE", "/v1/token") == (405, "application/json", wrong)
    metrics = (await inproc.get("/metrics"))[1]
    refused = {
        s.labels["reason"]: s.value
        for f in text_string_to_metric_families(metrics)
        for s in f.samples
        if s.name == "coactive_credd_requests_refused_total"
    }
    assert refused == {"not_found": 2, "bad_request": 1}


@pytest.mark.parametrize(
    ("fault", "status", "line"),
    [
        (RuntimeError("planted"), 500, "internal error answering GET /v1/status"),
        (ConnectionResetError("planted"), 499, "connection lost answering GET /v1/status"),
    ],
)
async def test_a_fault_while_answering_is_one_log_line_and_no_traceback_to_the_caller(
    inproc: InProc,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    fault: Exception,
    status: int,
    line: str,
) -> None:
    """A bug (planted: the state of a profile raises; nothing real makes it) is answered 500
    with the one generic message, and logged with its traceback; a caller gone mid-answer
    (planted the same way) is logged at debug level only."""

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise fault

    monkeypatch.setattr(engine, "state", broken)
    caplog.clear()
    got = await ask(inproc, "GET", "/v1/status")
    assert got[0] == status
    if status == 500:
        internal = refusal("internal", "internal error in coactive-credd", "see the daemon's log")
        assert got[1:] == ("application/json", internal)
    [record] = [r for r in caplog.records if r.getMessage() == line]
    assert (record.levelname, record.exc_info is not None) == (
        ("ERROR", True) if status == 500 else ("DEBUG", False)
    )
    # the daemon's own answer: not aiohttp's last resort for a handler that raised, which
    # gives the same body but logs a line of its own and closes the connection
    loud = [r.getMessage() for r in caplog.records if r.levelname in ("WARNING", "ERROR")]
    assert loud == ([line] if status == 500 else [])
