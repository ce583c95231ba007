"""Clients trust only their own user's daemon: real uids, a real impostor, every client.

The victim is a real second uid (root ``setpriv``s to it) with no ``XDG_RUNTIME_DIR``, so
its socket is the fallback ``/tmp/runtime-$UID/coactive-credd/credd.sock``. The attacker is a
third real uid that gets there first: it makes ``/tmp/runtime-$UID`` (0777) and listens on
the socket path with a listener that records every byte it receives and answers like a daemon
handing out its own token. Every client must exit 3 naming the folder, and the listener must
receive nothing at all. A second impostor sits in a folder that passes every file check (the
socket was moved in, as a rename race would): only asking the kernel who answers catches it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import PERSONAL_TOKEN

ROOT = Path(__file__).resolve().parent.parent
SHIM = ROOT / "client_shim"
IMPOSTOR_TOKEN = "impostor-token-0123456789"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 and not os.environ.get("CI"),
    reason="needs root to run clients as two other real uids (setpriv)",
)

LISTENER = r"""
import os, socket, sys
path, record = sys.argv[1], sys.argv[2]
body = b'{"profile": "default", "access_token": "%s", "token_type": "Bearer", "expires_at": "2099-01-01T00:00:00Z", "expires_in": 3600}' % sys.argv[3].encode()
srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
srv.bind(path)
os.chmod(path, 0o777)
srv.listen(64)
open(record, "wb").close()
print("ready", flush=True)
while True:
    conn, _ = srv.accept()
    conn.settimeout(2)
    got = b""
    try:
        while b"\r\n\r\n" not in got:
            chunk = conn.recv(65536)
            if not chunk:
                break
            got += chunk
        if b"Content-Length:" in got:
            conn.settimeout(0.3)
            try:
                got += conn.recv(65536)
            except OSError:
                pass
    except OSError:
        pass
    with open(record, "ab") as f:
        f.write(got)
    if got:
        plain = b"text/plain" in got
        answer = sys.argv[3].encode() if plain else body
        ctype = b"text/plain" if plain else b"application/json"
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % (ctype, len(answer)) + answer)
    conn.close()
