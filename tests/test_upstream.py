"""The login exchange against a real fake Coactive: request shapes, faults, TLS, secrecy."""

from __future__ import annotations

import base64
import email.utils
import json
import logging
import socket
import ssl
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import coactive_credd
import pytest
from aiohttp import web
from coactive_credd.testing.fakeupstream import FakeCoactive
from coactive_credd.upstream import redact
from coactive_credd.upstream.exchange import (
    Credential,
    CredentialsRejected,
    Grant,
    Upstream,
    UpstreamError,
    UpstreamUnavailable,
    parse_login_answer,
    parse_retry_after,
    validate_base_url,
)

PERSONAL = "cpt_upstream-Personal.Token_0123456789"
CLIENT_ID = "client-upstream-7"
CLIENT_SECRET = "cs_upstream/Secret+9876543210="
PERSONAL_CRED = Credential(auth="personal_token", secret=PERSONAL)
CLIENT_CRED = Credential(auth="client_credentials", secret=CLIENT_SECRET, client_id=CLIENT_ID)
BASIC = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
SECRETS = {PERSONAL, CLIENT_SECRET, BASIC}


@pytest.fixture
async def coactive() -> AsyncIterator[FakeCoactive]:
    fake = FakeCoactive()
    fake.add_personal_token(PERSONAL)
    fake.add_client(CLIENT_ID, CLIENT_SECRET)
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    up = Upstream(connect_timeout=1.0, read_timeout=1.0)
    yield up
    await up.close()


@pytest.fixture(autouse=True)
def no_secret_logged(
    request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> Iterator[None]:
    """After every test: no credential, and no whole issued token, in any log record."""
    caplog.set_level(logging.DEBUG, logger="coactive_credd")
    fake = request.getfixturevalue("coactive") if "coactive" in request.fixturenames else None
    yield
    secrets = SECRETS | set(fake.issued if fake else ())
    # At teardown caplog.records is the teardown phase's; the test's own are under "call".
    for record in caplog.get_records("setup") + caplog.get_records("call"):
        text = record.getMessage() + (record.exc_text or "")
        assert not [s for s in secrets if s in text], f"secret in log: {record.name}"


def assert_no_secret(exc: BaseException, *extra: str) -> None:
    for s in SECRETS | set(extra):
        assert s not in str(exc) and s not in repr(exc)
        assert s not in str(exc.__cause__) and s not in repr(exc.__cause__)


def failures_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "coactive_credd.upstream.exchange"
        and r.levelno == logging.DEBUG
        and " failed: " in r.getMessage()
    ]


# --- the exchange -------------------------------------------------------------------------


async def test_personal_token_exchange_sends_the_documented_request(
    coactive: FakeCoactive, upstream: Upstream
) -> None:
    grant = await upstream.login(coactive.base_url + "/", PERSONAL_CRED)

    assert grant == Grant(access_token=coactive.issued[-1], token_type="Bearer", expires_in=3600)
    [req] = coactive.requests
    assert (req.method, req.path, req.status, req.auth) == ("POST", "/api/v0/login", 200, "bearer")
    assert req.headers["Authorization"] == f"Bearer {PERSONAL}"
    assert req.headers["Content-Type"] == "application/json"
    assert req.headers["User-Agent"] == f"coactive-credd/{coactive_credd.__version__}"
    assert req.body == {"grant_type": "refresh_token"}
    assert coactive.logins == 1


async def test_client_credentials_exchange_uses_basic_auth(
    coactive: FakeCoactive, upstream: Upstream
) -> None:
    coactive.expires_in = 120
    grant = await upstream.login(coactive.base_url, CLIENT_CRED)

    assert (grant.access_token, grant.expires_in) == (coactive.issued[-1], 120)
    [req] = coactive.requests
    assert req.auth == "basic"
    scheme, value = req.headers["Authorization"].split(" ")
    assert (scheme, base64.b64decode(value).decode()) == ("Basic", f"{CLIENT_ID}:{CLIENT_SECRET}")
    assert req.headers["Content-Type"] == "application/json"
    assert req.body == {"grant_type": "client_credentials"}


async def test_one_connection_serves_successive_logins(
    coactive: FakeCoactive, upstream: Upstream
) -> None:
    await upstream.login(coactive.base_url, PERSONAL_CRED)
    await upstream.login(coactive.base_url, CLIENT_CRED)
    assert coactive.requests[0].peer == coactive.requests[1].peer
    # After close, a later login opens a fresh session rather than failing.
    await upstream.close()
    await upstream.login(coactive.base_url, PERSONAL_CRED)
    assert coactive.requests[2].peer != coactive.requests[0].peer
    assert coactive.logins == 3


