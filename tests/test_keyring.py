"""The `secret-service` key source against a real gnome-keyring-daemon on a private D-Bus.

Each test gets its own session bus (``dbus-run-session``) with a login keyring unlocked by
``gnome-keyring-daemon --unlock``, in scratch HOME/XDG folders; the test locks the collection
over D-Bus and unlocks it in place with the login password, as a desktop's unlock prompt does
(docs: /work/shared/notes/headless-keyring.md). Nothing here is a mock.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from coactive_credd.testing.fakeupstream import FakeCoactive
from coactive_credd.vault import SOURCE_SECRET_SERVICE, Vault, key_id, parse

from .conftest import PERSONAL_TOKEN, leaked, login, run_cli, start_daemon

PASSWORD = "login-pw-for-tests"
COLLECTION = "/org/freedesktop/secrets/collection/login"

pytestmark = pytest.mark.skipif(
    not (shutil.which("gnome-keyring-daemon") and shutil.which("dbus-run-session")),
    reason="needs gnome-keyring and dbus (.ci/setup installs them)",
)


def _gdbus(env: dict[str, str], *args: str) -> str:
    return subprocess.run(
        ["gdbus", "call", "--session", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    ).stdout


class Bus:
    """A private session bus, optionally with a Secret Service (gnome-keyring) on it."""

    def __init__(self, root: Path, *, keyring: bool = True) -> None:
        self.root = root
        for d in ("home", "run"):
            (root / d).mkdir(mode=0o700)
        self.base_env = {
            **os.environ,
            "HOME": str(root / "home"),
            "XDG_RUNTIME_DIR": str(root / "run"),
            "XDG_DATA_HOME": str(root / "home/.local/share"),
        }
        self.base_env.pop("DISPLAY", None)
        self.base_env.pop("DBUS_SESSION_BUS_ADDRESS", None)
        cmd = ["dbus-run-session"]
        if not keyring:  # a bus that can activate nothing: no Secret Service can start
            conf = root / "bus.conf"
            conf.write_text(
                "<!DOCTYPE busconfig PUBLIC '-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN'"
                " 'http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd'>\n"
                "<busconfig><type>session</type><listen>unix:tmpdir=/tmp</listen>"
                "<auth>EXTERNAL</auth><policy context='default'><allow send_destination='*'"
                " eavesdrop='true'/><allow eavesdrop='true'/><allow own='*'/></policy>"
                "</busconfig>\n"
            )
            cmd += [f"--config-file={conf}"]
        self.proc = subprocess.Popen(
            [
                *cmd,
                "--",
                "sh",
                "-c",
                'echo $$ >"$0/child"; echo "$DBUS_SESSION_BUS_ADDRESS" >"$0/addr.tmp";'
                ' mv "$0/addr.tmp" "$0/addr"; exec sleep 600',
                str(root),
            ],
            env=self.base_env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not (root / "addr").exists():
            assert time.monotonic() < deadline, "dbus-run-session did not start"
            time.sleep(0.02)
        self.address = (root / "addr").read_text().strip()
        self.env = {**self.base_env, "DBUS_SESSION_BUS_ADDRESS": self.address}
        self.keyring_pid: int | None = None
        if keyring:
            subprocess.run(
                ["gnome-keyring-daemon", "--unlock", "--components=secrets", "--daemonize"],
                input=PASSWORD,
                text=True,
                env=self.env,
                capture_output=True,
                timeout=10,
                check=True,
            )
            # The daemon forks and returns before it owns the name: wait, or the first client
            # call activates a second one that sleeps forever.
            while "true" not in self._has_owner():
                assert time.monotonic() < deadline, "gnome-keyring never owned its bus name"
                time.sleep(0.05)
            out = _gdbus(
                self.env,
                "--dest",
                "org.freedesktop.DBus",
                "--object-path",
                "/org/freedesktop/DBus",
                "--method",
                "org.freedesktop.DBus.GetConnectionUnixProcessID",
                "org.freedesktop.secrets",
            )
            self.keyring_pid = int(out.split()[1].rstrip(",)"))

    def _has_owner(self) -> str:
        return _gdbus(
            self.env,
            "--dest",
            "org.freedesktop.DBus",
            "--object-path",
            "/org/freedesktop/DBus",
            "--method",
            "org.freedesktop.DBus.NameHasOwner",
            "org.freedesktop.secrets",
        )

    def lock(self) -> None:
        """Lock the login collection, as a screen locker does."""
        _gdbus(
            self.env,
            "--dest",
            "org.freedesktop.secrets",
            "--object-path",
            "/org/freedesktop/secrets",
            "--method",
            "org.freedesktop.Secret.Service.Lock",
            f"['{COLLECTION}']",
        )
        assert self.locked()

    def locked(self) -> bool:
        out = _gdbus(
            self.env,
            "--dest",
            "org.freedesktop.secrets",
            "--object-path",
            COLLECTION,
            "--method",
            "org.freedesktop.DBus.Properties.Get",
            "org.freedesktop.Secret.Collection",
            "Locked",
        )
        return "true" in out

    def unlock(self) -> None:
        """Unlock the login collection in place with the login password (what a desktop's
        unlock prompt does), over gnome-keyring's own interface."""
        from jeepney import DBusAddress, new_method_call
        from jeepney.io.blocking import open_dbus_connection

        conn = open_dbus_connection(self.address)
        try:
            svc = DBusAddress(
                "/org/freedesktop/secrets",
                bus_name="org.freedesktop.secrets",
                interface="org.freedesktop.Secret.Service",
            )
            reply = conn.send_and_get_reply(
                new_method_call(svc, "OpenSession", "sv", ("plain", ("s", "")))
            )
            session = reply.body[1]
            gk = DBusAddress(
                "/org/freedesktop/secrets",
                bus_name="org.freedesktop.secrets",
                interface="org.gnome.keyring.InternalUnsupportedGuiltRiddenInterface",
            )
            conn.send_and_get_reply(
                new_method_call(
                    gk,
                    "UnlockWithMasterPassword",
                    "o(oayays)",
                    (COLLECTION, (session, b"", PASSWORD.encode(), "text/plain")),
                )
            )
        finally:
            conn.close()
        assert not self.locked()

    def items(self) -> list[str]:
        """Every coactive-credd item's key-id attribute (via secret-tool, a libsecret client)."""
        done = subprocess.run(
            ["secret-tool", "search", "--all", "application", "coactive-credd"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return [
            line.split("=", 1)[1].strip()
            for line in (done.stdout + done.stderr).splitlines()
            if line.startswith("attribute.key-id")
        ]

    def close(self) -> None:
        child = self.root / "child"
        if child.exists():
            os.kill(int(child.read_text()), signal.SIGTERM)
        if self.keyring_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.keyring_pid, signal.SIGTERM)
        self.proc.wait(10)


@pytest.fixture
def bus(monkeypatch: pytest.MonkeyPatch) -> Iterator[Bus]:
    root = Path(tempfile.mkdtemp(prefix="ccd-bus-", dir="/tmp"))
    b = Bus(root)
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", b.address)
    yield b
    b.close()
    shutil.rmtree(root, ignore_errors=True)


def header_source(home: Path) -> tuple[int, bytes]:
    header = parse((home / "vault.bin").read_bytes(), home / "vault.bin")[0]
    return header.source, header.params


def _token(*extra: str) -> subprocess.CompletedProcess[str]:
    return run_cli("token", *extra)


def _wait(pred: object, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError("timed out")


def test_rekey_to_the_secret_service_and_back(home: Path, fake: FakeCoactive, bus: Bus) -> None:
    login(fake)
    assert (home / "vault.key").exists()
    done = run_cli("rekey", "--secret-service")
    assert done.returncode == 0, done.stderr
    assert "Secret Service" in done.stderr
    source, kid = header_source(home)
    assert source == SOURCE_SECRET_SERVICE
    assert not (home / "vault.key").exists() and not (home / "vault.key.new").exists()
    assert bus.items() == [kid.hex()]
    # The key is there, as a libsecret client sees it, and it is the vault's.
    secret = subprocess.run(
        ["secret-tool", "lookup", "application", "coactive-credd", "key-id", kid.hex()],
        env=bus.env,
        capture_output=True,
        text=True,
        timeout=10,
    ).stdout.strip()
    assert key_id(bytes.fromhex(secret)) == kid
    vault = Vault(home / "vault.bin", home / "vault.key", home / "vault.lock")
    assert vault.load().profiles["default"].secret == PERSONAL_TOKEN
    assert vault.key_source == "secret-service"

    back = run_cli("rekey", "--key-file")
    assert back.returncode == 0, back.stderr
    source, _kid2 = header_source(home)
    assert source != SOURCE_SECRET_SERVICE and (home / "vault.key").exists()
    assert bus.items() == []  # the old item is removed from the keyring
    assert vault.load().profiles["default"].secret == PERSONAL_TOKEN


def test_a_restart_serves_without_a_new_login(home: Path, fake: FakeCoactive, bus: Bus) -> None:
    login(fake)
    assert run_cli("rekey", "--secret-service").returncode == 0
    d = start_daemon(home)
    try:
        first = _token()
        assert first.returncode == 0, first.stderr
        status = run_cli("status")
        assert "secret-service" in status.stdout + status.stderr
    finally:
        d.stop()
    logins = fake.logins
    d = start_daemon(home)
    try:
        again = _token()
        assert again.returncode == 0, again.stderr
        assert again.stdout == first.stdout  # the cached token, from the vault
        assert fake.logins == logins
    finally:
        d.stop()
    assert not leaked(d.log_text(), set(fake.issued))


def test_lock_and_unlock_of_the_collection_while_the_daemon_runs(
    home: Path, fake: FakeCoactive, bus: Bus
) -> None:
    login(fake)
    assert run_cli("rekey", "--secret-service").returncode == 0
    d = start_daemon(home)
    try:
        assert _token().returncode == 0
        bus.lock()
        _wait(lambda: d.get("/v1/status")[1]["locked"])
        locked = _token()
        assert locked.returncode == 7
        assert len(locked.stderr.strip().splitlines()) == 1
        assert "login keyring" in locked.stderr and "coactive-credd unlock" not in locked.stderr
        doctor = run_cli("doctor")
        assert "collection is locked" in doctor.stdout + doctor.stderr
        bus.unlock()  # no command to coactive-credd: it notices by itself
        _wait(lambda: _token().returncode == 0)
        assert not d.get("/v1/status")[1]["locked"]
    finally:
        d.stop()
    assert "vault locked (the Secret Service collection" in d.log_text()
    assert not leaked(d.log_text(), set(fake.issued))


def test_a_daemon_started_while_locked_serves_once_unlocked(
    home: Path, fake: FakeCoactive, bus: Bus
) -> None:
    login(fake)
    assert run_cli("rekey", "--secret-service").returncode == 0
    bus.lock()
    d = start_daemon(home)
    try:
        assert _token().returncode == 7
        bus.unlock()
        _wait(lambda: _token().returncode == 0)
    finally:
        d.stop()


def test_no_dbus_session_is_one_line_and_no_key_file(
    home: Path, fake: FakeCoactive, bus: Bus, monkeypatch: pytest.MonkeyPatch
) -> None:
    login(fake)
    before = (home / "vault.bin").read_bytes()
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS")
    done = run_cli("rekey", "--secret-service")
    assert done.returncode == 1
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "DBUS_SESSION_BUS_ADDRESS is unset" in done.stderr
    assert "Traceback" not in done.stderr
    assert (home / "vault.bin").read_bytes() == before  # unchanged, key file kept
    assert (home / "vault.key").exists()

    # A vault whose key is in the Secret Service, read with no session: never a key file.
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", bus.address)
    assert run_cli("rekey", "--secret-service").returncode == 0
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS")
    d = start_daemon(home, wait=False)
    assert d.proc.wait(15) == 1
    log = d.log_text()
    assert "no D-Bus session" in log and "Traceback" not in log
    assert not (home / "vault.key").exists()
    doctor = run_cli("doctor")
    assert "no D-Bus session" in doctor.stdout + doctor.stderr


def test_a_bus_with_no_secret_service(
    home: Path, fake: FakeCoactive, monkeypatch: pytest.MonkeyPatch
) -> None:
    login(fake)
    root = Path(tempfile.mkdtemp(prefix="ccd-bus-", dir="/tmp"))
    empty = Bus(root, keyring=False)
    try:
        monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", empty.address)
        done = run_cli("rekey", "--secret-service")
        assert done.returncode == 1
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert "org.freedesktop.secrets has no owner" in done.stderr
        assert "gnome-keyring-daemon --start" in done.stderr
        assert header_source(home)[0] != SOURCE_SECRET_SERVICE
        assert (home / "vault.key").exists()
    finally:
        empty.close()
        shutil.rmtree(root, ignore_errors=True)


def test_a_wrong_or_missing_item(home: Path, fake: FakeCoactive, bus: Bus) -> None:
    login(fake)
    assert run_cli("rekey", "--secret-service").returncode == 0
    _, kid = header_source(home)
    attrs = ["application", "coactive-credd", "key-id", kid.hex()]
    # Another key under the vault's item: refused, naming the item.
    subprocess.run(
        ["secret-tool", "store", "--label=x", *attrs],
        input="00" * 32,
        text=True,
        env=bus.env,
        check=True,
        timeout=10,
    )
    d = start_daemon(home, wait=False)
    assert d.proc.wait(15) == 1
    assert "does not hold this vault's key" in d.log_text()
    # No item at all.
    subprocess.run(["secret-tool", "clear", *attrs], env=bus.env, check=True, timeout=10)
    d = start_daemon(home, wait=False)
    assert d.proc.wait(15) == 1
    assert f"key-id={kid.hex()}), which is not there" in d.log_text()
    doctor = run_cli("doctor")
    assert doctor.returncode == 1
    assert "its item is not in the Secret Service" in doctor.stdout + doctor.stderr


def test_commands_on_a_locked_collection_say_what_to_unlock(
    home: Path, fake: FakeCoactive, bus: Bus
) -> None:
    login(fake)
    assert run_cli("rekey", "--secret-service").returncode == 0
    bus.lock()
    for args in (["rekey", "--key-file"], ["logout"]):
        done = run_cli(*args)
        assert done.returncode == 7, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert "locked Secret Service collection" in done.stderr
        assert "passphrase" not in done.stderr
    assert header_source(home)[0] == SOURCE_SECRET_SERVICE


@pytest.mark.heavy  # long: started first, so it does not end the run alone
def test_a_secret_service_that_hangs_is_one_line_not_a_hang(
    home: Path, fake: FakeCoactive, bus: Bus
) -> None:
    login(fake)
    assert run_cli("rekey", "--secret-service").returncode == 0
    assert bus.keyring_pid is not None
    os.kill(bus.keyring_pid, signal.SIGSTOP)  # the bus stays up; the service answers nothing
    try:
        started = time.monotonic()
        done = run_cli("rekey", "--key-file", timeout=60)
        assert time.monotonic() - started < 30
    finally:
        os.kill(bus.keyring_pid, signal.SIGCONT)
    assert done.returncode == 1
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "did not answer within 10 s" in done.stderr
    assert header_source(home)[0] == SOURCE_SECRET_SERVICE  # unchanged
