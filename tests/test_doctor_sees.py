"""doctor sees what serve sees: a vault serve cannot open is a problem in doctor too."""

from __future__ import annotations

import json
import os
from pathlib import Path

from coactive_credd.fakeupstream import FakeCoactive

from .conftest import login, run_cli


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