async def test_unusual_but_legal_token_is_accepted(
    coactive: FakeCoactive, upstream: Upstream
) -> None:
    odd = "eyJhbGciOiJI.eyJzdWIiOiIx.c2ln-_~+/=="
    coactive.next_tokens.append(odd)
    assert (await upstream.login(coactive.base_url, PERSONAL_CRED)).access_token == odd


async def test_token_with_whitespace_is_a_malformed_answer(
    coactive: FakeCoactive, upstream: Upstream
) -> None:
    coactive.next_tokens.append("cat_two words")
    with pytest.raises(UpstreamUnavailable, match="access_token contains whitespace") as info:
        await upstream.login(coactive.base_url, PERSONAL_CRED)
    assert_no_secret(info.value, "cat_two words")


# --- rejection ----------------------------------------------------------------------------


@pytest.mark.parametrize("cred", [PERSONAL_CRED, CLIENT_CRED], ids=["personal", "client"])
async def test_revoked_credentials_are_rejected_and_not_retryable(
    coactive: FakeCoactive, upstream: Upstream, caplog: pytest.LogCaptureFixture, cred: Credential
) -> None:
    coactive.revoke(cred.secret)
    with pytest.raises(CredentialsRejected) as info:
        await upstream.login(coactive.base_url, cred)

    exc = info.value
    assert (exc.status, exc.retryable) == (401, False)
    assert "HTTP 401" in exc.detail and "Invalid or revoked credentials" in exc.detail
    assert str(exc) == exc.detail
    assert_no_secret(exc)
    assert failures_logged(caplog) == [f"login at {coactive.base_url} failed: {exc.detail}"]


async def test_unknown_client_is_rejected(coactive: FakeCoactive, upstream: Upstream) -> None:
    stranger = Credential(auth="client_credentials", secret=CLIENT_SECRET, client_id="other")
    with pytest.raises(CredentialsRejected):
        await upstream.login(coactive.base_url, stranger)


async def test_fault_401_is_a_rejection(coactive: FakeCoactive, upstream: Upstream) -> None:
    coactive.fault = "401"
    with pytest.raises(CredentialsRejected) as info:
        await upstream.login(coactive.base_url, CLIENT_CRED)
    assert info.value.status == 401 and not info.value.retryable


# --- faults -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "status", "says"),
    [
        ("429", 429, "HTTP 429"),
        ("500", 500, "HTTP 500"),
        ("502", 502, "HTTP 502"),
        ("503", 503, "HTTP 503"),
        ("reset", None, "connection"),
        ("malformed", 200, "body is not JSON"),
        ("wrong_token_type", 200, "token_type is 'mac', expected 'Bearer'"),
        ("missing_expires_in", 200, "no expires_in"),
    ],
)
async def test_faults_are_retryable_unavailability(
    coactive: FakeCoactive,
    upstream: Upstream,
    caplog: pytest.LogCaptureFixture,
    fault: str,
    status: int | None,
    says: str,
) -> None:
    coactive.fault = fault
    with pytest.raises(UpstreamUnavailable) as info:
        await upstream.login(coactive.base_url, PERSONAL_CRED)

    exc = info.value
    assert exc.retryable and isinstance(exc, UpstreamError)
    assert exc.status == status
    assert says in exc.detail
    assert_no_secret(exc)
    assert failures_logged(caplog) == [f"login at {coactive.base_url} failed: {exc.detail}"]
    assert coactive.logins == 0
    # The same client recovers once the fault clears.
    coactive.fault = None
    assert (await upstream.login(coactive.base_url, PERSONAL_CRED)).access_token


async def test_retry_after_in_seconds_is_honoured(
    coactive: FakeCoactive, upstream: Upstream
) -> None:
    coactive.fault, coactive.retry_after = "429", "7"
    with pytest.raises(UpstreamUnavailable) as info:
        await upstream.login(coactive.base_url, PERSONAL_CRED)
    assert info.value.retry_after == 7.0
    assert "retry after 7 s" in info.value.detail


async def test_retry_after_as_http_date_is_honoured(
    coactive: FakeCoactive, upstream: Upstream
) -> None:
    coactive.fault = "503"
    coactive.retry_after = email.utils.formatdate(time.time() + 120, usegmt=True)
    with pytest.raises(UpstreamUnavailable) as info:
        await upstream.login(coactive.base_url, PERSONAL_CRED)
    assert info.value.retry_after is not None and 117 <= info.value.retry_after <= 121