"""


def _uid_pair() -> tuple[int, int]:
    base = 40000 + (os.getpid() % 5000) * 4
    return base, base + 1


def as_uid(uid: int) -> list[str]:
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]


_CAN_READ: dict[int, bool] = {}


def package_reader(uid: int) -> list[str]:
    """``as_uid``, plus CAP_DAC_READ_SEARCH when this interpreter's packages sit where other
    uids cannot read them (a pyenv under /root, say): it lets the CLI read its own code and
    changes no uid, owner or mode any check looks at."""
    if uid not in _CAN_READ:
        probe = subprocess.run(
            [*as_uid(uid), sys.executable, "-c", "import aiohttp, cryptography, platformdirs"],
            capture_output=True,
        )
        _CAN_READ[uid] = probe.returncode == 0
    caps = ["--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]
    return as_uid(uid) + ([] if _CAN_READ[uid] else caps)


@dataclass
class Victim:
    uid: int
    home: Path
    env: dict[str, str]

    @property
    def runtime_root(self) -> Path:
        return Path(f"/tmp/runtime-{self.uid}")

    @property
    def socket(self) -> Path:
        return self.runtime_root / "coactive-credd" / "credd.sock"

    def run(
        self,
        argv: list[str],
        stdin: str = "",
        env: dict[str, str] | None = None,
        *,
        packages: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        prefix = package_reader(self.uid) if packages else as_uid(self.uid)
        return subprocess.run(
            prefix + argv,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            env={**self.env, **(env or {})},
            cwd=self.home,
        )

    def cli(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return self.run([sys.executable, "-m", "coactive_credd", *args], stdin, packages=True)


@dataclass
class Listener:
    proc: subprocess.Popen[str]
    record: Path

    def received(self) -> bytes:
        return self.record.read_bytes()


@pytest.fixture
def victim() -> Iterator[Victim]:
    uid, _ = _uid_pair()
    home = Path(tempfile.mkdtemp(prefix="ccv-", dir="/tmp"))
    os.chown(home, uid, uid)
    home.chmod(0o700)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("COACTIVE_", "XDG_")) and k not in ("NOTIFY_SOCKET", "LISTEN_FDS")
    }
    env.update(HOME=str(home), COACTIVE_CREDD_AUTOSTART="0", GOCACHE=str(home / "gocache"))
    v = Victim(uid=uid, home=home, env=env)
    shutil.rmtree(v.runtime_root, ignore_errors=True)
    assert not Path(f"/run/user/{uid}").exists()
    yield v
    shutil.rmtree(v.runtime_root, ignore_errors=True)
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def attacker_home() -> Iterator[Path]:
    _, uid = _uid_pair()
    d = Path(tempfile.mkdtemp(prefix="cca-", dir="/tmp"))
    os.chown(d, uid, uid)
    d.chmod(0o755)  # the test (root) reads the record
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _listen(uid: int, socket_path: Path, record: Path) -> Listener:
    proc = subprocess.Popen(
        [
            *as_uid(uid),
            sys.executable,
            "-c",
            LISTENER,
            str(socket_path),
            str(record),
            IMPOSTOR_TOKEN,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    proc.stdout.close()
    return Listener(proc, record)


@pytest.fixture
def impostor(victim: Victim, attacker_home: Path) -> Iterator[Listener]:
    """The attacker got to /tmp/runtime-$VICTIM first (0777) and listens on the socket path."""
    _, uid = _uid_pair()
    made = subprocess.run(
        [
            *as_uid(uid),
            "sh",
            "-c",
            'umask 0 && mkdir -m 777 "$1" "$1/coactive-credd"',
            "-",
            str(victim.runtime_root),
        ],
        capture_output=True,
        text=True,
    )
    assert made.returncode == 0, made.stderr
    listener = _listen(uid, victim.socket, attacker_home / "record")
    yield listener
    listener.proc.kill()
    listener.proc.wait()


@pytest.fixture
def disguised(victim: Victim, attacker_home: Path) -> Iterator[Listener]:
    """An attacker's socket inside a folder that passes every check (the victim's own 0700
    folder): it was moved in, as a rename race between a client's check and its connect
    would do. Only the kernel's answer about the peer tells it apart."""
    _, uid = _uid_pair()
    listener = _listen(uid, attacker_home / "s", attacker_home / "record")
    folder = victim.socket.parent
    folder.mkdir(parents=True)
    for d in (victim.runtime_root, folder):
        os.chown(d, victim.uid, victim.uid)
        d.chmod(0o700)
    os.rename(attacker_home / "s", victim.socket)
    yield listener
    listener.proc.kill()
    listener.proc.wait()


def _python_shim(v: Victim) -> subprocess.CompletedProcess[str]:
    return v.run([sys.executable, str(SHIM / "python" / "coactive_token.py")])


def assert_refused(proc: subprocess.CompletedProcess[str], listener: Listener, where: str) -> None:
    assert listener.received() == b"", "the impostor received bytes"
    assert IMPOSTOR_TOKEN not in proc.stdout
    assert proc.returncode == 3, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert where in lines[0], lines[0]
    assert "Traceback" not in proc.stderr


# --- the CLI and the Python shim ------------------------------------------------------------


def test_cli_token_refuses_an_impostor_in_the_fallback_folder(
    victim: Victim, impostor: Listener
) -> None:
    proc = victim.cli("token")
    assert_refused(proc, impostor, str(victim.socket.parent))


def test_cli_unlock_never_sends_the_passphrase_to_an_impostor(
    victim: Victim, impostor: Listener
) -> None:
    proc = victim.cli("unlock", "--passphrase-stdin", stdin="pass\n")
    assert_refused(proc, impostor, str(victim.socket.parent))


