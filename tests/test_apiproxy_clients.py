"""The API proxy from each language and through ``exec --proxy``, against the fake Coactive.

Real clients only: requests and httpx over the socket (the Python shim's transports), Go's
coactivehttp.SocketTransport (cmd/coactive-api), Node's socketFetch, and behind
``exec --proxy``: curl, requests and Coactive's own SDK, holding only the placeholder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from coactive_credd.testing.fakeupstream import FakeCoactive

from .conftest import Daemon, run_cli

ROOT = Path(__file__).resolve().parent.parent
SHIM = ROOT / "client_shim"
MiB = 1024 * 1024


def _need(tool: str) -> str:
    found = shutil.which(tool)
    if found is None:
        pytest.skip(f"{tool} is not installed")
    return found


def _env(daemon: Daemon) -> dict[str, str]:
    return {**os.environ, "COACTIVE_CREDD_SOCKET": str(daemon.socket)}


def _bearer_of(fake: FakeCoactive) -> list[str]:
    return [r.headers.get("Authorization", "") for r in fake.api_requests]


# ---- the shims -----------------------------------------------------------------------------


def test_python_requests_and_httpx_go_through_the_socket(
    daemon: Daemon, fake: FakeCoactive
) -> None:
    script = textwrap.dedent(
        """
        import json, sys, coactive_token
        s = coactive_token.requests_session()
        r = s.post(coactive_token.PROXY_BASE_URL + "/api/v1/echo", data=b"r" * 3_000_000)
        out = {"requests": [r.status_code, r.json()["body_bytes"]]}
        r = s.get(coactive_token.PROXY_BASE_URL + "/api/v1/stream", params={"bytes": 2_000_000})
        out["requests_stream"] = [r.status_code, len(r.content)]
        with coactive_token.httpx_client() as c:
            r = c.put("/api/v1/echo", content=b"h" * 100)
            out["httpx"] = [r.status_code, r.json()["body_bytes"]]
            with c.stream("GET", "/api/v1/stream", params={"bytes": 2_000_000, "chunked": 1}) as r:
                out["httpx_stream"] = [r.status_code, sum(len(b) for b in r.iter_bytes())]
        print(json.dumps(out))
        print("requests" in sys.modules, file=sys.stderr)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=_env(daemon), timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {
        "requests": [200, 3_000_000],
        "requests_stream": [200, 2_000_000],
        "httpx": [200, 100],
        "httpx_stream": [200, 2_000_000],
    }
    assert set(_bearer_of(fake)) == {f"Bearer {fake.issued[-1]}"}


def test_the_python_shim_imports_neither_requests_nor_httpx_until_asked() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, coactive_token; print('requests' in sys.modules, 'httpx' in sys.modules)",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.stdout.split() == ["False", "False"], proc.stderr


