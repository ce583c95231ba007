"""The benchmark suite still runs: ``bench/run.py --smoke`` end to end, in seconds.

This checks that every part runs and writes its figures, not how fast anything is. A part
whose tools are missing here (gcc for the load generator, git, node, go) is reported as
skipped by the suite, and shows up below as a skipped test naming the missing tool.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
PARTS = ("serving", "coldstart", "storm", "footprint", "profiles")

# one worker runs them all: the module-scoped run of bench/run.py --smoke happens once
pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.heavy,
    pytest.mark.xdist_group("timing"),
]  # with the soak and kill -9 loop: one at a time


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path, str]:
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--smoke", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=280,
        cwd=REPO,
    )
    log = proc.stdout + proc.stderr
    assert (out / "results.json").is_file(), (
        f"run.py wrote no results (exit {proc.returncode}):\n{log}"
    )
    results = json.loads((out / "results.json").read_text())
    assert not results.get("failed"), f"parts failed: {results['failed']}\n{log}"
    assert proc.returncode == 0, log
    return results, out, log


def _skipped(results: dict[str, Any], prefix: str) -> str | None:
    for what, why in results["skipped"].items():
        if what == prefix or what.startswith(prefix + " "):
            return f"{what}: {why}"
    return None


@pytest.mark.parametrize("part", PARTS)
def test_part_ran(smoke: tuple[dict[str, Any], Path, str], part: str) -> None:
    results, _, _ = smoke
    why = _skipped(results, part)
    if why and part not in results:
        pytest.skip(f"skipped by the suite, {why}")
    assert part in results, f"{part} produced no figures"


def test_serving_rows(smoke: tuple[dict[str, Any], Path, str]) -> None:
    results, _, _ = smoke
    if "serving" not in results:
        pytest.skip(f"serving skipped: {_skipped(results, 'serving')}")
    rows = results["serving"]["rows"]
    keys = {r["key"] for r in rows}
    # The generator's own check and the asyncio ceiling need nothing but gcc and Python.
    assert {"trivial-ka", "ceiling-ka", "ceiling-conn"} <= keys
    for row in rows:
        assert row["rps"] > 0 and row["errors"] == 0, row
    for key, part in (("credd-ka", "serving (a), (b)"), ("git-cache", "serving (c)")):
        if key not in keys:
            pytest.skip(f"{key} not measured: {_skipped(results, part)}")


def test_storm_logs_in_once(smoke: tuple[dict[str, Any], Path, str]) -> None:
    results, _, _ = smoke
    if "storm" not in results:
        pytest.skip(f"storm skipped: {_skipped(results, 'storm')}")
    for row in results["storm"]["rows"]:
        assert row["logins"] == [1] * row["runs"], row
        assert row["errors"] == 0, row


def test_coldstart_found_the_shims(smoke: tuple[dict[str, Any], Path, str]) -> None:
    results, _, _ = smoke
    if "coldstart" not in results:
        pytest.skip(f"coldstart skipped: {_skipped(results, 'coldstart')}")
    keys = {r["key"] for r in results["coldstart"]["rows"]}
    assert not results["coldstart"]["failed"], results["coldstart"]["failed"]
    assert {"python-pass", "credd-token"} <= keys
    missing = [
        why
        for key, label in (
            ("go-shim", "coldstart go shim"),
            ("node-shim", "coldstart node shim"),
            ("git-cache-get", "coldstart git credential-cache get"),
        )
        if key not in keys and (why := _skipped(results, label))
    ]
    if missing:
        pytest.skip("; ".join(missing))


def test_report_written(smoke: tuple[dict[str, Any], Path, str]) -> None:
    results, out, _ = smoke
    page = (out / "BENCHMARKS.md").read_text()
    assert "## Targets" in page and "Smoke run" in page
    for heading in ("1. Serving", "2. Shim cold start", "3. Refresh storm", "4. Footprint"):
        assert f"## {heading}" in page
    if "plot" in results["skipped"]:
        pytest.skip(f"no plot: {results['skipped']['plot']}")
    assert (out / "bench-latency.png").stat().st_size > 1000
