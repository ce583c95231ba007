"""deploy/: the Containerfile linted (hadolint), the Kubernetes manifests validated offline
against the API schemas (kubernetes-validate), and what they say checked against the product:
the ConfigMap is a config the daemon accepts, its paths sit on the volumes the Deployment
mounts, the uids agree, and the health check answers on a real daemon."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from coactive_credd.core import config

from .conftest import Daemon

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
MANIFESTS = sorted((DEPLOY / "kubernetes").glob("*.yaml"))


def tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    assert found, f"{name} is not installed: run .ci/setup"
    return found


def test_containerfile_passes_hadolint() -> None:
    out = subprocess.run(
        [tool("hadolint"), str(DEPLOY / "Containerfile")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_manifests_validate_offline_and_a_broken_one_does_not(tmp_path: Path) -> None:
    assert {m.name for m in MANIFESTS} >= {"deployment.yaml", "configmap.yaml", "secret.yaml"}
    for version in ("1.29.0", "1.37.0"):  # native sidecars came with 1.29
        ok = subprocess.run(
            [tool("kubernetes-validate"), "--strict", "-k", version, *map(str, MANIFESTS)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert ok.returncode == 0, ok.stdout + ok.stderr
    broken = tmp_path / "deployment.yaml"
    broken.write_text(
        (DEPLOY / "kubernetes" / "deployment.yaml")
        .read_text()
        .replace("readOnlyRootFilesystem", "readOnlyRootFilesytem", 1)
    )
    bad = subprocess.run(
        [tool("kubernetes-validate"), "--strict", str(broken)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode != 0, "the validator accepted a misspelt field"


def _load() -> dict[str, Any]:
    docs = {}
    for m in MANIFESTS:
        for doc in yaml.safe_load_all(m.read_text()):
            docs[doc["kind"]] = doc
    return docs


def _mount(container: dict[str, Any], volume: str) -> str:
    (m,) = [m for m in container["volumeMounts"] if m["name"] == volume]
    return str(m["mountPath"])


def test_the_manifests_agree_with_the_product() -> None:
    docs = _load()
    cfg = config.parse(docs["ConfigMap"]["data"]["config.toml"], "the ConfigMap")
    spec = docs["Deployment"]["spec"]["template"]["spec"]
    (sidecar,) = spec["initContainers"]
    (app,) = spec["containers"]
    assert sidecar["restartPolicy"] == "Always"  # a native sidecar
    for c in (sidecar, app):
        sc = c["securityContext"]
        assert sc["capabilities"]["drop"] == ["ALL"] and sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    env = {e["name"]: e["value"] for e in app["env"]}
    side_env = {e["name"]: e["value"] for e in sidecar["env"]}
    side_uid, app_uid = sidecar["securityContext"]["runAsUser"], app["securityContext"]["runAsUser"]
    assert side_uid != app_uid and cfg.daemon.allowed_uids == {app_uid}
    assert env["COACTIVE_CREDD_DAEMON_UID"] == str(side_uid)
    (run_volume,) = [v for v in spec["volumes"] if v["name"] == "coactive-run"]
    # a tmpfs: the token never touches a disk, and its root is sticky (docs/KUBERNETES.md)
    assert run_volume["emptyDir"]["medium"] == "Memory"
    run = _mount(sidecar, "coactive-run")
    assert _mount(app, "coactive-run") == run
    assert env["COACTIVE_CREDD_SOCKET"] == side_env["COACTIVE_CREDD_SOCKET"]
    (profile,) = cfg.profiles.values()
    # the daemon makes a folder of its own inside the emptyDir (which the kubelet makes 0777)
    for path in (
        env["COACTIVE_CREDD_SOCKET"],
        profile.token_file,
        env["COACTIVE_ACCESS_TOKEN_FILE"],
    ):
        assert path is not None and Path(path).parent.parent == Path(run), path
    assert profile.token_file == env["COACTIVE_ACCESS_TOKEN_FILE"]
    assert profile.token_file_mode == 0o640 and "runAsGroup" in spec["securityContext"]
    assert profile.credential_file is not None
    assert Path(profile.credential_file).parent == Path(_mount(sidecar, "coactive-credentials"))
    secret_key = Path(profile.credential_file).name
    assert secret_key in docs["Secret"]["stringData"]
    assert _mount(sidecar, "coactive-config") == "/home/credd/config.toml"
    text = (DEPLOY / "Containerfile").read_text()
    assert "ENV COACTIVE_CREDD_HOME=/home/credd" in text and "USER 10001:10000" in text
    assert side_uid == 10001 and spec["securityContext"]["runAsGroup"] == 10000


def _healthcheck() -> list[str]:
    text = (DEPLOY / "Containerfile").read_text().replace("\\\n", " ")
    m = re.search(r"HEALTHCHECK .*?CMD (\[.*\])", text)
    assert m is not None
    argv: list[str] = json.loads(m.group(1))
    assert argv[0] == "python3"
    return [sys.executable, *argv[1:]]


def test_the_health_check_answers_on_a_real_daemon(daemon: Daemon) -> None:
    probe = _healthcheck()
    probe_k8s = _load()["Deployment"]["spec"]["template"]["spec"]["initContainers"][0]
    assert probe_k8s["startupProbe"]["exec"]["command"][1:] == probe[1:]
    env = {"COACTIVE_CREDD_SOCKET": str(daemon.socket)}
    ok = subprocess.run(probe, env={**daemon.env, **env}, capture_output=True, timeout=30)
    assert ok.returncode == 0, ok.stderr
    daemon.stop()
    down = subprocess.run(probe, env={**daemon.env, **env}, capture_output=True, timeout=30)
    assert down.returncode != 0


def test_the_kubernetes_doc_names_the_manifests() -> None:
    text = (REPO / "docs" / "KUBERNETES.md").read_text()
    for m in MANIFESTS:
        assert f"deploy/kubernetes/{m.name}" in text
    assert "deploy/Containerfile" in text