async def test_5xx_without_retry_after_has_none(coactive: FakeCoactive, upstream: Upstream) -> None:
    coactive.fault, coactive.retry_after = "503", None
    with pytest.raises(UpstreamUnavailable) as info:
        await upstream.login(coactive.base_url, PERSONAL_CRED)
    assert info.value.retry_after is None


async def test_read_timeout_fires(coactive: FakeCoactive) -> None:
    coactive.fault = "timeout"
    up = Upstream(connect_timeout=1.0, read_timeout=0.3)
    started = time.monotonic()
    try:
        with pytest.raises(UpstreamUnavailable, match=r"read timeout \(0.3 s\)") as info:
            await up.login(coactive.base_url, PERSONAL_CRED)
    finally:
        await up.close()
    assert time.monotonic() - started < 2
    assert info.value.retryable and info.value.status is None


async def test_slow_answer_within_the_timeout_succeeds_beyond_it_fails(
    coactive: FakeCoactive,
) -> None:
    up = Upstream(connect_timeout=1.0, read_timeout=0.4)
    try:
        coactive.fault, coactive.delay = "slow", 0.1
        assert (await up.login(coactive.base_url, PERSONAL_CRED)).access_token
        coactive.delay = 1.0
        with pytest.raises(UpstreamUnavailable, match="read timeout"):
            await up.login(coactive.base_url, PERSONAL_CRED)
    finally:
        await up.close()
    assert coactive.logins == 1


async def test_nothing_listening_is_unavailable(upstream: Upstream) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(UpstreamUnavailable, match=r"cannot connect to 127\.0\.0\.1") as info:
        await upstream.login(f"http://127.0.0.1:{port}", PERSONAL_CRED)
    assert info.value.status is None and info.value.retryable


async def test_wrong_base_url_path_hints_at_base_url(
    coactive: FakeCoactive, upstream: Upstream
) -> None:
    with pytest.raises(UpstreamUnavailable) as info:
        await upstream.login(coactive.base_url + "/v2", PERSONAL_CRED)
    assert info.value.status == 404 and info.value.retryable
    assert "base_url may be wrong" in info.value.detail


async def test_plain_http_to_a_remote_host_is_refused_before_any_request(
    upstream: Upstream,
) -> None:
    with pytest.raises(ValueError, match="refusing plain http://"):
        await upstream.login("http://example.com", PERSONAL_CRED)


# --- TLS ----------------------------------------------------------------------------------


@pytest.fixture
async def tls_coactive(tls_files: tuple[Path, Path]) -> AsyncIterator[FakeCoactive]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*tls_files)
    fake = FakeCoactive(ssl_context=context)
    fake.add_personal_token(PERSONAL)
    await fake.start()
    yield fake
    await fake.stop()


async def test_unverifiable_certificate_points_at_ca_bundle(
    tls_coactive: FakeCoactive, upstream: Upstream
) -> None:
    assert tls_coactive.base_url.startswith("https://127.0.0.1:")
    with pytest.raises(UpstreamUnavailable, match=r"could not be verified.*ca_bundle") as info:
        await upstream.login(tls_coactive.base_url, PERSONAL_CRED)
    assert info.value.retryable and info.value.status is None
    assert tls_coactive.logins == 0


async def test_ca_bundle_makes_a_private_certificate_trusted(
    tls_coactive: FakeCoactive, upstream: Upstream, tls_files: tuple[Path, Path]
) -> None:
    bundle = str(tls_files[0])
    await upstream.login(tls_coactive.base_url, PERSONAL_CRED, ca_bundle=bundle)
    await upstream.login(tls_coactive.base_url, PERSONAL_CRED, ca_bundle=bundle)
    assert tls_coactive.logins == 2


async def test_unreadable_ca_bundle_says_so(
    tls_coactive: FakeCoactive, upstream: Upstream, tmp_path: Path
) -> None:
    missing = str(tmp_path / "nope.pem")
    with pytest.raises(UpstreamUnavailable, match="cannot load the ca_bundle") as info:
        await upstream.login(tls_coactive.base_url, PERSONAL_CRED, ca_bundle=missing)
    assert missing in info.value.detail


# --- servers that misbehave in ways Coactive does not ---------------------------------------