def test_cli_rekey_never_sends_the_new_passphrase_to_an_impostor(
    victim: Victim, attacker_home: Path
) -> None:
    login = victim.cli(
        "login",
        "--base-url",
        "http://127.0.0.1:9",
        "--no-verify",
        "--personal-token-stdin",
        stdin=PERSONAL_TOKEN + "\n",
    )
    assert login.returncode == 0, login.stderr
    first = victim.cli("rekey", "--passphrase-stdin", stdin="old-pass\n")
    assert first.returncode == 0, first.stderr
    _, uid = _uid_pair()
    subprocess.run(
        [
            *as_uid(uid),
            "sh",
            "-c",
            'umask 0 && mkdir -m 777 "$1" "$1/coactive-credd"',
            "-",
            str(victim.runtime_root),
        ],
        check=True,
    )
    listener = _listen(uid, victim.socket, attacker_home / "record")
    try:
        proc = victim.cli("rekey", "--passphrase-stdin", stdin="old-pass\nnew-pass\n")
        assert_refused(proc, listener, str(victim.socket.parent))
    finally:
        listener.proc.kill()
        listener.proc.wait()


def test_python_shim_refuses_an_impostor_in_the_fallback_folder(
    victim: Victim, impostor: Listener
) -> None:
    assert_refused(_python_shim(victim), impostor, str(victim.socket.parent))


def test_python_clients_ask_the_kernel_who_answers(victim: Victim, disguised: Listener) -> None:
    _, attacker = _uid_pair()
    for proc in (victim.cli("token"), _python_shim(victim), victim.cli("status")):
        assert_refused(proc, disguised, f"runs as uid {attacker}")