def test_go_socket_transport(daemon: Daemon, fake: FakeCoactive, tmp_path: Path) -> None:
    go = _need("go")
    exe = tmp_path / "coactive-api"
    build = subprocess.run(
        [go, "build", "-o", str(exe), "./cmd/coactive-api"],
        cwd=SHIM / "go",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    proc = subprocess.run(
        [str(exe), "POST", "/api/v1/echo?from=go"],
        input=b"g" * (2 * MiB),
        capture_output=True,
        env=_env(daemon),
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["body_bytes"] == 2 * MiB and doc["query"] == "from=go"
    assert proc.stderr.decode().strip() == "200 OK"
    proc = subprocess.run(
        [str(exe), "GET", "/api/v1/redirect"], capture_output=True, env=_env(daemon), timeout=60
    )
    assert proc.returncode == 1 and proc.stderr.decode().strip() == "302 Found"
    assert set(_bearer_of(fake)) == {f"Bearer {fake.issued[-1]}"}


def test_node_socket_fetch(daemon: Daemon, fake: FakeCoactive) -> None:
    node = _need("node")
    script = textwrap.dedent(
        """
        const { socketFetch } = require(process.argv[1]);
        (async () => {
          const r = await socketFetch('/api/v1/echo?from=node', { method: 'POST', body: 'n'.repeat(100000) });
          const doc = await r.json();
          const s = await socketFetch('http://ignored.invalid/api/v1/stream?bytes=3000000&chunked=1');
          let n = 0;
          for await (const chunk of s.body) n += chunk.length;
          console.log(JSON.stringify({ status: r.status, bytes: doc.body_bytes, query: doc.query, streamed: n }));
        })().catch((e) => { console.error(String(e)); process.exit(1); });
        """
    )
    proc = subprocess.run(
        [node, "-e", script, str(SHIM / "node")],
        capture_output=True,
        text=True,
        env=_env(daemon),
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {
        "status": 200,
        "bytes": 100000,
        "query": "from=node",
        "streamed": 3_000_000,
    }
    assert set(_bearer_of(fake)) == {f"Bearer {fake.issued[-1]}"}


def test_the_sh_line_of_the_readme_works(daemon: Daemon, fake: FakeCoactive) -> None:
    readme = (SHIM / "README.md").read_text()
    line = next(ln for ln in readme.splitlines() if ln.startswith("curl --unix-socket"))
    proc = subprocess.run(
        # the coactive-credd of this tree (the one on PATH may be another checkout's)
        [
            "sh",
            "-c",
            line.replace("/api/v1/datasets", "/api/v1/echo").replace(
                "coactive-credd socket-path", f"{sys.executable} -m coactive_credd socket-path"
            ),
        ],
        capture_output=True,
        text=True,
        env=_env(daemon),
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["path"] == "/api/v1/echo"


# ---- exec --proxy --------------------------------------------------------------------------


def exec_proxy(daemon: Daemon, script: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return run_cli(
        "exec",
        "--proxy",
        *extra,
        "--",
        sys.executable,
        "-c",
        script,
        env={"COACTIVE_CREDD_SOCKET": str(daemon.socket)},
        timeout=60,
    )


def test_exec_proxy_gives_the_command_a_placeholder_and_never_the_token(
    daemon: Daemon, fake: FakeCoactive
) -> None:
    script = textwrap.dedent(
        """
        import json, os, subprocess
        env = dict(os.environ)
        url, placeholder = env["COACTIVE_BASE_URL"], env["COACTIVE_ACCESS_TOKEN"]
        def curl(*args):
            p = subprocess.run(["curl", "-q", "-s", "-w", "\\n%{http_code}", *args], capture_output=True, text=True)
            body, _, code = p.stdout.rpartition("\\n")
            return int(code), body
        out = {"env": {k: v for k, v in env.items() if k.startswith("COACTIVE_")}}
        out["ok"] = curl("-H", f"Authorization: Bearer {placeholder}", "--data-binary", "c" * 5000, url + "/api/v1/echo")
        out["wrong"] = curl("-H", "Authorization: Bearer " + placeholder[:-1] + "x", url + "/api/v1/echo")
        out["none"] = curl(url + "/api/v1/echo")
        out["token_route"] = curl("-H", f"Authorization: Bearer {placeholder}", url + "/v1/token")
        out["dots"] = curl("--path-as-is", "-H", f"Authorization: Bearer {placeholder}", url + "/api/../v1/token")
        out["login"] = curl("-X", "POST", "-H", f"Authorization: Bearer {placeholder}", url + "/api/v0/login")
        out["host"] = curl("-H", "Host: evil.invalid", "-H", f"Authorization: Bearer {placeholder}", url + "/api/v1/echo")
        print(json.dumps(out))
        """
    )
    proc = exec_proxy(daemon, script)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    env = out["env"]
    assert env["COACTIVE_BASE_URL"].startswith("http://127.0.0.1:")
    assert env["COACTIVE_ACCESS_TOKEN"].startswith("ccdp_")
    for withheld in (
        "COACTIVE_ACCESS_TOKEN_FILE",
        "COACTIVE_CREDD_SOCKET",
        "COACTIVE_TOKEN_EXPIRES_AT",
    ):
        assert withheld not in env
    assert not any(t in proc.stdout + proc.stderr for t in fake.issued)  # nowhere in the child
    status, body = out["ok"]
    assert status == 200 and json.loads(body)["body_bytes"] == 5000
    for refused, code in (
        ("wrong", 401),
        ("none", 401),
        ("token_route", 400),
        ("dots", 400),
        ("login", 404),
        ("host", 400),
    ):
        assert out[refused][0] == code, (refused, out[refused])
        assert fake.issued[-1] not in out[refused][1]
    assert len(fake.api_requests) == 1  # only the one with the placeholder went anywhere
    assert _bearer_of(fake) == [f"Bearer {fake.issued[-1]}"]


def test_exec_proxy_with_requests_and_coactives_sdk(daemon: Daemon, fake: FakeCoactive) -> None:
    script = textwrap.dedent(
        """
        import json, os
        import httpx, requests
        from coactive.core.client_wrapper import SyncClientWrapper
        from coactive.resources.dataset.client import DatasetClient
        url, token = os.environ["COACTIVE_BASE_URL"], os.environ["COACTIVE_ACCESS_TOKEN"]
        r = requests.get(url + "/api/v1/echo", headers={"Authorization": f"Bearer {token}"})
        wrapper = SyncClientWrapper(token=token, base_url=url, httpx_client=httpx.Client())
        sdk = DatasetClient(client_wrapper=wrapper).delete("ds-42")
        print(json.dumps({"requests": r.json()["path"], "sdk": [sdk["method"], sdk["path"]]}))
        """
    )
    proc = exec_proxy(daemon, script)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {
        "requests": "/api/v1/echo",
        "sdk": ["DELETE", "/api/v1/datasets/ds-42"],
    }
    assert _bearer_of(fake) == [f"Bearer {fake.issued[-1]}"] * 2


def test_exec_proxy_exits_as_the_command_and_refuses_a_token_file(daemon: Daemon) -> None:
    proc = exec_proxy(daemon, "raise SystemExit(7)")
    assert proc.returncode == 7, proc.stderr
    proc = exec_proxy(daemon, "pass", "--token-file", "/tmp/x")
    assert proc.returncode == 2 and "drop --token-file" in proc.stderr


def test_exec_proxy_for_an_unknown_profile_runs_nothing(daemon: Daemon, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    proc = exec_proxy(daemon, f"open({str(marker)!r}, 'w')", "--profile", "nope")
    assert proc.returncode == 4 and not marker.exists()
    assert len(proc.stderr.strip().splitlines()) == 1


def test_the_demo_shows_one_proxied_call() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "coactive_credd", "demo", "--duration", "4"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "GET /api/v1/datasets through the daemon (no token held): HTTP 200" in out.stdout