@pytest.fixture
async def odd_server() -> AsyncIterator[str]:
    """Answers by path prefix: echoes of the credential, long messages, redirects, huge bodies."""

    async def echo(request: web.Request) -> web.Response:
        auth = request.headers["Authorization"]
        return web.json_response({"detail": f"credential {auth} is not valid"}, status=401)

    async def echo_part(request: web.Request) -> web.Response:
        value = request.headers["Authorization"].split(" ", 1)[1]
        return web.json_response({"error": {"message": f"bad: {value[3:17]}…"}}, status=403)

    async def long_message(request: web.Request) -> web.Response:
        return web.json_response({"message": "x" * 500 + "\nsecond line"}, status=400)

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect("http://127.0.0.1:9/api/v0/login")

    async def huge(request: web.Request) -> web.Response:
        return web.Response(body=b"{" + b" " * (1024 * 1024) + b"}")

    app = web.Application()
    for prefix, handler in [
        ("echo", echo),
        ("part", echo_part),
        ("long", long_message),
        ("redirect", redirect),
        ("huge", huge),
    ]:
        app.router.add_post(f"/{prefix}/api/v0/login", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}"
    await runner.cleanup()


@pytest.mark.parametrize("cred", [PERSONAL_CRED, CLIENT_CRED], ids=["personal", "client"])
async def test_an_echoed_credential_is_dropped_from_the_detail(
    odd_server: str, upstream: Upstream, cred: Credential
) -> None:
    for prefix, status in [("echo", 401), ("part", 403)]:
        with pytest.raises(CredentialsRejected) as info:
            await upstream.login(f"{odd_server}/{prefix}", cred)
        assert info.value.detail == (
            f"Coactive refused the login with HTTP {status}: {redact.WITHHELD}"
        )
        assert_no_secret(info.value, cred.secret[3:17])


async def test_a_long_server_message_is_kept_short_and_on_one_line(
    odd_server: str, upstream: Upstream
) -> None:
    with pytest.raises(CredentialsRejected) as info:
        await upstream.login(f"{odd_server}/long", PERSONAL_CRED)
    message = info.value.detail.split(": ", 1)[1]
    assert len(message) == 200 and message.endswith("…") and "\n" not in info.value.detail


async def test_redirects_are_not_followed(odd_server: str, upstream: Upstream) -> None:
    with pytest.raises(UpstreamUnavailable, match="unexpected HTTP 307") as info:
        await upstream.login(f"{odd_server}/redirect", PERSONAL_CRED)
    assert info.value.status == 307


async def test_an_oversized_answer_is_refused(odd_server: str, upstream: Upstream) -> None:
    with pytest.raises(UpstreamUnavailable, match="larger than 64 KiB"):
        await upstream.login(f"{odd_server}/huge", PERSONAL_CRED)


# --- validating a 200 answer ----------------------------------------------------------------

TOKEN = "cat_SecretAccessToken_abcdefghijklmnop"


