"""Coactive's error text never reaches the user when it echoes the credential in any form.

A real aiohttp server stands in for a Coactive (or a gateway in front of it) that echoes the
request's credential back in its error answer: exactly, upper-cased, percent-encoded, split
by spaces, cut to a prefix, base64-encoded. The text must not reach ``login``'s stderr,
``status``'s ``last_error`` or the daemon's log in any of those forms; a clean message still
does, bounded and on one line.
"""

from __future__ import annotations

import base64
import re
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from aiohttp import web
from coactive_credd.upstream import redact
from coactive_credd.upstream.exchange import Credential, CredentialsRejected, Upstream

from .conftest import CLIENT_ID, CLIENT_SECRET, PERSONAL_TOKEN, run_cli, start_daemon


def _spaced(s: str) -> str:
    return " ".join(s[i : i + 4] for i in range(0, len(s), 4))


FORMS: dict[str, Callable[[str], str]] = {
    "exact": lambda s: s,
    "upper": str.upper,
    "percent": lambda s: urllib.parse.quote(s, safe=""),
    "percent-every-byte": lambda s: "".join(f"%{b:02X}" for b in s.encode()),
    "spaced": _spaced,
    "prefix": lambda s: s[:10],
    "middle": lambda s: s[5:15],
    "base64": lambda s: base64.b64encode(s.encode()).decode(),
    "base64url": lambda s: base64.urlsafe_b64encode(s.encode()).decode().rstrip("="),
    "hex": lambda s: s.encode().hex(),
}


def _secret_of(request: web.Request) -> str:
    kind, _, value = request.headers["Authorization"].partition(" ")
    if kind == "Basic":
        return base64.b64decode(value).decode().split(":", 1)[1]
    return value


class EchoServer:
    """Answers 401 with ``{"detail": "... <the credential in FORM> ..."}`` at /FORM/api/v0/login."""

    def __init__(self) -> None:
        self.base_url = ""
        self._ready = threading.Event()
        self._stop: object = None

    async def _login(self, request: web.Request) -> web.Response:
        form = request.match_info["form"]
        secret = _secret_of(request)
        if form == "clean":
            text = "Invalid or revoked credentials; create a new token in Settings"
        else:
            text = f"credential {FORMS[form](secret)} is not valid"
        return web.json_response({"detail": text}, status=401)

    def __enter__(self) -> EchoServer:
        import asyncio

        loop = asyncio.new_event_loop()
        self._loop = loop

        async def start() -> web.AppRunner:
            app = web.Application()
            app.router.add_post("/{form}/api/v0/login", self._login)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            host, port = runner.addresses[0][:2]
            self.base_url = f"http://{host}:{port}"
            return runner

        def run() -> None:
            asyncio.set_event_loop(loop)
            self._runner = loop.run_until_complete(start())
            self._ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture(scope="module")
def echo() -> Iterator[EchoServer]:
    with EchoServer() as server:
        yield server


def assert_nothing_of(text: str, secret: str) -> None:
    """Independent of redact.py: no 8-character run of the secret in the text in any of the
    forms above, compared without case and whitespace."""
    flat = re.sub(r"\s+", "", text).casefold()
    for form in FORMS.values():
        shown = re.sub(r"\s+", "", form(secret)).casefold()
        for i in range(len(shown) - 7):
            assert shown[i : i + 8] not in flat, f"{shown[i : i + 8]!r} leaked"


@pytest.mark.parametrize("form", sorted(FORMS))
@pytest.mark.parametrize(
    "cred",
    [
        Credential(auth="personal_token", secret=PERSONAL_TOKEN),
        Credential(auth="client_credentials", secret=CLIENT_SECRET, client_id=CLIENT_ID),
    ],
    ids=["personal", "client"],
)
async def test_an_echo_in_any_form_is_withheld(
    echo: EchoServer, form: str, cred: Credential
) -> None:
    up = Upstream()
    try:
        with pytest.raises(CredentialsRejected) as info:
            await up.login(f"{echo.base_url}/{form}", cred)
    finally:
        await up.close()
    assert info.value.detail == f"Coactive refused the login with HTTP 401: {redact.WITHHELD}"
    assert_nothing_of(str(info.value), cred.secret)


async def test_a_clean_message_is_still_shown(echo: EchoServer) -> None:
    up = Upstream()
    try:
        with pytest.raises(CredentialsRejected, match="create a new token in Settings"):
            await up.login(f"{echo.base_url}/clean", Credential("personal_token", PERSONAL_TOKEN))
    finally:
        await up.close()


def test_short_and_unrelated_text_is_not_mistaken_for_a_secret() -> None:
    assert not redact.carries_secret("token expired", PERSONAL_TOKEN)
    assert not redact.carries_secret("Y3B0X1Bl", PERSONAL_TOKEN)  # base64 of 6 chars only
    assert (
        redact.server_text("a\nb\tc" + "x" * 300, (PERSONAL_TOKEN,), 20) == "a b c" + "x" * 14 + "…"
    )


@pytest.mark.parametrize("form", ["upper", "percent", "spaced", "prefix", "base64"])
def test_login_stderr_never_shows_an_echo(home: Path, echo: EchoServer, form: str) -> None:
    proc = run_cli(
        "login",
        "--base-url",
        f"{echo.base_url}/{form}",
        "--personal-token-stdin",
        input=PERSONAL_TOKEN + "\n",
    )
    assert proc.returncode == 5, proc.stderr
    assert redact.WITHHELD in proc.stderr
    assert_nothing_of(proc.stdout + proc.stderr, PERSONAL_TOKEN)


def test_status_and_log_never_show_an_echo(home: Path, echo: EchoServer) -> None:
    for name, form in [("a", "upper"), ("b", "spaced"), ("c", "base64"), ("d", "percent")]:
        proc = run_cli(
            "login",
            "--profile",
            name,
            "--base-url",
            f"{echo.base_url}/{form}",
            "--no-verify",
            "--personal-token-stdin",
            input=PERSONAL_TOKEN + "\n",
        )
        assert proc.returncode == 0, proc.stderr
    daemon = start_daemon(home)
    try:
        status_proc = None
        for _ in range(100):
            status_proc = run_cli("status", "--json")
            if status_proc.stdout.count(redact.WITHHELD) >= 4:
                break
            import time

            time.sleep(0.1)
        assert status_proc is not None
        assert status_proc.stdout.count(redact.WITHHELD) >= 4, status_proc.stdout
        assert_nothing_of(status_proc.stdout, PERSONAL_TOKEN)
    finally:
        daemon.stop()
    assert_nothing_of(daemon.log_text(), PERSONAL_TOKEN)
