"""Profiles as the daemon loads them, beyond profile `default`'s personal token: client
credentials, a credential file, a profile with no credentials, a new client id for the same
secret, a rejection kept across a change of configuration, and the state of a refresh in
flight. In process (the ``inproc`` fixture), so mutation testing sees the loading code."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import socket
import ssl
from pathlib import Path
from typing import Any

import pytest
from coactive_credd.core import config
from coactive_credd.testing.fakeupstream import FakeCoactive, credential_id
from coactive_credd.vault import VaultData

from .conftest import (
    CLIENT_ID,
    CLIENT_SECRET,
    PERSONAL_TOKEN,
    InProc,
    login,
    on_disk,
    run_cli,
)


async def login_system(ip: InProc, client_id: str = CLIENT_ID) -> None:
    """`coactive-credd login --profile system` with client credentials (not verified: the
    daemon logs in itself); the CLI asks the running daemon to reload."""
    proc = await asyncio.to_thread(
        run_cli,
        "login",
        "--profile",
        "system",
        "--base-url",
        ip.fake.base_url,
        "--client-id",
        client_id,
        "--client-secret-stdin",
        "--no-verify",
        input=CLIENT_SECRET + "\n",
    )
    assert proc.returncode == 0, proc.stderr
    assert "the running daemon picked it up" in proc.stderr
    await ip.settle()


def add_profile(home: Path, pc: config.ProfileConfig) -> None:
    """Write one more profile into config.toml, as a user editing it would."""
    config.update(home / "config.toml", lambda c: config.with_profile(c, pc))


async def state(ip: InProc, name: str) -> dict[str, Any]:
    status, body = await ip.get("/v1/status")
    assert status == 200
    [p] = [p for p in body["profiles"] if p["name"] == name]
    return dict(p)


async def test_client_credentials_log_in_with_their_client_id(inproc: InProc) -> None:
    await login_system(inproc)
    status, body = await inproc.get("/v1/token?profile=system")
    assert status == 200 and body["profile"] == "system"
    assert inproc.fake.ledger[-1].access_token == body["access_token"]
    assert inproc.fake.ledger[-1].credential == credential_id(CLIENT_ID)


async def test_a_client_credentials_token_is_kept_in_the_vault(inproc: InProc) -> None:
    """Under the client id and secret that minted it (the fingerprint covers both), so a
    restarted daemon serves it with no login."""
    await login_system(inproc)
    status, body = await inproc.get("/v1/token?profile=system")
    assert status == 200
    await inproc.daemon.flush()
    kept = on_disk(inproc).profiles["system"]
    assert kept.client_id == CLIENT_ID
    assert kept.token is not None and kept.token.access_token == body["access_token"]


async def test_a_new_client_id_for_the_same_secret_is_new_credentials(
    inproc: InProc, caplog: pytest.LogCaptureFixture
) -> None:
    """The same client secret under another client id is another identity: the token of
    the old one is dropped and the daemon logs in with the new one (here rejected)."""
    await login_system(inproc)
    assert (await inproc.get("/v1/token?profile=system"))[0] == 200
    logins = inproc.fake.logins
    await login_system(inproc, client_id="client-4712")  # unknown to Coactive
    status, body = await inproc.get("/v1/token?profile=system")
    assert status == 424 and body["error"]["code"] == "reauth_required"
    assert "--client-id client-4712" in body["error"]["hint"]
    assert inproc.fake.logins == logins  # the attempt was refused, no token issued
    assert (await state(inproc, "system"))["state"] == "reauth_required"
    [line] = [r.getMessage() for r in caplog.records if "rejected by Coactive" in r.getMessage()]
    assert line.startswith(
        "profile=system credentials rejected by Coactive: Coactive refused the login with "
        "HTTP 401: "
    )
    fix = (
        f"coactive-credd login --profile system --base-url {inproc.fake.base_url} "
        "--client-id client-4712 --client-secret-stdin"
    )
    assert line.endswith(f"; run `{fix}`")


async def test_a_profile_with_no_credentials_says_so(inproc: InProc, home: Path) -> None:
    """A profile added to config.toml by hand, with nothing in the vault: no login is tried,
    and a caller is told which command stores the credentials."""
    add_profile(home, config.ProfileConfig(name="bare", base_url=inproc.fake.base_url))
    inproc.daemon.reload()
    await inproc.settle()
    requests = len(inproc.fake.requests)
    status, body = await inproc.get("/v1/token?profile=bare")
    assert status == 424 and body["error"] == {
        "code": "reauth_required",
        "message": "profile 'bare' needs new credentials: no credentials stored",
        "hint": f"run `coactive-credd login --profile bare --base-url {inproc.fake.base_url}`",
    }
    assert len(inproc.fake.requests) == requests
    assert (await state(inproc, "bare"))["last_error"] == "no credentials stored"
    # a program reports a token as rejected for it: the same answer, no token to name
    report = {"rejected_token_sha256": "ab" * 32}
    status, body = await inproc.post("/v1/token/refresh?profile=bare", report)
    assert status == 424 and body["error"]["code"] == "reauth_required"
    assert len(inproc.fake.requests) == requests


async def test_a_credential_file_that_cannot_be_read_is_the_profiles_error(
    inproc: InProc, home: Path
) -> None:
    missing = home / "no-such-secret"
    add_profile(
        home,
        config.ProfileConfig(
            name="filed", base_url=inproc.fake.base_url, credential_file=str(missing)
        ),
    )
    inproc.daemon.reload()
    await inproc.settle()
    st = await state(inproc, "filed")
    assert st["state"] == "reauth_required"
    assert st["last_error"] == (
        f"credential_file {missing} does not exist; mount the Secret there or fix the path "
        "in config.toml"
    )


async def test_stored_credentials_that_no_longer_fit_the_profile_are_malformed(
    inproc: InProc, home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """config.toml edited by hand to make profile `default` (a personal token in the vault)
    client credentials, with no client id: the token it had is dropped (other credentials),
    no login is tried, and one log line gives the command that fixes it."""
    pc = inproc.daemon.profiles["default"].cfg
    requests = len(inproc.fake.requests)
    caplog.clear()
    add_profile(home, dataclasses.replace(pc, auth="client_credentials"))
    inproc.daemon.reload()
    await inproc.settle()
    status, body = await inproc.get("/v1/token?min_ttl=3590")  # the token will not do
    assert status == 424
    problem = "the stored credentials are malformed (client credentials need a client_id)"
    assert problem in body["error"]["message"]
    assert len(inproc.fake.requests) == requests
    lines = [r.getMessage() for r in caplog.records if "malformed" in r.getMessage()]
    fix = (
        f"coactive-credd login --profile default --base-url {inproc.fake.base_url} "
        "--client-id ID --client-secret-stdin"
    )
    assert lines == [f"profile=default {problem}; run `{fix}`"]


async def test_a_profile_with_nothing_due_does_not_hold_up_the_others(inproc: InProc) -> None:
    """The scheduler looks at every profile: `default`, waiting for new credentials (nothing
    due), does not keep `system`, after it, from being refreshed ahead of its expiry."""
    await login_system(inproc)
    assert list(inproc.daemon.profiles) == ["default", "system"]
    assert (await inproc.get("/v1/token?profile=system"))[0] == 200
    inproc.fake.fault = "401"
    assert (await inproc.post("/v1/token/refresh"))[0] == 424  # default: rejected
    inproc.fake.fault = None
    logins = inproc.fake.logins
    inproc.clock.jump(2700)  # past system's refresh ahead (2610 s), before its expiry
    await inproc.settle()
    assert inproc.fake.logins == logins + 1  # system's; default waits for `login`
    assert inproc.fake.ledger[-1].credential == credential_id(CLIENT_ID)
    assert (await state(inproc, "default"))["state"] == "reauth_required"


async def test_a_client_secret_the_vault_holds_malformed_names_its_client_id_in_the_fix(
    inproc: InProc, caplog: pytest.LogCaptureFixture
) -> None:
    """Client credentials whose secret in the vault is not one Coactive could take (a control
    character, as a vault written by hand or by another tool may hold): no login; the log line
    and the answer give the login command with the profile's own client id."""
    await login_system(inproc)

    def spoil(data: VaultData) -> None:
        data.profiles["system"].secret = "s3cret\x01"
        data.profiles["system"].token = None

    await asyncio.to_thread(inproc.daemon.vault.update, spoil)
    requests = len(inproc.fake.requests)
    caplog.clear()
    inproc.daemon.reload()
    await inproc.settle()
    # The token served so far stays served (a rotation never takes a valid token away); a
    # refresh asked for says why there is no new one.
    assert (await inproc.get("/v1/token?profile=system"))[0] == 200
    status, body = await inproc.post("/v1/token/refresh?profile=system")
    fix = (
        f"coactive-credd login --profile system --base-url {inproc.fake.base_url} "
        f"--client-id {CLIENT_ID} --client-secret-stdin"
    )
    assert status == 424 and body["error"]["hint"] == f"run `{fix}`"
    problem = "the stored credentials are malformed (the credential's secret contains control"
    assert (
        body["error"]["message"] == f"profile 'system' needs new credentials: {problem} characters)"
    )
    assert len(inproc.fake.requests) == requests
    lines = {r.getMessage() for r in caplog.records if "malformed" in r.getMessage()}
    assert lines == {f"profile=system {problem} characters); run `{fix}`"}