@pytest.mark.parametrize(
    ("answer", "says"),
    [
        (b"<html>hello</html>", "body is not JSON (18 bytes)"),
        (b"\xff\xfe", "body is not JSON"),
        (json.dumps([TOKEN]).encode(), "body is an array, not a JSON object"),
        (json.dumps({"token_type": "Bearer", "expires_in": 60}).encode(), "no access_token"),
        (json.dumps({"access_token": 5}).encode(), "access_token is a number, not a string"),
        (json.dumps({"access_token": ""}).encode(), "access_token is empty"),
        (json.dumps({"access_token": TOKEN + "\n"}).encode(), "access_token contains"),
        (json.dumps({"access_token": TOKEN + "é"}).encode(), "access_token contains"),
        (json.dumps({"access_token": TOKEN, "expires_in": 60}).encode(), "no token_type"),
        (
            json.dumps({"access_token": TOKEN, "token_type": 1, "expires_in": 60}).encode(),
            "token_type is a number, not a string",
        ),
        (
            json.dumps({"access_token": TOKEN, "token_type": "MAC", "expires_in": 60}).encode(),
            "token_type is 'MAC', expected 'Bearer'",
        ),
        (json.dumps({"access_token": TOKEN, "token_type": "Bearer"}).encode(), "no expires_in"),
        (
            json.dumps(
                {"access_token": TOKEN, "token_type": "Bearer", "expires_in": True}
            ).encode(),
            "expires_in is a boolean, not a number of seconds",
        ),
        (
            json.dumps(
                {"access_token": TOKEN, "token_type": "Bearer", "expires_in": "1h"}
            ).encode(),
            "expires_in is '1h', not a number of seconds",
        ),
        (
            json.dumps(
                {"access_token": TOKEN, "token_type": "Bearer", "expires_in": [60]}
            ).encode(),
            "expires_in is an array, not a number of seconds",
        ),
        (
            json.dumps({"access_token": TOKEN, "token_type": "Bearer", "expires_in": 0.5}).encode(),
            "expires_in is 0, not a positive number of seconds",
        ),
        (
            json.dumps(
                {"access_token": TOKEN, "token_type": "Bearer", "expires_in": "-60"}
            ).encode(),
            "expires_in is -60, not a positive number of seconds",
        ),
        (
            json.dumps({"access_token": TOKEN, "token_type": "Bearer", "expires_in": 0}).encode(),
            "expires_in is 0, not a positive number of seconds",
        ),
        (
            json.dumps({"access_token": TOKEN, "token_type": "Bearer", "expires_in": -5}).encode(),
            "expires_in is -5",
        ),
        (
            json.dumps(
                {"access_token": TOKEN, "token_type": "Bearer", "expires_in": "1_000"}
            ).encode(),
            "expires_in is '1_000', not a number of seconds",  # int() would take it
        ),
        (
            b'{"access_token": "' + TOKEN.encode() + b'", "token_type": "Bearer", '
            b'"expires_in": -1e400}',
            "expires_in is -1, not a positive number of seconds",
        ),
    ],
)
def test_malformed_answers_say_what_is_wrong_without_the_token(answer: bytes, says: str) -> None:
    with pytest.raises(UpstreamUnavailable) as info:
        parse_login_answer(answer)
    assert says in info.value.detail
    assert info.value.retryable and info.value.status == 200
    assert TOKEN not in str(info.value) and TOKEN[-8:] not in str(info.value)


@pytest.mark.parametrize(
    ("expires_in", "seconds"),
    [(3600, 3600), (3600.0, 3600), ("3600", 3600), (" 3600 ", 3600), ("3600.0", 3600), (1.5, 1)],
)
def test_expires_in_as_a_float_or_a_numeric_string_is_accepted(
    expires_in: object, seconds: int
) -> None:
    answer = {"access_token": TOKEN, "token_type": "Bearer", "expires_in": expires_in}
    assert parse_login_answer(json.dumps(answer).encode()).expires_in == seconds


@pytest.mark.parametrize("raw", [b"1000000000000", b"1e400", b'"1e400"', b'" 1e12 "'])
def test_an_absurdly_long_lifetime_is_clamped_and_logged(
    raw: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """Infinite too (1e400 is what JSON makes of an overflowing number)."""
    answer = b'{"access_token": "%s", "token_type": "Bearer", "expires_in": %s}' % (
        TOKEN.encode(),
        raw,
    )
    assert parse_login_answer(answer).expires_in == 365 * 86400
    assert "more than a year" in caplog.text and TOKEN[-8:] not in caplog.text


def test_a_good_answer_is_normalised() -> None:
    answer = {"access_token": TOKEN, "token_type": "bEaReR", "expires_in": 3600, "scope": "x"}
    grant = parse_login_answer(json.dumps(answer).encode())
    assert grant == Grant(access_token=TOKEN, token_type="Bearer", expires_in=3600)
    assert TOKEN not in repr(grant) and repr(grant).count(TOKEN[-4:]) == 1


# --- base URLs, Retry-After, credentials -----------------------------------------------------


@pytest.mark.parametrize(
    ("url", "normalised"),
    [
        ("https://api.coactive.ai", "https://api.coactive.ai"),
        ("HTTPS://API.Coactive.AI/", "https://api.coactive.ai"),
        (
            "https://gateway.example.com:8443/coactive//",
            "https://gateway.example.com:8443/coactive",
        ),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("http://127.3.4.5", "http://127.3.4.5"),
        ("http://localhost:9000/", "http://localhost:9000"),
        ("http://[::1]", "http://[::1]"),
        ("http://[::1]:8080", "http://[::1]:8080"),
    ],
)
def test_acceptable_base_urls(url: str, normalised: str) -> None:
    assert validate_base_url(url) == normalised


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://example.com", "refusing plain http:// for example.com"),
        ("http://10.0.0.5:8080", "use https://10.0.0.5:8080"),
        ("http://localhost.example.com", "refusing plain http://"),
        ("http://[::2]", "refusing plain http://"),
        ("ftp://api.coactive.ai", "must start with https://"),
        ("api.coactive.ai", "must start with https://"),
        ("https://", "has no host"),
        ("https://user:pw@api.coactive.ai", "must not contain a user name or password"),
        ("https://api.coactive.ai/?x=1", "must not have a query"),
        ("https://api.coactive.ai/#top", "must not have a query (?…) or fragment"),
        ("https://api.coactive.ai:99999", "invalid port"),
        ("https://[::1", "not a valid URL"),
        ("https://api.coactive .ai", "contains spaces"),
        ("", "empty"),
    ],
)
def test_unacceptable_base_urls_say_what_to_do(url: str, says: str) -> None:
    with pytest.raises(ValueError) as info:
        validate_base_url(url)
    message = str(info.value)
    assert says in message and "\n" not in message
    assert "pw" not in message