def test_daemon_uid_makes_a_sidecar_trusted(victim: Victim, disguised: Listener) -> None:
    _, attacker = _uid_pair()
    proc = victim.run(
        [sys.executable, str(SHIM / "python" / "coactive_token.py")],
        env={"COACTIVE_CREDD_DAEMON_UID": str(attacker)},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == IMPOSTOR_TOKEN
    assert disguised.received().startswith(b"GET /v1/token")


def test_autostart_never_starts_a_daemon_in_a_foreign_runtime_folder(
    victim: Victim, attacker_home: Path
) -> None:
    _, uid = _uid_pair()
    subprocess.run(
        [*as_uid(uid), "sh", "-c", 'umask 0 && mkdir -m 777 "$1"', "-", str(victim.runtime_root)],
        check=True,
    )
    proc = victim.run(
        [sys.executable, str(SHIM / "python" / "coactive_token.py")],
        env={"COACTIVE_CREDD_AUTOSTART": "1"},
    )
    assert proc.returncode == 3, proc.stderr
    assert str(victim.runtime_root) in proc.stderr
    assert not victim.socket.parent.exists(), "a folder was made inside the attacker's"


def test_daemon_refuses_to_start_in_a_foreign_runtime_folder(
    victim: Victim, attacker_home: Path
) -> None:
    _, uid = _uid_pair()
    subprocess.run(
        [*as_uid(uid), "sh", "-c", 'umask 0 && mkdir -m 777 "$1"', "-", str(victim.runtime_root)],
        check=True,
    )
    proc = victim.cli("serve")
    assert proc.returncode == 1
    line = proc.stderr.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in line, line
    assert str(victim.runtime_root) in line and "rm -rf" in line, line
    assert not victim.socket.parent.exists()


def test_runtime_dir_of_another_user_after_su_is_one_line(
    victim: Victim, attacker_home: Path
) -> None:
    _, uid = _uid_pair()
    other_runtime = attacker_home / "run"
    subprocess.run([*as_uid(uid), "mkdir", "-m", "700", str(other_runtime)], check=True)
    for argv, packages in (
        ([sys.executable, "-m", "coactive_credd", "token"], True),
        ([sys.executable, "-m", "coactive_credd", "serve"], True),
        ([sys.executable, str(SHIM / "python" / "coactive_token.py")], False),
    ):
        proc = victim.run(argv, env={"XDG_RUNTIME_DIR": str(other_runtime)}, packages=packages)
        assert proc.returncode in (1, 3), (argv, proc.stderr)
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
        assert str(other_runtime) in proc.stderr and "XDG_RUNTIME_DIR" in proc.stderr


def test_real_daemon_and_client_of_the_same_uid_work_in_the_fallback(victim: Victim) -> None:
    """The checks do not get in the way: the victim's own daemon, started by its own client
    (autostart), creates /tmp/runtime-$UID 0700 like tmux and serves its client."""
    proc = victim.run(
        [sys.executable, "-m", "coactive_credd", "status", "--json"],
        env={"COACTIVE_CREDD_AUTOSTART": "1"},
        packages=True,
    )
    # status never starts a daemon; token does.
    assert proc.returncode == 3
    started = victim.run(
        [sys.executable, str(SHIM / "python" / "coactive_token.py")],
        env={"COACTIVE_CREDD_AUTOSTART": "1"},
        packages=True,  # the daemon it starts needs them
    )
    try:
        assert started.returncode == 4, started.stderr  # no profile yet: the daemon answered
        st = victim.runtime_root.stat()
        assert st.st_uid == victim.uid and st.st_mode & 0o777 == 0o700
        status = victim.cli("status", "--json")
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["profiles"] == []
    finally:
        pid = victim.cli("status", "--json")
        if pid.returncode == 0:
            os.kill(int(json.loads(pid.stdout)["pid"]), 15)
            time.sleep(0.2)


# --- the other shims: sh under dash, the git helper, Node, Go --------------------------------


@pytest.fixture(scope="session")
def go_cli_shared() -> Iterator[Path]:
    """The Go CLI, built where the other uids can run it."""
    out = Path(tempfile.mkdtemp(prefix="ccgo-", dir="/tmp"))
    out.chmod(0o755)
    subprocess.run(
        ["go", "build", "-o", str(out / "coactive-token"), "./cmd/coactive-token"],
        cwd=SHIM / "go",
        check=True,
        timeout=170,
        env={**os.environ, "CGO_ENABLED": "0"},
    )
    yield out / "coactive-token"
    shutil.rmtree(out, ignore_errors=True)


def _shim(name: str, go: Path) -> list[str]:
    return {
        "sh": ["dash", str(SHIM / "sh" / "coactive-token")],
        "node": ["node", str(SHIM / "node" / "bin" / "coactive-token.js")],
        "go": [str(go)],
        "python": [sys.executable, str(SHIM / "python" / "coactive_token.py")],
    }[name]


GIT_GET = "protocol=http\nhost=127.0.0.1:9\n\n"


def configure_origin(v: Victim) -> None:
    """A profile for http://127.0.0.1:9, so the git helper asks the daemon about that host."""
    folder = v.home / ".config" / "coactive-credd"
    folder.mkdir(parents=True)
    (folder / "config.toml").write_text(
        '[profiles.default]\nbase_url = "http://127.0.0.1:9"\nauth = "personal_token"\n'
    )
    for p in (v.home / ".config", folder, folder / "config.toml"):
        os.chown(p, v.uid, v.uid)
        p.chmod(0o600 if p.is_file() else 0o700)


@pytest.mark.parametrize("shim", ["sh", "node", "go"])
def test_shims_refuse_an_impostor_in_the_fallback_folder(
    victim: Victim, impostor: Listener, go_cli_shared: Path, shim: str
) -> None:
    proc = victim.run(_shim(shim, go_cli_shared))
    assert_refused(proc, impostor, str(victim.socket.parent))


def test_git_helper_refuses_an_impostor_in_the_fallback_folder(
    victim: Victim, impostor: Listener
) -> None:
    configure_origin(victim)
    proc = victim.run(["dash", str(SHIM / "sh" / "git-credential-coactive"), "get"], GIT_GET)
    assert_refused(proc, impostor, str(victim.socket.parent))
    assert proc.stdout == ""
    erase = victim.run(
        ["dash", str(SHIM / "sh" / "git-credential-coactive"), "erase"],
        GIT_GET.replace("\n\n", f"\npassword={IMPOSTOR_TOKEN}\n\n"),
    )
    assert erase.returncode == 0 and impostor.received() == b""


def test_git_credential_fill_gets_nothing_from_an_impostor(
    victim: Victim, impostor: Listener
) -> None:
    configure_origin(victim)
    helper = f"!dash {SHIM / 'sh' / 'git-credential-coactive'}"
    proc = victim.run(
        ["git", "-c", f"credential.helper={helper}", "credential", "fill"],
        GIT_GET,
        env={"GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_NOSYSTEM": "1"},
    )
    assert IMPOSTOR_TOKEN not in proc.stdout
    assert "refusing to talk to the daemon" in proc.stderr
    assert impostor.received() == b""


@pytest.mark.parametrize("shim", ["sh", "node", "go"])
def test_shims_refuse_a_socket_moved_into_a_good_folder(
    victim: Victim, disguised: Listener, go_cli_shared: Path, shim: str
) -> None:
    """Go asks the kernel (SO_PEERCRED); sh and Node, which cannot, see the socket's owner."""
    _, attacker = _uid_pair()
    proc = victim.run(_shim(shim, go_cli_shared))
    assert_refused(proc, disguised, f"uid {attacker}")


def test_git_helper_refuses_a_socket_moved_into_a_good_folder(
    victim: Victim, disguised: Listener
) -> None:
    configure_origin(victim)
    proc = victim.run(["dash", str(SHIM / "sh" / "git-credential-coactive"), "get"], GIT_GET)
    assert_refused(proc, disguised, str(victim.socket))


@pytest.mark.parametrize("shim", ["sh", "node", "go", "python"])
def test_every_shim_trusts_the_daemon_uid_it_is_told(
    victim: Victim, disguised: Listener, go_cli_shared: Path, shim: str
) -> None:
    _, attacker = _uid_pair()
    proc = victim.run(_shim(shim, go_cli_shared), env={"COACTIVE_CREDD_DAEMON_UID": str(attacker)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == IMPOSTOR_TOKEN
    assert disguised.received().startswith(b"GET /v1/token")


@pytest.mark.parametrize("shim", ["sh", "node", "go", "python"])
def test_every_shim_names_a_foreign_runtime_dir_after_su(
    victim: Victim, attacker_home: Path, go_cli_shared: Path, shim: str
) -> None:
    _, uid = _uid_pair()
    other_runtime = attacker_home / "run"
    subprocess.run([*as_uid(uid), "mkdir", "-m", "700", str(other_runtime)], check=True)
    proc = victim.run(_shim(shim, go_cli_shared), env={"XDG_RUNTIME_DIR": str(other_runtime)})
    assert proc.returncode == 3, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "XDG_RUNTIME_DIR" in proc.stderr and str(attacker_home) in proc.stderr, proc.stderr


@pytest.mark.parametrize("shim", ["sh", "node", "go"])
def test_shim_autostart_never_starts_a_daemon_in_a_foreign_runtime_folder(
    victim: Victim, attacker_home: Path, go_cli_shared: Path, shim: str
) -> None:
    _, uid = _uid_pair()
    subprocess.run(
        [*as_uid(uid), "sh", "-c", 'umask 0 && mkdir -m 777 "$1"', "-", str(victim.runtime_root)],
        check=True,
    )
    proc = victim.run(
        _shim(shim, go_cli_shared),
        env={"COACTIVE_CREDD_AUTOSTART": "1", "COACTIVE_CREDD_COMMAND": "/bin/false"},
    )
    assert proc.returncode == 3, proc.stderr
    assert str(victim.runtime_root) in proc.stderr, proc.stderr
    assert not victim.socket.parent.exists(), "a folder was made inside the attacker's"


@pytest.mark.parametrize("shim", ["sh", "node", "go", "python-api"])
def test_following_events_never_reaches_an_impostor(
    victim: Victim, impostor: Listener, go_cli_shared: Path, shim: str
) -> None:
    if shim == "python-api":
        argv = [
            sys.executable,
            "-c",
            "import sys, coactive_token\n"
            "try:\n    list(coactive_token.watch())\n"
            "except coactive_token.CredddError as e:\n"
            "    print(e, file=sys.stderr); sys.exit(e.exit_code)",
        ]
    else:
        argv = [*_shim(shim, go_cli_shared), "--watch"]
    proc = victim.run(argv, env={"PYTHONPATH": str(SHIM / "python")})
    assert_refused(proc, impostor, str(victim.socket.parent))


@pytest.mark.parametrize("shim", ["sh", "node", "go", "python"])
def test_a_symlinked_socket_folder_is_refused(
    victim: Victim, attacker_home: Path, go_cli_shared: Path, shim: str
) -> None:
    """COACTIVE_CREDD_SOCKET through a symlink (here to the attacker's folder): the daemon
    never serves through one, so no client follows one."""
    _, uid = _uid_pair()
    listener = _listen(uid, attacker_home / "credd.sock", attacker_home / "record")
    try:
        link = victim.home / "link"
        link.symlink_to(attacker_home)
        os.lchown(link, victim.uid, victim.uid)
        proc = victim.run(
            _shim(shim, go_cli_shared), env={"COACTIVE_CREDD_SOCKET": str(link / "credd.sock")}
        )
        assert_refused(proc, listener, str(link))
        assert "symlink" in proc.stderr
    finally:
        listener.proc.kill()
        listener.proc.wait()


def test_a_sidecar_daemon_never_gets_a_passphrase_or_a_credential(
    victim: Victim, disguised: Listener
) -> None:
    """COACTIVE_CREDD_DAEMON_UID trusts uid N for tokens, events and status only: `unlock`,
    `login` and `rekey` refuse its daemon before reading a secret, and the client library
    refuses to carry a passphrase to it on a connection that a token request opened."""
    _, attacker = _uid_pair()
    sidecar = {"COACTIVE_CREDD_DAEMON_UID": str(attacker)}
    login = [
        "login",
        "--base-url",
        "http://127.0.0.1:9",
        "--no-verify",
        "--personal-token-stdin",
    ]
    for argv, stdin in (
        (["unlock", "--passphrase-stdin"], "pass\n"),
        (login, PERSONAL_TOKEN + "\n"),
        (["rekey", "--passphrase-stdin"], "old-pass\nnew-pass\n"),
    ):
        proc = victim.run(
            [sys.executable, "-m", "coactive_credd", *argv], stdin, sidecar, packages=True
        )
        assert_refused(proc, disguised, f"uid {attacker} ({'COACTIVE_CREDD_DAEMON_UID'})")
        assert PERSONAL_TOKEN not in proc.stderr and "pass" not in proc.stdout
    script = (
        "import sys, coactive_token\n"
        "with coactive_token.Client(autostart=False) as c:\n"
        "    print(c.token().access_token)\n"
        "    try:\n"
        "        c.request('POST', '/v1/admin/unlock', {'passphrase': 'pass'})\n"
        "    except coactive_token.UntrustedDaemon as e:\n"
        "        print(e, file=sys.stderr); sys.exit(e.exit_code)\n"
    )
    proc = victim.run(
        [sys.executable, "-c", script], env={**sidecar, "PYTHONPATH": str(SHIM / "python")}
    )
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout.strip() == IMPOSTOR_TOKEN  # the token was read on that connection
    assert disguised.received().startswith(b"GET /v1/token")
    assert b"/v1/admin" not in disguised.received() and b"pass" not in disguised.received()
