"""Node's coactiveFetch, in a real node process, against the real daemon and a Coactive API
that rejects chosen tokens: the same 401 flow as Python's CoactiveAuth and Go's Transport."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from coactive_credd.testing.fakeupstream import FakeCoactive

from .conftest import Daemon
from .test_python_shim import FakeAPI, api

__all__ = ["api"]  # the fixture, used here by name

NODE_LIB = Path(__file__).resolve().parent.parent / "client_shim" / "node"

SCRIPT = """
const { coactiveFetch } = require(process.argv[1]);
const { Readable } = require('stream');
const api = process.argv[2];
const step = process.argv[3];
(async () => {
  let r;
  if (step === 'post') {
    r = await coactiveFetch(`${api}/api/v1/things`, {
      method: 'POST', body: JSON.stringify({ q: 1 }), headers: { 'Content-Type': 'application/json' },
    });
  } else if (step === 'request') {
    r = await coactiveFetch(new Request(`${api}/api/v1/things`, { method: 'POST', body: 'x' }));
  } else {
    const body = Readable.toWeb(Readable.from([Buffer.from('chunk')]));
    r = await coactiveFetch(`${api}/upload`, { method: 'PUT', body, duplex: 'half' });
  }
  await r.text();
  process.stdout.write(JSON.stringify({ status: r.status }));
})().catch((e) => { process.stderr.write(`${e.message}\\n`); process.exit(e.exitCode || 1); });
"""


def node(api: FakeAPI, step: str) -> int:
    exe = shutil.which("node")
    if exe is None:
        pytest.fail("node is not installed")
    r = subprocess.run(
        [exe, "-e", SCRIPT, str(NODE_LIB), api.url, step],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    return int(json.loads(r.stdout)["status"])


def test_coactive_fetch_reports_a_rejected_token_and_retries_once(
    daemon: Daemon, fake: FakeCoactive, api: FakeAPI
) -> None:
    old = fake.issued[-1]
    api.rejected.add(old)
    logins = fake.logins
    assert node(api, "post") == 200
    assert api.auths() == [old, fake.issued[-1]]
    assert [body for _, _, body in api.seen] == [b'{"q":1}'] * 2
    assert fake.logins == logins + 1
    # A Request object is cloned for the second try.
    api.seen.clear()
    api.rejected.add(fake.issued[-1])
    assert node(api, "request") == 200
    assert [body for _, _, body in api.seen] == [b"x"] * 2
    # Rejected again and again: one retry, then the 401 is the caller's.
    api.seen.clear()
    api.reject_all = True
    assert node(api, "post") == 401 and len(api.seen) == 2
    # A streamed body cannot be sent twice: its 401 comes back without a retry.
    api.seen.clear()
    assert node(api, "stream") == 401 and len(api.seen) == 1
