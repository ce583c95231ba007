"""One trust rule for every client, driven by ``tests/vectors/safe_path.json``.

Each case's folders are made for real under a fresh root-owned folder, with real owners (the
user and a second real uid, through ``setpriv``), a listener that answers like a daemon runs
as the case says, and every client runs as the user: the Python shim, ``coactive-credd
token``, the sh shim and git helper under dash, Node, Go, git itself, and ``coactive-credd
unlock`` (the kind of request that carries a passphrase). A case fails with the table of
every client that disagreed, so one run compares them all.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .test_trust import IMPOSTOR_TOKEN, LISTENER, as_uid, go_cli_shared, package_reader

ROOT = Path(__file__).resolve().parent.parent
SHIM = ROOT / "client_shim"
VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parent / "vectors" / "safe_path.json").read_text()
)
CLIENTS: tuple[str, ...] = tuple(VECTORS["clients"])
GIT_GET = "protocol=http\nhost=127.0.0.1:9\n\n"

__all__ = ["go_cli_shared"]  # the Go CLI built where other uids can run it (a fixture)

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 and not os.environ.get("CI"),
    reason="needs root to run clients and listeners as two other real uids (setpriv)",
)


def _uids() -> tuple[int, int]:
    """Two uids of this run's own (test_trust.py uses the two below them)."""
    base = 40000 + (os.getpid() % 5000) * 4
    return base + 2, base + 3


@dataclass
class Case:
    root: Path
    me: int
    other: int
    socket: Path
    env: dict[str, str]
    record: Path

    def fill(self, text: str) -> str:
        return text.replace("{me}", str(self.me)).replace("{other}", str(self.other))

    def received(self) -> bytes:
        return self.record.read_bytes() if self.record.exists() else b""


def _owner(who: str, c: Case) -> int:
    return {"me": c.me, "other": c.other, "root": 0}[who]


def _argv(client: str, go: Path) -> tuple[list[str], str, bool]:
    """(argv, stdin, needs the package) for one client."""
    helper = ["dash", str(SHIM / "sh" / "git-credential-coactive")]
    return {
        "python": ([sys.executable, str(SHIM / "python" / "coactive_token.py")], "", False),
        "credd": ([sys.executable, "-m", "coactive_credd", "token"], "", True),
        "sh": (["dash", str(SHIM / "sh" / "coactive-token")], "", False),
        "git-helper": ([*helper, "get"], GIT_GET, False),
        "node": (["node", str(SHIM / "node" / "bin" / "coactive-token.js")], "", False),
        "go": ([str(go)], "", False),
        "git": (
            ["git", "-c", f"credential.helper=!{' '.join(helper)}", "credential", "fill"],
            GIT_GET,
            False,
        ),
        "credd-unlock": (
            [sys.executable, "-m", "coactive_credd", "unlock", "--passphrase-stdin"],
            "pass\n",
            True,
        ),
    }[client]


