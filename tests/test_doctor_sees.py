"""doctor sees what serve sees: a vault serve cannot open is a problem in doctor too."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from coactive_credd.testing.fakeupstream import FakeCoactive

from .conftest import PERSONAL_TOKEN, login, run_cli


def test_doctor_reports_a_vault_serve_cannot_decrypt(home: Path, fake: FakeCoactive) -> None:
    login(fake)
    key = home / "vault.key"
    key.write_bytes(os.urandom(len(key.read_bytes())))  # another key: nothing decrypts
    serve = run_cli("serve", timeout=30)
    assert serve.returncode == 1 and serve.stderr.strip(), serve
    out = run_cli("doctor", "--json")
    assert out.returncode == 1, out.stdout
    found = json.loads(out.stdout)["findings"]
    problems = [f for f in found if f["status"] == "problem"]
    assert any(f["check"] == "vault" for f in problems), found
    fix = next(f["fix"] for f in problems if f["check"] == "vault")
    assert "serve" not in fix and fix, fix
    plain = run_cli("doctor")
    assert "no problems found" not in plain.stdout


def test_a_full_disk_names_the_path_and_the_fix(home: Path, fake: FakeCoactive) -> None:
    import subprocess

    # A real full file system: a 64 KiB tmpfs as the home (root mounts it; CI runs as root).
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(home)],
                             capture_output=True, text=True)  # fmt: skip
    assert mounted.returncode == 0, f"mounting a tmpfs needs root: {mounted.stderr}"
    try:
        login(fake)
        fd = os.open(home / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while os.write(fd, b"\0" * 4096):
                pass
        except OSError:
            pass
        finally:
            os.close(fd)
        out = run_cli(
            "login", "--profile", "second", "--base-url", fake.base_url,
            "--personal-token-stdin", input=PERSONAL_TOKEN + "\n", env={"COACTIVE_CREDD_DEBUG": ""},
        )  # fmt: skip
        assert out.returncode == 1, out
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1, out.stderr
        assert str(home) in lines[0] and f"df -h {home}" in lines[0], lines[0]
        assert "owner and mode" not in lines[0]
        helptext = run_cli("login", "--help").stdout
        assert "1 a file could not be written" in helptext
    finally:
        subprocess.run(["umount", "-l", str(home)], check=False)


def test_a_successful_login_clears_the_old_error(home: Path, fake: FakeCoactive) -> None:
    from .conftest import start_daemon

    login(fake)
    d = start_daemon(home)
    try:
        fake.revoke(PERSONAL_TOKEN)
        assert run_cli("refresh").returncode == 5
        assert "last error" in run_cli("status").stdout
        fake.add_personal_token(PERSONAL_TOKEN)  # the user fixed it at Coactive's end
        login(fake)  # verified, and the running daemon picks it up
        status = run_cli("status")
        assert status.returncode == 0, status.stdout
        # the log's file name is a random number, which may hold "401"
        shown = "\n".join(
            x for x in status.stdout.splitlines() if not x.lstrip().startswith("log:")
        )
        assert "last error" not in shown and "401" not in shown, status.stdout
    finally:
        d.stop()


def test_a_read_only_home_is_named_by_serve_and_doctor_alike(
    home: Path, fake: FakeCoactive
) -> None:
    import subprocess

    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(home)],
                             capture_output=True, text=True)  # fmt: skip
    assert mounted.returncode == 0, f"mounting a tmpfs needs root: {mounted.stderr}"
    try:
        login(fake)
        assert subprocess.run(["mount", "-o", "remount,ro", str(home)]).returncode == 0
        serve = run_cli("serve", timeout=30)
        assert serve.returncode == 1
        line = serve.stderr.strip()
        assert "\n" not in line and "read-only file system" in line, line
        assert "owner and mode" not in line and "COACTIVE_CREDD_HOME" in line, line
        assert not (home / "credd.sock").exists()
        doctor = run_cli("doctor", "--json")
        assert doctor.returncode == 1
        problems = [f for f in json.loads(doctor.stdout)["findings"] if f["status"] == "problem"]
        assert any("read-only file system" in f["message"] for f in problems), problems
        assert not any("aside" in f["fix"] or "coactive-credd stop" in f["fix"] for f in problems)
        stop = run_cli("stop")
        assert stop.returncode == 0 and "nothing to stop" in stop.stderr + stop.stdout
    finally:
        subprocess.run(["umount", "-l", str(home)], check=False)


def test_a_socket_nobody_listens_on_gets_the_same_story_from_doctor_and_stop(
    home: Path, fake: FakeCoactive
) -> None:
    import socket

    login(fake)
    left = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    left.bind(str(home / "credd.sock"))  # bound, never listening: what a failed start leaves
    left.close()
    doctor = run_cli("doctor", "--json")
    found = [f for f in json.loads(doctor.stdout)["findings"] if f["check"] == "daemon"]
    assert "nobody listens on" in found[0]["message"], found
    assert found[0]["fix"] == "coactive-credd serve", found
    stop = run_cli("stop")
    assert stop.returncode == 0 and "nothing to stop" in stop.stderr + stop.stdout


def test_a_start_stopped_by_a_read_only_home_leaves_no_socket(
    home: Path, fake: FakeCoactive, tmp_path: Path
) -> None:
    """The socket lives outside the home (COACTIVE_CREDD_SOCKET, or the runtime folder) and the
    home is read-only: serve gives up at the vault's lock and takes its socket with it, so
    clients, doctor and stop all see no daemon (before: a socket file nobody answered on)."""
    import subprocess

    sock_dir = Path(tempfile.mkdtemp(prefix="ccs-", dir="/tmp"))
    sock_dir.chmod(0o700)
    sock = sock_dir / "credd.sock"
    login(fake)
    assert subprocess.run(["mount", "--bind", str(home), str(home)]).returncode == 0
    try:
        assert subprocess.run(["mount", "-o", "remount,bind,ro", str(home)]).returncode == 0
        serve = run_cli("serve", env={"COACTIVE_CREDD_SOCKET": str(sock)}, timeout=30)
        assert serve.returncode == 1 and "read-only file system" in serve.stderr, serve.stderr
        assert not sock.exists(), "serve left its socket behind"
    finally:
        subprocess.run(["umount", "-l", str(home)], check=False)
        shutil.rmtree(sock_dir, ignore_errors=True)