async def test_a_rejection_outlives_a_change_of_configuration(inproc: InProc, home: Path) -> None:
    """Coactive rejected the credentials; the user then changes something else about the
    profile (its CA bundle): the rejection stands, with no login, until new credentials."""
    inproc.fake.fault = "401"
    assert (await inproc.post("/v1/token/refresh"))[0] == 424
    inproc.fake.fault = None
    requests = len(inproc.fake.requests)
    bundle = home / "ca.pem"
    bundle.write_text("")
    pc = inproc.daemon.profiles["default"].cfg
    add_profile(home, dataclasses.replace(pc, ca_bundle=str(bundle)))
    inproc.daemon.reload()
    await inproc.settle()
    rt = inproc.daemon.profiles["default"].rt
    assert rt.reauth and "401" in (rt.last_error or "")
    assert rt.token is not None  # still valid: a change of configuration does not take it away
    rejected = hashlib.sha256(rt.token.access_token.encode()).hexdigest()
    report = {"rejected_token_sha256": rejected}
    assert (await inproc.post("/v1/token/refresh", report))[0] == 424
    assert len(inproc.fake.requests) == requests


async def test_a_refresh_in_flight_is_the_profiles_state(inproc: InProc) -> None:
    inproc.fake.delay = 0.5
    refresh = asyncio.ensure_future(inproc.post("/v1/token/refresh"))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while not inproc.daemon.profiles["default"].inflight:
        assert loop.time() < deadline, "the refresh never started"
        await asyncio.sleep(0.01)
    assert (await state(inproc, "default"))["state"] == "refreshing"
    assert inproc.daemon.profiles["default"].rt.next_due() is None  # nothing more is planned
    assert (await refresh)[0] == 200
    assert (await state(inproc, "default"))["state"] == "valid"