@pytest.fixture
def built(request: pytest.FixtureRequest) -> Iterator[Case]:
    case = request.param
    me, other = _uids()
    root = Path(tempfile.mkdtemp(prefix="ccsp-", dir="/tmp"))
    root.chmod(0o755)
    home = root / "home"
    home.mkdir(mode=0o700)
    os.chown(home, me, me)
    config = home / ".config" / "coactive-credd"
    config.mkdir(parents=True)
    (config / "config.toml").write_text(
        '[profiles.default]\nbase_url = "http://127.0.0.1:9"\nauth = "personal_token"\n'
    )
    for p in (home / ".config", config, config / "config.toml"):
        os.chown(p, me, me)
        p.chmod(0o600 if p.is_file() else 0o700)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("COACTIVE_", "XDG_", "GIT_")) and k not in ("NOTIFY_SOCKET",)
    }
    lay = case["layout"]
    sock = root / lay["socket"]
    records = root / "records"  # the listener's, whoever runs it; on no socket's path
    records.mkdir()
    records.chmod(0o777)
    c = Case(root, me, other, sock, env, records / "record")
    env.update(
        HOME=str(home),
        COACTIVE_CREDD_AUTOSTART="0",
        COACTIVE_CREDD_SOCKET=str(sock),
        GIT_TERMINAL_PROMPT="0",
        GIT_CONFIG_NOSYSTEM="1",
        GOCACHE=str(home / "gocache"),
    )
    env.update({k: c.fill(v) for k, v in case.get("env", {}).items()})
    for rel, who, mode in lay.get("folders", []):
        d = root / rel
        d.mkdir()
        os.chown(d, _owner(who, c), _owner(who, c))
        d.chmod(int(mode, 8))
    for link, target in lay.get("symlinks", []):
        (root / link).symlink_to(root / target)
        os.lchown(root / link, me, me)
    proc = None
    if "listener" in lay:
        spec = lay["listener"]
        uid = _owner(spec["as"], c)
        at = root / spec.get("at", lay["socket"])
        proc = subprocess.Popen(
            [*as_uid(uid), sys.executable, "-c", LISTENER, str(at), str(c.record), IMPOSTOR_TOKEN],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        proc.stdout.close()
        if at.parent.resolve() != sock.parent.resolve():
            os.rename(at, sock)  # moved in, as a rename race would
        if "chown" in spec:
            os.chown(sock, _owner(spec["chown"], c), -1)
    try:
        yield c
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
        shutil.rmtree(root, ignore_errors=True)


def _run(c: Case, client: str, go: Path) -> subprocess.CompletedProcess[str]:
    argv, stdin, packages = _argv(client, go)
    prefix = package_reader(c.me) if packages else as_uid(c.me)
    return subprocess.run(
        prefix + argv,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env=c.env,
        cwd=c.root / "home",
    )


def _outcome(client: str, proc: subprocess.CompletedProcess[str], c: Case, before: bytes) -> str:
    """What the client did, in the vector file's words (``outcomes``); anything else is
    described as it was, so the table shows it."""
    got_token = IMPOSTOR_TOKEN in proc.stdout
    sent = len(c.received()) > len(before)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    line = lines[-1] if lines else ""
    if client == "git":  # git's own lines come around the helper's
        line = next((ln for ln in lines if "coactive" in ln), "")
        if got_token and sent:
            return "served"
        if "refusing to" in line and not sent:
            return "refused: " + line
        if "is not a uid number" in line and not sent:
            return "usage"
        if not got_token and not sent and (not line or "not running" in line):
            return "no_daemon"  # the helper's one line naming the fix, or none
        return f"git exit {proc.returncode}, sent={sent}: {proc.stderr.strip()!r}"
    one = len(lines) <= 1 and "Traceback" not in proc.stderr
    if proc.returncode == 0 and sent and (got_token or client == "credd-unlock"):
        return "served"
    if proc.returncode == 3 and one and not sent:
        if "refusing to" in line:
            return "refused: " + line
        if "not running" in line:
            return "no_daemon"
    if client == "git-helper" and proc.returncode == 0 and not proc.stdout and not sent:
        return "no_daemon"
    if proc.returncode == 2 and one and "is not a uid number" in line and not sent:
        return "usage"
    return f"exit {proc.returncode}, sent={sent}: {proc.stderr.strip()!r}"


def _expected(case: dict[str, Any], client: str) -> str:
    expect: dict[str, str] = case["expect"]
    return expect.get(client, expect["all"])


@pytest.mark.parametrize(
    "built", VECTORS["cases"], ids=[c["name"] for c in VECTORS["cases"]], indirect=True
)
def test_every_client_decides_the_case_as_the_vector_says(
    built: Case, request: pytest.FixtureRequest, go_cli_shared: Path
) -> None:
    case = request.node.callspec.params["built"]
    wrong: list[str] = []
    for client in CLIENTS:
        before = built.received()
        proc = _run(built, client, go_cli_shared)
        got = _outcome(client, proc, built, before)
        want = _expected(case, client)
        kind = got.split(":", 1)[0]
        if kind != want:
            wrong.append(f"{client}: expected {want}, got {got}")
        elif kind == "refused" and "where" in case:
            where = built.fill(case["where"])
            # a folder is named as the one that "is not safe"; a uid as it is
            named = where if "uid" in where else f"{built.root}/{where} is not safe"
            if named not in got:
                wrong.append(f"{client}: refused without naming {named}: {got}")
    assert not wrong, f"case {case['name']} ({case['situation']}):\n" + "\n".join(wrong)


def test_the_vectors_name_every_situation_and_every_client() -> None:
    """The file lists the situations of the rule (docs/SECURITY.md) and says, for each
    check a language cannot make, who cannot and why."""
    names = {c["name"] for c in VECTORS["cases"]}
    for needed in (
        "missing",
        "private",
        "writable_by_others",
        "owned_by_other_uid",
        "loose_parent",
        "symlinked_folder",
        "sidecar_without_daemon_uid",
        "sidecar_with_daemon_uid",
        "root_sticky_parent",
        "daemon_uid_unicode_superscript",
    ):
        assert needed in names
    for case in VECTORS["cases"]:
        for client in case["expect"]:
            assert client == "all" or client in CLIENTS, (case["name"], client)
        differs = {
            k for k, v in case["expect"].items() if k != "all" and v != case["expect"]["all"]
        }
        if differs - {"credd-unlock"}:
            cannot = VECTORS["cannot"][case["cannot"]]
            assert differs - {"credd-unlock"} <= set(cannot["clients"]) and cannot["reason"]


def test_python_parses_daemon_uid_as_the_vectors_say(monkeypatch: pytest.MonkeyPatch) -> None:
    import coactive_token

    for raw, uid in VECTORS["daemon_uid"]["valid"].items():
        monkeypatch.setenv("COACTIVE_CREDD_DAEMON_UID", raw)
        assert coactive_token.daemon_uid() == uid
        assert uid in coactive_token.trusted_uids()
    for raw in VECTORS["daemon_uid"]["invalid"]:
        monkeypatch.setenv("COACTIVE_CREDD_DAEMON_UID", raw)
        with pytest.raises(coactive_token.BadRequest) as err:
            coactive_token.trusted_uids()
        assert err.value.exit_code == 2 and raw.strip() not in str(err.value)


def test_only_reading_requests_may_go_to_a_sidecar() -> None:
    import coactive_token

    for method, path in (
        ("GET", "/v1/token?profile=default"),
        ("GET", "/v1/events"),
        ("GET", "/v1/status"),
        ("GET", "/v1/credential?protocol=https&host=x"),
        ("POST", "/v1/token/refresh?profile=default"),
    ):
        assert coactive_token.other_uid_may_serve(method, path), path
    for method, path in (
        ("POST", "/v1/admin/unlock"),
        ("POST", "/v1/admin/credentials"),
        ("POST", "/v1/admin/credentials/remove"),
        ("POST", "/v1/admin/reload"),
        ("POST", "/v1/admin/lock"),
        ("GET", "/v1/audit"),
        ("POST", "/v1/token"),
    ):
        assert not coactive_token.other_uid_may_serve(method, path), path


_OTHER_UID_CASES = [
    c for c in VECTORS["cases"] if c["name"] in ("owned_by_other_uid", "sidecar_without_daemon_uid")
]


@pytest.mark.parametrize(
    "built", _OTHER_UID_CASES, ids=[c["name"] for c in _OTHER_UID_CASES], indirect=True
)
def test_a_folder_of_another_uid_names_the_daemon_uid_beside_the_chown(
    built: Case, go_cli_shared: Path
) -> None:
    """A sidecar's folder, met without COACTIVE_CREDD_DAEMON_UID: every client's one line
    names the app's way to trust that uid (and the daemon's allowed_uids), not only chown."""
    wrong = []
    for client in ("python", "credd", "sh", "git-helper", "node", "go"):
        proc = _run(built, client, go_cli_shared)
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        line = lines[-1] if lines else ""
        needed = (
            "refusing to",
            "sudo chown",
            f"COACTIVE_CREDD_DAEMON_UID={built.other}",
            f"your uid {built.me} in its allowed_uids",
        )
        if len(lines) != 1 or not all(n in line for n in needed):
            wrong.append(f"{client}: {proc.stderr.strip()!r}")
    assert not wrong, "\n".join(wrong)
