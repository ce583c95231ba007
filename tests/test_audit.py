"""The audit trail: which programs took tokens, by uid and executable, aggregated."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from coactive_credd.server import audit
from coactive_credd.testing.fakeupstream import FakeCoactive

from .conftest import Daemon, FakeClock, leaked, run_cli

ROOT = Path(__file__).resolve().parent.parent


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{tool} is not installed: .ci/setup installs it")
        pytest.skip(f"{tool} is not installed")
    return os.path.realpath(path)


def test_three_programs_are_told_apart(daemon: Daemon, fake: FakeCoactive) -> None:
    curl, node = _need("curl"), _need("node")
    env = {**os.environ, "COACTIVE_CREDD_SOCKET": str(daemon.socket)}
    # python3: one keep-alive connection, ten tokens.
    script = ("import coactive_token\n"
              "with coactive_token.Client() as c:\n"
              "    for _ in range(10): c.token('default')\n")  # fmt: skip
    subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=30)
    # curl: two connections, a token each.
    for _ in range(2):
        subprocess.run([curl, "-sf", "--unix-socket", str(daemon.socket), "-o", "/dev/null",
                        "http://localhost/v1/token"], check=True, timeout=30)  # fmt: skip
    # node: the Node shim, one token.
    subprocess.run([node, str(ROOT / "client_shim/node/bin/coactive-token.js")], env=env,
                   check=True, timeout=30, capture_output=True)  # fmt: skip

    proc = run_cli("audit", "--json", env={"COACTIVE_CREDD_SOCKET": str(daemon.socket)})
    assert proc.returncode == 0, proc.stderr
    clients = {c["exe"]: c for c in json.loads(proc.stdout)["clients"]}
    python = os.path.realpath(sys.executable)
    # (this test's own requests are python's connections too, but took no token)
    assert clients[python]["tokens"] == 10
    assert clients[curl]["tokens"] == 2 and clients[curl]["connections"] == 2
    assert clients[node]["tokens"] == 1 and clients[node]["profiles"] == {"default": 1}
    for c in (clients[python], clients[curl], clients[node]):
        assert c["uid"] == os.getuid() and isinstance(c["pid"], int)
        assert c["first_seen"] <= c["last_seen"]
    assert not leaked(proc.stdout, set(fake.issued))

    table = run_cli("audit", env={"COACTIVE_CREDD_SOCKET": str(daemon.socket)})
    assert table.returncode == 0 and curl in table.stdout and "default:2" in table.stdout

    daemon.stop()  # the last minute's lines are written at the stop
    lines = [ln for ln in daemon.log_text().splitlines() if "audit: uid=" in ln]
    assert any(f"exe={curl} connections=2 tokens=2 profiles=default:2" in ln for ln in lines)
    assert any(f"exe={python} connections=" in ln and "tokens=10 " in ln for ln in lines)
    assert len([ln for ln in lines if f"exe={python}" in ln]) == 1  # one line, not ten


def test_one_line_per_busy_client_per_look_and_bounded() -> None:
    clock = FakeClock(1000.0)
    trail = audit.Audit(clock, max_clients=3)
    me = os.getpid()
    entry = trail.connected(1000, me)
    assert entry.exe == os.path.realpath(sys.executable)
    for _ in range(500):
        entry.fast["default"] = entry.fast.get("default", 0) + 1  # as the fast path counts
    clock.jump(61)
    with_lines = _lines(trail)
    assert len(with_lines) == 1 and "tokens=500" in with_lines[0]
    assert trail.clients()[0].last_seen == 1061  # busy on one connection: seen since
    assert _lines(trail) == []  # nothing new, nothing said
    # More clients than the table holds: the one seen longest ago goes, its counts stay in
    # the totals /metrics reports.
    for uid in (1, 2, 3):
        clock.jump(1)
        trail.connected(uid, None).slow["other"] += 1
    assert [c.uid for c in trail.clients()] == [1, 2, 3]
    fast, slow = trail.served()
    assert fast["default"] == 500 and slow["other"] == 3
    assert audit.executable(None) == "(unknown)" and audit.executable(2**22 + 12345) == "(unknown)"


def _lines(trail: audit.Audit) -> list[str]:
    import logging

    records: list[str] = []

    class Grab(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    logger = logging.getLogger("coactive_credd.server.audit")
    handler = Grab()
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.INFO)
    try:
        trail.log_changes()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)
    return records
