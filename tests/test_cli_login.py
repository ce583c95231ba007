"""``login`` and ``logout`` as people and scripts run them: re-login keeps the profile where
it is, the hint after rejected credentials works verbatim, passphrase vaults from scripts,
and the interactive order of prompts on a real pseudo-terminal."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from coactive_credd.core import config
from coactive_credd.testing.fakeupstream import FakeCoactive

from .conftest import (
    CLIENT_ID,
    CLIENT_SECRET,
    PERSONAL_TOKEN,
    leaked,
    login,
    run_cli,
    start_daemon,
)

PASSPHRASE = "correct horse battery staple"


def run_detached(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    """``coactive-credd ARGS`` in its own session: no controlling terminal, like cron or CI."""
    proc = subprocess.run(
        [sys.executable, "-m", "coactive_credd", *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=60,
        start_new_session=True,
    )
    assert not leaked(proc.stdout + proc.stderr)
    assert PASSPHRASE not in proc.stdout + proc.stderr
    return proc


def test_relogin_keeps_base_url_ca_bundle_and_client_id(home: Path, fake: FakeCoactive) -> None:
    pem = home / "corp.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")
    first = run_cli(
        "login",
        "--profile",
        "prod",
        "--base-url",
        fake.base_url,
        "--client-id",
        CLIENT_ID,
        "--client-secret-stdin",
        "--ca-bundle",
        str(pem),
        "--no-verify",
        input=CLIENT_SECRET + "\n",
    )
    assert first.returncode == 0, first.stderr
    # Again with only the profile and the secret: nothing about where it points may change.
    again = run_cli(
        "login",
        "--profile",
        "prod",
        "--client-secret-stdin",
        "--no-verify",
        input=CLIENT_SECRET + "\n",
    )
    assert again.returncode == 0, again.stderr
    assert f"client id {CLIENT_ID}" in again.stderr
    prod = config.load(home / "config.toml").profiles["prod"]
    assert prod.base_url == fake.base_url
    assert prod.ca_bundle == str(pem)
    assert prod.auth == "client_credentials"
    # A personal-token profile re-logged in without --base-url verifies against its own URL.
    login(fake, "pt")
    relogin = run_cli(
        "login", "--profile", "pt", "--personal-token-stdin", input=PERSONAL_TOKEN + "\n"
    )
    assert relogin.returncode == 0, relogin.stderr
    assert "verified" in relogin.stderr
    assert config.load(home / "config.toml").profiles["pt"].base_url == fake.base_url


def test_the_rejected_credentials_hint_runs_verbatim(home: Path, fake: FakeCoactive) -> None:
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
    d = start_daemon(home)
    try:
        fake.revoke(CLIENT_SECRET)
        out = run_cli("refresh", "--profile", "prod")
        assert out.returncode == 5
        hint = out.stderr.split("`")[1]
        assert (
            hint == f"coactive-credd login --profile prod --base-url {fake.base_url} "
            f"--client-id {CLIENT_ID} --client-secret-stdin"
        )
        assert " ID " not in out.stderr
        fake.add_client(CLIENT_ID, CLIENT_SECRET)
        argv = shlex.split(hint)
        fixed = run_cli(*argv[1:], input=CLIENT_SECRET + "\n")
        assert fixed.returncode == 0, fixed.stderr
        assert config.load(home / "config.toml").profiles["prod"].base_url == fake.base_url
        assert run_cli("token", "--profile", "prod").returncode == 0
        assert "--client-id client-4711" in d.log_text()
    finally:
        d.stop()


def test_passphrase_vault_login_and_logout_from_a_script(home: Path, fake: FakeCoactive) -> None:
    login(fake)
    assert run_cli("rekey", "--passphrase-stdin", input=PASSPHRASE + "\n").returncode == 0
    d = start_daemon(home, fresh=True)  # its environment, as the kernel shows it, is checked
    try:
        assert run_detached("unlock", "--passphrase-stdin", input=PASSPHRASE + "\n").returncode == 0
        before = fake.logins
        out = run_detached(
            "login",
            "--profile",
            "ci",
            "--base-url",
            fake.base_url,
            "--personal-token-stdin",
            input=PERSONAL_TOKEN + "\n",
        )
        assert out.returncode == 0, out.stderr
        assert "running daemon picked it up" in out.stderr
        assert fake.logins == before + 1  # the verify exchange; the daemon reuses its token
        token = run_detached("token", "--profile", "ci")
        assert token.returncode == 0 and token.stdout.strip() == fake.issued[-1]
        assert fake.logins == before + 1
        # The file stays a passphrase vault, with the new profile in it.
        st = json.loads(run_cli("status", "--json").stdout)
        assert st["key_source"] == "passphrase"
        assert {p["name"] for p in st["profiles"]} == {"default", "ci"}
        assert PASSPHRASE.encode() not in Path(f"/proc/{d.proc.pid}/environ").read_bytes()
        gone = run_detached("logout", "--profile", "ci")
        assert gone.returncode == 0, gone.stderr
        assert run_detached("token", "--profile", "ci").returncode == 4
        # Locked again: refused with the command that fixes it, vault untouched.
        assert run_cli("lock").returncode == 0
        saved = (home / "vault.bin").read_bytes()
        locked = run_detached(
            "login", "--profile", "ci", "--personal-token-stdin", input=PERSONAL_TOKEN + "\n"
        )
        assert locked.returncode == 7 and "coactive-credd unlock" in locked.stderr
        assert (home / "vault.bin").read_bytes() == saved
    finally:
        d.stop()
    assert PERSONAL_TOKEN not in d.log_text()


def test_logout_all_removes_every_profile(home: Path, fake: FakeCoactive) -> None:
    login(fake, "one")
    login(fake, "two")
    out = run_cli("logout", "--all")
    assert out.returncode == 0, out.stderr
    assert "'one'" in out.stderr and "'two'" in out.stderr
    assert config.load(home / "config.toml").profiles == {}
    assert run_cli("logout", "--all").returncode == 0


def test_interactive_login_asks_the_passphrase_before_talking_to_coactive(
    home: Path, fake: FakeCoactive
) -> None:
    import pty
    import select

    login(fake)
    assert run_cli("rekey", "--passphrase-stdin", input=PASSPHRASE + "\n").returncode == 0
    logins = fake.logins
    pid, fd = pty.fork()
    if pid == 0:
        try:
            os.execvp(  # noqa: S606 - the command under test, on a pseudo-terminal
                sys.executable,
                [sys.executable, "-m", "coactive_credd", "login", "--profile", "default"],
            )
        finally:
            os._exit(127)
    seen = b""

    def read_until(marker: bytes, timeout: float = 30) -> None:
        nonlocal seen
        deadline = time.monotonic() + timeout
        while marker not in seen and time.monotonic() < deadline:
            if select.select([fd], [], [], 0.1)[0]:
                try:
                    seen += os.read(fd, 4096)
                except OSError:
                    break

    read_until(b"Vault passphrase: ")
    assert b"Vault passphrase: " in seen and b"Personal token" not in seen, seen
    assert fake.logins == logins  # nothing sent to Coactive yet
    os.write(fd, PASSPHRASE.encode() + b"\n")
    read_until(b"Personal token: ")
    os.write(fd, PERSONAL_TOKEN.encode() + b"\n")
    read_until(b"verified")
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0, seen
    assert b"verifying the credentials" in seen  # a terminal is told what it waits for
    assert PASSPHRASE.encode() not in seen and PERSONAL_TOKEN.encode() not in seen
    assert fake.logins == logins + 1
