"""The install instructions of client_shim/README.md, run as they stand.

Each ``<!-- install:NAME -->`` block is run by dash with ``set -e`` in an empty folder, with a
``HOME`` of its own and ``REPO`` set to this checkout, offline (npm and Go are told not to
reach a registry). The block ends by asking what it installed for its ``--version``; that
line must name the package's version.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "client_shim" / "README.md").read_text()
BLOCKS = dict(re.findall(r"<!-- install:(\w+) -->\n```sh\n(.*?)```", README, re.S))
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
NEEDS = {"sh": "dash", "python": "python3", "node": "npm", "go": "go"}


def test_every_shim_has_an_install_block() -> None:
    assert sorted(BLOCKS) == sorted(NEEDS)


@pytest.mark.parametrize("name", sorted(NEEDS))
def test_install_instructions_work_verbatim(name: str, tmp_path: Path) -> None:
    for tool in (NEEDS[name], "dash"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed; .ci/setup installs it")
    home = tmp_path / "home"
    work = tmp_path / "work"
    home.mkdir()
    work.mkdir()
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "REPO": str(ROOT),
        "LANG": "C.UTF-8",
        # Offline: no registry, no telemetry; the build cache is shared to keep CI short.
        "npm_config_offline": "true",
        "npm_config_update_notifier": "false",
        "GOPROXY": "off",
        "GOFLAGS": "-mod=mod",
        "GOTOOLCHAIN": "local",
    }
    go = shutil.which("go")
    if go is not None:
        cache = subprocess.run([go, "env", "GOCACHE"], capture_output=True, text=True)
        env["GOCACHE"] = cache.stdout.strip()
    r = subprocess.run(
        ["dash", "-e", "-c", BLOCKS[name]],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    last = r.stdout.strip().splitlines()[-1]
    assert last.endswith(f" {VERSION}") or last == VERSION, r.stdout
