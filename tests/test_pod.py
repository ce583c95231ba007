"""The Kubernetes pod of docs/KUBERNETES.md, built on this machine with real uids.

The daemon (the sidecar) reads a Secret-like credential file and shares a socket folder and
token file inside an ``emptyDir``-like folder (mode 0777, as the kubelet makes it); the app
runs as another uid listed in ``allowed_uids`` and in the daemon's group (the pod's
``runAsGroup``) and reads the token by socket (the sh shim, curl) and by file through
rotations; a third uid is refused both; the Secret is rotated and picked up.

Root only (``setpriv``); CI runs as root.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from coactive_credd.testing.fakeupstream import FakeCoactive, FakeCoactiveThread, credential_id

from .conftest import PERSONAL_TOKEN, start_daemon, wait_ready
from .test_credfile import ROTATED, Secret, wait_for, write_config

SHIM = Path(__file__).resolve().parent.parent / "client_shim" / "sh" / "coactive-token"
APP, STRANGER, POD_GID = 10002, 10003, 20000
LIFETIME = 24  # the daemon's background logins come at least 10 s apart: it replaces a
# 24 s token (served for 12 s) about 10 s in, before anyone sees it expire


def as_uid(uid: int, gid: int, *argv: str) -> list[str]:
    return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", *argv]


@pytest.fixture
def pod() -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("needs root to run processes as other uids (CI runs as root)")
    folder = Path(tempfile.mkdtemp(prefix="pod-", dir="/tmp"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def short() -> Iterator[FakeCoactive]:
    with FakeCoactiveThread(expires_in=LIFETIME) as f:
        f.add_personal_token(PERSONAL_TOKEN)
        yield f


def run_as(uid: int, gid: int, *argv: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        as_uid(uid, gid, *argv), capture_output=True, text=True, timeout=30, env=env
    )


@pytest.mark.heavy  # long: started first, so it does not end the run alone
def test_the_pod(home: Path, pod: Path, short: FakeCoactive) -> None:
    secret = Secret(pod / "secret")
    secret.put(PERSONAL_TOKEN)
    shared = pod / "run"  # the emptyDir both containers mount
    shared.mkdir()
    shared.chmod(0o777)
    sock, token_file = shared / "credd" / "credd.sock", shared / "credd" / "token"
    shim = pod / "coactive-token"  # the app container's copy of the shim
    shutil.copy(SHIM, shim)
    shim.chmod(0o755)
    write_config(
        home,
        f"[daemon]\nallowed_uids = [{APP}]\n\n"
        f'[profiles.default]\nbase_url = "{short.base_url}"\n'
        f'credential_file = "{secret.path}"\n'
        f'token_file = "{token_file}"\ntoken_file_mode = "0640"\n',
    )
    # the sidecar: the daemon's uid (root here) with the pod's group
    d = start_daemon(
        home,
        env={"COACTIVE_CREDD_SOCKET": str(sock)},
        wrap=["setpriv", f"--regid={POD_GID}", "--clear-groups"],
        wait=False,
    )
    d.socket = sock
    app_env = {
        "PATH": "/usr/bin:/bin",
        "COACTIVE_CREDD_SOCKET": str(sock),
        "COACTIVE_CREDD_DAEMON_UID": "0",
        "COACTIVE_CREDD_AUTOSTART": "0",
    }
    try:
        wait_ready(d)
        assert f"allowed_uids: uid(s) {APP} may use the socket" in d.log_text()
        wait_for(lambda: token_file.exists(), what="the token file")
        assert (token_file.stat().st_mode & 0o777, token_file.stat().st_gid) == (0o640, POD_GID)

        by_socket, by_file = set(), set()
        end = time.monotonic() + LIFETIME * 0.6  # through one rotation at least
        while time.monotonic() < end:
            got = run_as(APP, POD_GID, str(shim), env=app_env)
            assert got.returncode == 0, got.stderr
            read = run_as(APP, POD_GID, "cat", str(token_file), env=app_env)
            assert read.returncode == 0, read.stderr
            now = time.time()
            expiry = {i.access_token: i.issued_at + i.expires_in for i in short.ledger}
            for tok in (got.stdout.strip(), read.stdout):
                assert now < expiry[tok], "the app got a token that was not valid"
            by_socket.add(got.stdout.strip())
            by_file.add(read.stdout)
            time.sleep(0.2)
        assert len(by_socket) >= 2 and len(by_file) >= 2, "no rotation was seen"

        # a third uid: the kernel lets it connect (0666 socket), the daemon refuses it
        stranger = run_as(
            STRANGER,
            STRANGER,
            "curl",
            "-s",
            "--unix-socket",
            str(sock),
            "http://localhost/v1/token",
            env=app_env,
        )
        assert json.loads(stranger.stdout)["error"]["code"] == "forbidden"
        assert f"refused a request from uid {STRANGER}" in d.log_text()
        assert run_as(STRANGER, STRANGER, "cat", str(token_file), env=app_env).returncode != 0
        # the app may not lock or reload the daemon
        admin = run_as(
            APP,
            POD_GID,
            "curl",
            "-s",
            "-X",
            "POST",
            "--unix-socket",
            str(sock),
            "http://localhost/v1/admin/reload",
            env=app_env,
        )
        assert json.loads(admin.stdout)["error"]["code"] == "forbidden"

        # the Secret is rotated: the next login uses the new credential
        short.add_personal_token(ROTATED)
        secret.put(ROTATED)
        wait_for(
            lambda: short.ledger[-1].credential == credential_id(ROTATED),
            what="a login with the rotated Secret",
        )
        short.revoke(PERSONAL_TOKEN)
        got = run_as(APP, POD_GID, str(shim), env=app_env)
        assert got.returncode == 0 and got.stdout.strip() in short.issued
    finally:
        d.stop()
    assert not token_file.exists(), "the token file outlived the sidecar"
    log = d.log_text()
    assert not any(s in log for s in (PERSONAL_TOKEN, ROTATED, *short.issued))


PODMAN_SCRIPT = Path(__file__).resolve().parent.parent / "deploy" / "podman" / "run-pod.sh"


@pytest.mark.heavy  # long: started first, so it does not end the run alone
def test_the_pod_runs_for_real_in_podman() -> None:
    """deploy/podman/run-pod.sh: the image from deploy/Containerfile, the classic-sidecar
    Deployment's pod under `podman kube play` (sidecar uid 10001, app uid 10002), a fake
    Coactive on 127.0.0.1, the app's token by sh shim, Python shim and file, a Secret
    rotation, a clean stop. The base image is cached between runs."""
    if os.geteuid() != 0:
        pytest.skip("podman, mmdebstrap and unshare need root (CI runs as root)")
    proc = subprocess.run(
        [str(PODMAN_SCRIPT)], capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "run-pod: OK in" in proc.stdout
    assert "the rotated Secret was picked up" in proc.stdout
