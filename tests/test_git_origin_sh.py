"""The git helper's origin and profile rules (coactive_credd.core.gitcred), and the sh helper's copy
of the origin rule checked against it host by host."""

from __future__ import annotations

import json
import os
import socketserver
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from coactive_credd.core import gitcred

HELPER = Path(__file__).resolve().parent.parent / "client_shim" / "sh" / "git-credential-coactive"
BASE_URLS = ["https://api.coactive.ai", "http://127.0.0.1:8080/coactive", "http://[::1]:9000"]
ASKED = [
    ("https", "api.coactive.ai"),
    ("HTTPS", "API.Coactive.AI"),
    ("https", "api.coactive.ai:443"),
    ("https", "api.coactive.ai:0443"),
    ("http", "api.coactive.ai"),
    ("https", "api.coactive.ai:8443"),
    ("https", "api.coactive.ai."),
    ("https", "x.api.coactive.ai"),
    ("https", "evil.example@api.coactive.ai"),
    ("https", "api.coactive.ai\r"),
    ("https", "api.coactive.ai\t"),
    ("https", " api.coactive.ai"),
    ("https", "api.coactive.ai/x"),
    ("https", "api.coactive.ai?x"),
    ("https", "api.coactive.ai#x"),
    ("https", "api.coactive.ai:"),
    ("https", "api.coactive.ai:+443"),
    ("https", "api.coactive.ai:443:443"),
    ("https", "api.coactive.ai:99999"),
    ("https", "api%2ecoactive.ai"),
    ("ssh", "api.coactive.ai"),
    ("http", "127.0.0.1:8080"),
    ("http", "127.0.0.1"),
    ("http", "127.0.0.1:08080"),
    ("http", "[::1]:9000"),
    ("http", "[::1]"),
    ("http", "[::1:9000"),
    ("http", "::1:9000"),
    ("http", "[]:9000"),
    ("http", ""),
]


class _Recorder(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


@pytest.fixture
def recorder(tmp_path: Path) -> Iterator[tuple[dict[str, str], list[str]]]:
    """A stand-in daemon that records each question and answers no_match; a config with
    BASE_URLS. Yields the helper's environment and the list of questions."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            body = json.dumps({"error": {"code": "no_match", "message": "m", "hint": "h"}})
            self.send_response(404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

        def address_string(self) -> str:
            return "unix"

        def log_message(self, format: str, *args: Any) -> None:
            pass

    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    lines = []
    for i, url in enumerate(BASE_URLS):
        lines += [f'[profiles."p{i}"]', f'base_url = "{url}"', 'auth = "personal_token"', ""]
    (home / "config.toml").write_text("\n".join(lines))
    server = _Recorder(str(tmp_path / "s.sock"), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {
        **os.environ,
        "COACTIVE_CREDD_HOME": str(home),
        "COACTIVE_CREDD_SOCKET": str(tmp_path / "s.sock"),
    }
    yield env, seen
    server.shutdown()
    server.server_close()


def test_the_sh_helper_asks_the_daemon_exactly_when_gitcred_matches(
    recorder: tuple[dict[str, str], list[str]],
) -> None:
    env, seen = recorder
    origins = {gitcred.base_url_origin(u) for u in BASE_URLS}
    disagree = []
    for protocol, host in ASKED:
        seen.clear()
        r = subprocess.run(
            ["dash", str(HELPER), "get"],
            input=f"protocol={protocol}\nhost={host}\n\n",
            capture_output=True,
            text=True,
            env=env,
            timeout=30,
        )
        assert (r.returncode, r.stdout) == (0, "")
        if bool(seen) != (gitcred.git_origin(protocol, host) in origins):
            disagree.append((protocol, host, bool(seen)))
    assert disagree == []