async def test_a_reload_makes_no_login_for_a_token_too_short_lived_to_refresh_ahead(
    inproc: InProc,
) -> None:
    """Such a token is replaced when a caller needs one, not at every reload."""
    inproc.fake.expires_in = 1
    assert (await inproc.post("/v1/token/refresh"))[0] == 200
    assert inproc.daemon.profiles["default"].rt.refresh_at is None
    logins = inproc.fake.logins
    inproc.daemon.reload()
    await inproc.settle()
    assert inproc.fake.logins == logins


async def test_a_profile_with_a_base_url_that_is_no_url_fails_the_reload(
    inproc: InProc, home: Path
) -> None:
    add_profile(home, config.ProfileConfig(name="odd", base_url="ftp://example.com"))
    inproc.daemon.reload()
    error = inproc.daemon.last_reload_error
    assert error is not None and error.startswith(f"{home / 'config.toml'} [profiles.odd]: ")
    assert "odd" not in inproc.daemon.profiles  # the previous state is kept
    assert (await inproc.get("/v1/token"))[0] == 200


async def test_a_profiles_ca_bundle_is_what_its_login_trusts(
    inproc: InProc, home: Path, tls_files: tuple[Path, Path]
) -> None:
    """A Coactive behind a certificate only the profile's ``ca_bundle`` vouches for (a
    TLS-inspecting proxy's, say): the daemon logs in through it; without it, it does not."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*tls_files)
    tls = FakeCoactive(expires_in=3600, ssl_context=context)
    tls.add_personal_token(PERSONAL_TOKEN)
    await tls.start()
    try:
        assert tls.base_url.startswith("https://127.0.0.1:")
        await asyncio.to_thread(
            login, tls, "inspected", "--ca-bundle", str(tls_files[0]), "--no-verify"
        )
        await inproc.settle()
        status, body = await inproc.get("/v1/token?profile=inspected")
        assert status == 200 and body["access_token"] == tls.issued[-1]
        pc = inproc.daemon.profiles["inspected"].cfg
        add_profile(home, dataclasses.replace(pc, ca_bundle=None))  # the system's CAs only
        inproc.daemon.reload()
        await inproc.settle()
        # the token it has stays served (a change of settings does not take it away); a
        # refresh asked for is a login through the new settings
        assert (await inproc.get("/v1/token?profile=inspected"))[0] == 200
        status, body = await inproc.post("/v1/token/refresh?profile=inspected")
        assert status == 503 and "certificate" in body["error"]["message"]
        assert tls.logins == 1
    finally:
        await tls.stop()


async def test_a_profiles_proxy_is_not_used_for_a_plain_text_base_url(
    inproc: InProc, home: Path
) -> None:
    """An http:// base URL (loopback only) always goes direct, even with the profile's proxy
    key set (SPEC: a credential never crosses a network in clear). That an https profile's
    proxy is the only way its logins go is tests/test_proxy.py's
    test_a_refusing_proxy_is_a_transient_error_and_the_token_stays_served."""
    with socket.socket() as s:  # a port nothing listens on, for the proxy that is down
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pc = inproc.daemon.profiles["default"].cfg
    add_profile(home, dataclasses.replace(pc, proxy=f"http://127.0.0.1:{port}"))
    inproc.daemon.reload()
    await inproc.settle()
    status, body = await inproc.post("/v1/token/refresh")  # a login: direct, not refused
    assert status == 200 and body["access_token"] == inproc.fake.issued[-1], body
    _, st = await inproc.get("/v1/status")
    assert st["profiles"][0]["proxy_route"] == "direct (an http:// base URL always goes direct)"
