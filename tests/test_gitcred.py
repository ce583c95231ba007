"""The git origin match, as the rules read (SPEC, git section; gitcredentials(7)), and the
/v1/credential route of the in-process daemon that applies them.

The expectations are written out from the rules, never computed with :mod:`gitcred`.
"""

from __future__ import annotations

import asyncio

import pytest
from coactive_credd.core import gitcred

from .conftest import PERSONAL_TOKEN, InProc, run_cli


@pytest.mark.parametrize(
    ("protocol", "host", "origin"),
    [
        ("https", "api.coactive.ai", ("https", "api.coactive.ai", 443)),
        ("HTTPS", "API.Coactive.AI", ("https", "api.coactive.ai", 443)),
        ("https", "api.coactive.ai:443", ("https", "api.coactive.ai", 443)),
        ("https", "api.coactive.ai:8443", ("https", "api.coactive.ai", 8443)),
        ("http", "127.0.0.1", ("http", "127.0.0.1", 80)),
        ("http", "127.0.0.1:1", ("http", "127.0.0.1", 1)),
        ("http", "127.0.0.1:65535", ("http", "127.0.0.1", 65535)),
        ("https", "[::1]:9", ("https", "[::1]", 9)),
        ("https", "my_zone.internal", ("https", "my_zone.internal", 443)),
        # nothing git could mean by a Coactive origin
        ("ssh", "api.coactive.ai", None),
        ("ftp", "api.coactive.ai", None),
        ("", "api.coactive.ai", None),
        ("https", "", None),
        ("https", "api.coactive.ai:0", None),
        ("https", "api.coactive.ai:65536", None),
        ("https", "api.coactive.ai:99999", None),
        ("https", "api.coactive.ai:", None),
        ("https", "api.coactive.ai:+443", None),
        ("https", "user@api.coactive.ai", None),
        ("https", "api.coactive.ai/path", None),
        ("https", "api.coactive.ai?x", None),
        ("https", "api.coactive.ai#x", None),
        ("https", "api.coactive.ai ", None),
        ("https", "api.coactive.ai\n", None),
        ("https", "api.coactive.ai:443:443", None),
    ],
)
def test_git_origin(protocol: str, host: str, origin: tuple[str, str, int] | None) -> None:
    assert gitcred.git_origin(protocol, host) == origin


@pytest.mark.parametrize(
    ("base_url", "origin"),
    [
        ("https://api.coactive.ai", ("https", "api.coactive.ai", 443)),
        ("https://api.coactive.ai/", ("https", "api.coactive.ai", 443)),
        ("https://API.coactive.ai:443/v0", ("https", "api.coactive.ai", 443)),
        ("http://127.0.0.1:8080", ("http", "127.0.0.1", 8080)),
        ("https://u:p@api.coactive.ai", None),
        ("https://[::1", None),  # urlsplit refuses it
        ("file:///etc/passwd", None),
    ],
)
def test_base_url_origin(base_url: str, origin: tuple[str, str, int] | None) -> None:
    assert gitcred.base_url_origin(base_url) == origin


@pytest.mark.parametrize(
    ("matching", "username", "preferred", "answer"),
    [
        (["default", "ci"], "ci", None, "ci"),  # git's username names the profile
        (["default", "ci"], "ci", "default", "ci"),  # ...before COACTIVE_PROFILE
        (["default", "ci"], "someone", None, None),  # never under another identity's name
        (["default", "ci"], "someone", "ci", None),
        (["default", "ci"], None, "ci", "ci"),  # then COACTIVE_PROFILE
        (["default", "ci"], "", "ci", "ci"),  # an empty username is none
        (["default", "ci"], None, "other", "default"),  # then default
        (["default", "ci"], None, None, "default"),
        (["ci"], None, None, "ci"),  # then the only one
        (["ci"], None, "other", "ci"),
        (["ci", "prod"], None, None, None),  # several, none default: nothing
        ([], None, None, None),
        ([], None, "default", None),
    ],
)
def test_choose(
    matching: list[str], username: str | None, preferred: str | None, answer: str | None
) -> None:
    assert gitcred.choose(iter(matching), username, preferred) == answer


async def test_the_credential_route_answers_for_the_profiles_origin_only(inproc: InProc) -> None:
    base = inproc.fake.base_url  # http://127.0.0.1:PORT
    port = base.rsplit(":", 1)[1]
    relogin = await asyncio.to_thread(
        run_cli,
        "login",
        "--profile",
        "zeta",
        "--base-url",
        base,
        "--personal-token-stdin",
        "--no-verify",
        input=PERSONAL_TOKEN + "\n",
    )
    assert relogin.returncode == 0, relogin.stderr
    await inproc.settle()
    here = f"/v1/credential?protocol=http&host=127.0.0.1:{port}"
    for query, profile in [
        (here, "default"),
        (here.replace("http&", "HTTP&"), "default"),
        (here + "&username=zeta", "zeta"),
        (here + "&profile=zeta", "zeta"),
        (here + "&username=default&profile=zeta", "default"),
    ]:
        status, body = await inproc.get(query)
        assert status == 200, (query, body)
        tok = inproc.daemon.profiles[profile].rt.token
        assert tok is not None and body["access_token"] == tok.access_token, query
        assert body["profile"] == profile
        # the last moment the daemon serves it: expires_at - skew (30 s), whole seconds
        assert body["password_expiry_utc"] == int(tok.expires_at - 30)
    for query in [
        here + "&username=nobody",
        f"/v1/credential?protocol=https&host=127.0.0.1:{port}",
        f"/v1/credential?protocol=http&host=localhost:{port}",
        "/v1/credential?protocol=http&host=127.0.0.1",
        "/v1/credential?protocol=https&host=github.com",
    ]:
        status, body = await inproc.get(query)
        assert (status, body["error"]["code"]) == (404, "no_match"), query
        assert not any(t in str(body) for t in inproc.fake.issued)
    for query in ["/v1/credential?host=x", "/v1/credential?protocol=ssh&host=x"]:
        status, body = await inproc.get(query)
        assert (status, body["error"]["code"]) == (400, "bad_request"), query