def test_plain_http_refusal_names_the_fix() -> None:
    with pytest.raises(ValueError) as info:
        validate_base_url("http://example.com")
    assert "use https://example.com" in str(info.value)
    assert "localhost, 127.0.0.0/8 and ::1" in str(info.value)


NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("120", 120.0),
        (" 0 ", 0.0),
        ("-3", None),
        ("1.5", None),
        ("soon", None),
        ("86400", 86400.0),
        ("86401", 86400.0),  # at most a day
        ("99999999999999999999999", 86400.0),
        ("9" * 5000, 86400.0),
        (email.utils.formatdate(NOW + 3 * 86400, usegmt=True), 86400.0),
        (email.utils.formatdate(NOW + 90, usegmt=True), 90.0),
        (email.utils.formatdate(NOW - 90, usegmt=True), 0.0),
        ("Tue, 14 Nov 2023 22:13:50 GMT", 30.0),  # NOW + 30 s
        ("Tue, 14 Nov 2023 22:13:50", 30.0),  # no zone: GMT, as HTTP-dates always are
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, NOW) == expected


def test_credential_repr_hides_the_secret() -> None:
    assert PERSONAL not in repr(PERSONAL_CRED) and PERSONAL not in str(PERSONAL_CRED)
    assert CLIENT_SECRET not in repr(CLIENT_CRED) and CLIENT_ID in repr(CLIENT_CRED)


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"auth": "personal_token", "secret": ""}, "secret is empty"),
        ({"auth": "personal_token", "secret": "tok en"}, "contains whitespace"),
        ({"auth": "personal_token", "secret": "token\r\nX-Evil: 1"}, "control characters"),
        ({"auth": "client_credentials", "secret": "s3cret"}, "need a client_id"),
        ({"auth": "client_credentials", "secret": "s3cret", "client_id": "a:b"}, "':'"),
        ({"auth": "password", "secret": "s3cret"}, "unknown auth kind"),
    ],
)
def test_invalid_credentials_are_refused_without_echoing_them(
    kwargs: dict[str, str], says: str
) -> None:
    with pytest.raises(ValueError, match=says) as info:
        Credential(**kwargs)  # type: ignore[arg-type]
    assert kwargs["secret"] == "" or kwargs["secret"] not in str(info.value)


def test_a_retry_after_date_is_measured_against_the_answers_date() -> None:
    server_now = NOW - 3600  # the local clock runs an hour ahead of Coactive's
    date = email.utils.formatdate(server_now, usegmt=True)
    later = email.utils.formatdate(server_now + 60, usegmt=True)
    assert parse_retry_after(later, NOW, date) == 60.0
    assert parse_retry_after(later, NOW) == 0.0  # against the local clock alone: no wait
    assert parse_retry_after(later, NOW, "not a date") == 0.0
    assert parse_retry_after("120", NOW, date) == 120.0


async def test_a_fast_local_clock_does_not_shorten_a_date_retry_after(upstream: Upstream) -> None:
    """A real server whose clock is an hour behind ours says 'retry at Date + 60 s'."""

    async def busy(request: web.Request) -> web.Response:
        behind = time.time() - 3600
        return web.Response(
            status=429,
            headers={
                "Date": email.utils.formatdate(behind, usegmt=True),
                "Retry-After": email.utils.formatdate(behind + 60, usegmt=True),
            },
        )

    app = web.Application()
    app.router.add_post("/api/v0/login", busy)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        with pytest.raises(UpstreamUnavailable) as info:
            await upstream.login(f"http://127.0.0.1:{port}", PERSONAL_CRED)
    finally:
        await runner.cleanup()
    assert info.value.retry_after is not None and 59 <= info.value.retry_after <= 61
