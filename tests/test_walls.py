"""The walls of docs/ARCHITECTURE.md that import-linter cannot see, checked on the real code.

``lint-imports`` (run by ``.ci/run``) checks the layers, the forbidden imports and that no
siblings import each other in a cycle. These tests check the rest: what the fast commands load
when they run for real, that the cli room imports the heavy rooms only inside its commands,
and that production modules read no test-only variable.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "daemon" / "coactive_credd"
HEAVY = ("aiohttp", "cryptography", "multidict", "yarl", "prometheus_client", "secretstorage")

# Run a command in-process under `python3 -c`, then print the top-level modules it loaded.
_PROBE = """
import json, sys
from coactive_credd.cli.main import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
loaded = sorted({m.split(".")[0] for m in sys.modules})
print("\\n" + json.dumps({"code": code, "loaded": loaded}), file=sys.stderr)
"""


@pytest.mark.parametrize(
    "argv",
    [
        ["token"],
        ["token", "--json"],
        ["status"],
        ["status", "--json"],
        ["refresh"],
        ["socket-path"],
    ],
    ids=" ".join,
)
def test_the_fast_commands_load_neither_aiohttp_nor_cryptography(
    argv: list[str], tmp_path: Path
) -> None:
    # With no daemon (each fails fast and says so), and with one answering: the modules a
    # command loads must not depend on which answer it got. Here, none (tmp_path has no socket);
    # tests/test_cli_everyday.py and the shims' tests run them against real daemons.
    env = {**os.environ, "COACTIVE_CREDD_HOME": str(tmp_path), "COACTIVE_CREDD_AUTOSTART": "0"}
    env.pop("COACTIVE_CREDD_SOCKET", None)
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, *argv], capture_output=True, text=True, env=env, timeout=30
    )
    report = json.loads(proc.stderr.strip().splitlines()[-1])
    heavy = sorted(set(report["loaded"]) & set(HEAVY))
    assert not heavy, f"`coactive-credd {' '.join(argv)}` loaded {heavy}"
    assert "coactive_credd" in report["loaded"]


def test_the_fast_commands_load_neither_with_a_daemon_answering(daemon: object) -> None:
    for argv in (["token"], ["status"], ["refresh"]):
        proc = subprocess.run(
            [sys.executable, "-c", _PROBE, *argv], capture_output=True, text=True, timeout=30
        )
        report = json.loads(proc.stderr.strip().splitlines()[-1])
        assert report["code"] == 0, proc.stderr
        heavy = sorted(set(report["loaded"]) & set(HEAVY))
        assert not heavy, f"`coactive-credd {' '.join(argv)}` loaded {heavy}"


def test_login_without_verifying_loads_no_http_client(tmp_path: Path) -> None:
    """``login --no-verify`` writes the config and the vault (cryptography) and calls nobody:
    aiohttp, a third of a second of start-up, is for the verifying exchange alone."""
    env = {**os.environ, "COACTIVE_CREDD_HOME": str(tmp_path), "COACTIVE_CREDD_AUTOSTART": "0"}
    env["COACTIVE_CREDD_SOCKET"] = str(tmp_path / "credd.sock")
    argv = ["login", "--base-url", "https://app.coactive.ai", "--personal-token-stdin"]
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, *argv, "--no-verify"],
        input="cpt_walls-personal-token\n",
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    report = json.loads(proc.stderr.strip().splitlines()[-1])
    assert report["code"] == 0, proc.stderr
    loaded = set(report["loaded"])
    assert not loaded & {"aiohttp", "multidict", "yarl"}, sorted(loaded & set(HEAVY))
    assert "cryptography" in loaded  # the vault was written


def _module_level_imports(path: Path) -> list[str]:
    """The modules ``path`` imports at module level (not inside a function), TYPE_CHECKING
    blocks left out."""
    tree = ast.parse(path.read_text())
    found: list[str] = []

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.Import):
                found.extend(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.append(node.module)
                found.extend(f"{node.module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.If):
                test = ast.unparse(node.test)
                if test != "TYPE_CHECKING":
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for h in node.handlers:
                    visit(h.body)

    visit(tree.body)
    return found


# What a cli module may import at module level: the stdlib, the client shim, the core room
# and its own room. The server, vault, upstream and testing rooms, and the third-party
# packages they bring, come in inside the command that needs them.
_CLI_LAZY = (
    "coactive_credd.server",
    "coactive_credd.vault",
    "coactive_credd.upstream.exchange",
    "coactive_credd.upstream.answers",
    "coactive_credd.upstream.connection",
    "coactive_credd.upstream.credential",
    "coactive_credd.upstream.failures",
    "coactive_credd.testing",
    *HEAVY,
)


@pytest.mark.parametrize("module", sorted(p.name for p in (PACKAGE / "cli").glob("*.py")), ids=str)
def test_the_cli_imports_the_heavy_rooms_only_inside_its_commands(module: str) -> None:
    lazy = _CLI_LAZY
    if module == "demo.py":  # the demo is the fake Coactive's one user outside the tests
        lazy = tuple(x for x in lazy if x != "coactive_credd.testing")
    eager = [
        m
        for m in _module_level_imports(PACKAGE / "cli" / module)
        if any(m == x or m.startswith(x + ".") for x in lazy)
    ]
    assert not eager, f"cli/{module} imports {eager} at module level"


def test_production_reads_no_test_variable() -> None:
    readers = [
        str(p.relative_to(PACKAGE))
        for p in PACKAGE.rglob("*.py")
        if "COACTIVE_CREDD_TEST_" in p.read_text()
        and p.parent.name != "testing"
        and p != PACKAGE / "core" / "env.py"  # the registry names them, for the testing room
    ]
    assert not readers, f"outside the testing room, {readers} name COACTIVE_CREDD_TEST_*"


def test_one_exception_root() -> None:
    """Every exception class of the package derives from errors.CreddError (the testing room's
    private faults aside)."""
    roots = []
    for p in PACKAGE.rglob("*.py"):
        if p.parent.name == "testing":
            continue
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ClassDef) and node.name != "CreddError":
                bases = [ast.unparse(b) for b in node.bases]
                if any(
                    b in ("Exception", "BaseException", "ValueError", "RuntimeError", "OSError")
                    for b in bases[:1]
                ):
                    roots.append(f"{p.relative_to(PACKAGE)}:{node.name}({', '.join(bases)})")
    assert roots == [], f"exception classes outside the error tree: {roots}"


def test_every_environment_variable_is_listed_in_one_module() -> None:
    import re

    from coactive_credd.core import env

    named = set()
    for p in PACKAGE.rglob("*.py"):
        named |= set(re.findall(r"\bCOACTIVE_[A-Z_]*[A-Z]\b", p.read_text()))
    named.discard("COACTIVE_CREDD_TEST_")  # the prefix, in the test above
    missing = sorted(named - set(env.BY_NAME))
    assert not missing, f"not in coactive_credd.core.env: {missing}"
