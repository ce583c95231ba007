"""The fake Coactive holds clients to the documented request shape and fails on command."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from coactive_credd.testing.fakeupstream import FAULTS, FakeCoactive, FakeCoactiveThread

TOKEN = "cpt_fake-Personal_token.42"
CLIENT_ID = "fake-client"
CLIENT_SECRET = "cs_fake/secret+1="
BASIC = "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
JSON = "application/json"


@pytest.fixture
async def coactive() -> AsyncIterator[FakeCoactive]:
    fake = FakeCoactive(expires_in=900)
    fake.add_personal_token(TOKEN)
    fake.add_client(CLIENT_ID, CLIENT_SECRET)
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        yield session


async def post(
    http: aiohttp.ClientSession,
    url: str,
    *,
    auth: str | None = f"Bearer {TOKEN}",
    body: Any = None,
    content_type: str | None = JSON,
    method: str = "POST",
) -> tuple[int, Any]:
    headers = {}
    if auth is not None:
        headers["Authorization"] = auth
    if content_type is not None:
        headers["Content-Type"] = content_type
    data = json.dumps(body if body is not None else {"grant_type": "refresh_token"})
    async with http.request(method, url, data=data, headers=headers) as resp:
        text = await resp.text()
        try:
            return resp.status, json.loads(text)
        except ValueError:
            return resp.status, text


async def test_issues_tokens_for_both_credential_kinds(
    coactive: FakeCoactive, http: aiohttp.ClientSession
) -> None:
    url = coactive.base_url + "/api/v0/login"
    status, first = await post(http, url)
    assert status == 200
    status, second = await post(http, url, auth=BASIC, body={"grant_type": "client_credentials"})
    assert status == 200
    for answer in (first, second):
        assert set(answer) == {"access_token", "token_type", "expires_in"}
        assert (answer["token_type"], answer["expires_in"]) == ("Bearer", 900)
        assert re.fullmatch(r"cat_[A-Za-z0-9_-]{39}", answer["access_token"])
    assert coactive.issued == [first["access_token"], second["access_token"]]
    assert coactive.logins == 2
    assert [r.auth for r in coactive.requests] == ["bearer", "basic"]


@pytest.mark.parametrize(
    ("kwargs", "path", "status", "says"),
    [
        ({"content_type": "text/plain"}, "/api/v0/login", 400, "Content-Type must be"),
        ({"content_type": None}, "/api/v0/login", 400, "Content-Type must be"),
        ({"auth": None}, "/api/v0/login", 400, "Authorization must be"),
        ({"auth": "Token abc"}, "/api/v0/login", 400, "Authorization must be"),
        ({"auth": "Basic %%%"}, "/api/v0/login", 400, "not valid base64"),
        (
            {"auth": "Basic " + base64.b64encode(b"nocolon").decode()},
            "/api/v0/login",
            400,
            "'<client id>:<client secret>'",
        ),
        (
            {"body": {"grant_type": "client_credentials"}},
            "/api/v0/login",
            400,
            'body must be exactly {"grant_type": "refresh_token"}',
        ),
        (
            {"body": {"grant_type": "refresh_token", "x": 1}},
            "/api/v0/login",
            400,
            "body must be exactly",
        ),
        (
            {"auth": BASIC},
            "/api/v0/login",
            400,
            'body must be exactly {"grant_type": "client_credentials"}',
        ),
        ({"method": "PUT"}, "/api/v0/login", 405, "use POST"),
        ({}, "/api/v0/login/", 404, "the login endpoint is /api/v0/login"),
        ({}, "/login", 404, "no route /login"),
    ],
)
async def test_requests_of_the_wrong_shape_are_refused_and_recorded(
    coactive: FakeCoactive,
    http: aiohttp.ClientSession,
    kwargs: dict[str, Any],
    path: str,
    status: int,
    says: str,
) -> None:
    got, answer = await post(http, coactive.base_url + path, **kwargs)
    assert got == status
    assert says in answer["detail"]
    [recorded] = coactive.requests
    assert recorded.status == status and recorded.detail == answer["detail"]
    assert coactive.logins == 0 and coactive.issued == []


async def test_unknown_and_revoked_credentials_get_401(
    coactive: FakeCoactive, http: aiohttp.ClientSession
) -> None:
    url = coactive.base_url + "/api/v0/login"
    assert (await post(http, url, auth="Bearer cpt_unknown"))[0] == 401
    coactive.revoke(TOKEN)
    assert (await post(http, url))[0] == 401
    coactive.revoke(CLIENT_SECRET)
    assert (await post(http, url, auth=BASIC, body={"grant_type": "client_credentials"}))[0] == 401
    coactive.add_personal_token(TOKEN)  # re-adding restores it
    assert (await post(http, url))[0] == 200
    assert [r.status for r in coactive.requests] == [401, 401, 401, 200]


async def test_next_tokens_are_issued_first(
    coactive: FakeCoactive, http: aiohttp.ClientSession
) -> None:
    coactive.next_tokens.extend(["odd.token+/=", "second"])
    url = coactive.base_url + "/api/v0/login"
    tokens = [(await post(http, url))[1]["access_token"] for _ in range(3)]
    assert tokens[:2] == ["odd.token+/=", "second"] and tokens[2].startswith("cat_")
    assert coactive.next_tokens == []


@pytest.mark.parametrize(
    ("fault", "status", "retry_after"),
    [
        ("429", 429, "3"),
        ("503", 503, "3"),
        ("500", 500, None),
        ("502", 502, None),
        ("401", 401, None),
    ],
)
async def test_error_faults(
    coactive: FakeCoactive,
    http: aiohttp.ClientSession,
    fault: str,
    status: int,
    retry_after: str | None,
) -> None:
    coactive.fault, coactive.retry_after = fault, "3"
    async with http.post(
        coactive.base_url + "/api/v0/login",
        json={"grant_type": "refresh_token"},
        headers={"Authorization": f"Bearer {TOKEN}"},
    ) as resp:
        assert resp.status == status
        assert resp.headers.get("Retry-After") == retry_after
    assert coactive.logins == 0
    assert (coactive.requests[0].fault, coactive.requests[0].status) == (fault, status)


@pytest.mark.parametrize(
    ("fault", "check"),
    [
        ("malformed", lambda body: body.startswith("<html>")),
        ("wrong_token_type", lambda body: json.loads(body)["token_type"] == "mac"),
        ("missing_expires_in", lambda body: "expires_in" not in json.loads(body)),
    ],
)
async def test_malformed_success_faults(
    coactive: FakeCoactive, http: aiohttp.ClientSession, fault: str, check: Any
) -> None:
    coactive.fault = fault
    status, _ = await post(http, coactive.base_url + "/api/v0/login")
    async with http.post(
        coactive.base_url + "/api/v0/login",
        json={"grant_type": "refresh_token"},
        headers={"Authorization": f"Bearer {TOKEN}"},
    ) as resp:
        assert resp.status == 200 and check(await resp.text())
    assert status == 200 and coactive.logins == 0 and coactive.issued == []


async def test_reset_drops_the_connection(
    coactive: FakeCoactive, http: aiohttp.ClientSession
) -> None:
    coactive.fault = "reset"
    with pytest.raises(aiohttp.ClientConnectionError):
        await post(http, coactive.base_url + "/api/v0/login")
    assert coactive.requests[0].status is None


async def test_delay_and_slow_hold_the_answer(
    coactive: FakeCoactive, http: aiohttp.ClientSession
) -> None:
    url = coactive.base_url + "/api/v0/login"
    coactive.delay = 0.3
    started = time.monotonic()
    assert (await post(http, url))[0] == 200
    assert time.monotonic() - started >= 0.3
    coactive.fault, coactive.delay = "slow", 0.0  # "slow" alone waits 5 s
    with pytest.raises(asyncio.TimeoutError):
        async with asyncio.timeout(0.5):
            await post(http, url)


async def test_stop_does_not_wait_for_a_hanging_answer(
    coactive: FakeCoactive, http: aiohttp.ClientSession
) -> None:
    coactive.fault = "timeout"
    pending = asyncio.ensure_future(post(http, coactive.base_url + "/api/v0/login"))
    for _ in range(100):
        if coactive.requests:
            break
        await asyncio.sleep(0.01)
    started = time.monotonic()
    await coactive.stop()
    assert time.monotonic() - started < 1.5
    with pytest.raises(aiohttp.ClientConnectionError):
        await pending


async def test_http_control_and_stats(coactive: FakeCoactive, http: aiohttp.ClientSession) -> None:
    control = coactive.base_url + "/_fake/control"
    async with http.post(control, json={"fault": "503", "retry_after": "9", "delay": 0}) as resp:
        assert resp.status == 200
        assert (await resp.json())["fault"] == "503"
    assert (coactive.fault, coactive.retry_after) == ("503", "9")
    assert (await post(http, coactive.base_url + "/api/v0/login"))[0] == 503

    async with http.post(control, json={"fault": None, "expires_in": 60}) as resp:
        assert resp.status == 200
    status, answer = await post(http, coactive.base_url + "/api/v0/login")
    assert (status, answer["expires_in"]) == (200, 60)

    for bad in ({"fault": "explode"}, {"delay": -1}, {"expires_in": "x"}, {"colour": 1}, [1]):
        async with http.post(control, json=bad) as resp:
            assert resp.status == 400, bad
    async with http.get(coactive.base_url + "/_fake/stats") as resp:
        assert await resp.json() == {"logins": 1, "requests": 2}


def test_fault_names_are_the_documented_ones() -> None:
    assert set(FAULTS) == {
        "slow",
        "429",
        "500",
        "502",
        "503",
        "reset",
        "malformed",
        "401",
        "wrong_token_type",
        "missing_expires_in",
        "timeout",
    }


def login_sync(base_url: str, authorization: str, grant_type: str) -> tuple[int, Any]:
    request = urllib.request.Request(  # noqa: S310 - the fake, on loopback
        base_url + "/api/v0/login",
        data=json.dumps({"grant_type": grant_type}).encode(),
        headers={"Authorization": authorization, "Content-Type": JSON},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:  # noqa: S310
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


def test_thread_runner_serves_synchronous_tests() -> None:
    with FakeCoactiveThread(expires_in=120) as fake:
        fake.add_client(CLIENT_ID, CLIENT_SECRET)  # from this thread, while it serves
        status, answer = login_sync(fake.base_url, BASIC, "client_credentials")
        assert (status, answer["expires_in"]) == (200, 120)
        fake.revoke(CLIENT_SECRET)
        assert login_sync(fake.base_url, BASIC, "client_credentials")[0] == 401
        assert (fake.logins, len(fake.requests), fake.issued) == (1, 2, [answer["access_token"]])
        base_url = fake.base_url
    with pytest.raises(urllib.error.URLError):
        login_sync(base_url, BASIC, "client_credentials")


def test_command_line_serves_until_sigterm() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "coactive_credd.testing.fakeupstream",
            "--expires-in",
            "77",
            "--personal-token",
            TOKEN,
            "--client",
            f"{CLIENT_ID}:{CLIENT_SECRET}",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "error"},
    )
    try:
        assert proc.stdout is not None
        base_url = proc.stdout.readline().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", base_url)
        status, answer = login_sync(base_url, f"Bearer {TOKEN}", "refresh_token")
        assert (status, answer["expires_in"]) == (200, 77)
        assert login_sync(base_url, BASIC, "client_credentials")[0] == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
