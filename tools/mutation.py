"""Mutation testing of the daemon's core with mutmut, one module at a time.

    python3 tools/mutation.py [MODULE ...] [--only FUNC ...] [--max-children N]
                              [--timeout-multiplier X]

Each MODULE (default: all of ``MODULES``; ``api`` and ``refresh`` in their core functions only,
``CORE`` below) is mutated in a scratch copy of the tree under
``/tmp/ccd-mutation-UID/MODULE`` and judged by its own narrow test selection (``MODULES`` below),
because the whole suite per mutant is far too slow for a small machine. The copy lays the
package out as ``src/coactive_credd`` (mutmut names mutants after ``src/``-relative paths) and
puts ``mutants/src`` first on ``PYTHONPATH``, so the daemons the tests start as subprocesses
run the mutated code too. mutmut only knows which tests reach a function from the test
process itself, so a mutant reached only inside a subprocess is reported ``no tests``.

Prints, and writes to ``score.json`` there, the counts per module: killed
(a test failed), timeout (counted as killed, as mutmut does), survived, no tests, and the score
``killed / (killed + survived + no tests)``. Survivors are listed with ``mutmut show NAME`` in
the module's folder. docs/TESTING.md holds the last scores and why each survivor stays.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRATCH = Path(tempfile.gettempdir()) / f"ccd-mutation-{os.getuid()}"

# module -> its path inside the package (its room), for mutmut's names and only_mutate
WHERE = {
    "engine": "core.engine",
    "gitcred": "core.gitcred",
    "request": "core.request",
    "fastpath": "server.fastpath",
    "api": "server.api",
    "refresh": "server.refresh",
    "profile": "server.profile",
    "peer": "server.peer",
    "reconcile": "server.reconcile",
    "persist": "server.persist",
    "vault": "vault",
}

# module -> the tests that judge its mutants (narrow: the ones that exercise it in-process)
MODULES: dict[str, list[str]] = {
    "engine": ["tests/test_engine.py"],
    "gitcred": ["tests/test_gitcred.py"],
    "fastpath": [
        "tests/test_fastpath.py",
        "tests/test_fuzz.py",
        "tests/test_polite.py",
        "tests/test_refresh.py",
        "tests/test_lock.py",
    ],
    "request": ["tests/test_request_rules.py", "tests/test_fuzz.py", "tests/test_fastpath.py"],
    "vault": ["tests/test_vault.py"],
    "api": [
        "tests/test_routes.py",
        "tests/test_profiles.py",
        "tests/test_peer.py",
        "tests/test_polite.py",
        "tests/test_gitcred.py",
        "tests/test_persist.py",
        "tests/test_fastpath.py",
        "tests/test_refresh.py",
        "tests/test_lock.py",
    ],
    "refresh": [
        "tests/test_routes.py",
        "tests/test_profiles.py",
        "tests/test_persist.py",
        "tests/test_refresh.py",
        "tests/test_lock.py",
        "tests/test_polite.py",
    ],
    "reconcile": [
        "tests/test_persist.py",
        "tests/test_profiles.py",
        "tests/test_rotation.py",
        "tests/test_refresh.py",
    ],
    "persist": ["tests/test_persist.py"],
    "peer": ["tests/test_peer.py"],
    "profile": ["tests/test_routes.py", "tests/test_profiles.py", "tests/test_fastpath.py"],
}
# module -> the functions mutated (Class.method or function; default: the whole module). For
# api and refresh, the parts the core is made of: the peer check and routes, the serving
# decisions and the refresh scheduler; status, audit, metrics and admin plumbing are not.
CORE: dict[str, list[str]] = {
    "api": [
        "Api.peer_allowed",
        "Api._peer",
        "Api.handle",
        "Api._profile",
        "Api._serve",
        "Api._after_refresh",
        "Api.post_refresh",
        "Api.get_credential",
    ],
    "profile": ["Profile.render"],
    "peer": ["peer_credentials"],
    "refresh": [
        "Daemon.load",
        "Daemon.start_refresh",
        "Daemon._refresh",
        "Daemon._has_credentials",
        "Daemon._credential",
        "Daemon._exchange",
        "Daemon._take_grant",
        "Daemon.scheduler",
        "Daemon.lock_due",
        "Daemon.reload",
    ],
}


def mutant_globs(module: str, only: list[str] | None = None) -> list[str]:
    """mutmut's names for the mutants of ``only`` or else ``CORE[module]`` (none: every mutant).

    Names are ``Class.method`` or ``function``, as in ``CORE``.
    """
    out = []
    for name in only or CORE.get(module, []):
        cls, _, func = name.rpartition(".")
        mangled = f"x\u01c1{cls}\u01c1{func}" if cls else f"x_{func}"
        out.append(f"coactive_credd.{WHERE[module]}.{mangled}__mutmut_*")
    return out


def _source(module: str) -> str:
    """The module's file, relative to the package: ``core/engine.py``, ``vault/__init__.py``."""
    path = WHERE[module].replace(".", "/")
    return (
        f"{path}/__init__.py"
        if (ROOT / "daemon" / "coactive_credd" / path).is_dir()
        else f"{path}.py"
    )


def prepare(module: str, timeout_multiplier: float) -> Path:
    work = SCRATCH / module
    shutil.rmtree(work, ignore_errors=True)
    (work / "src").mkdir(parents=True)
    shutil.copytree(ROOT / "daemon" / "coactive_credd", work / "src" / "coactive_credd")
    shutil.copy(ROOT / "client_shim" / "python" / "coactive_token.py", work / "src")
    shutil.copytree(ROOT / "tests", work / "tests")
    shutil.copytree(ROOT / "client_shim", work / "client_shim")  # the shims some tests run
    text = (ROOT / "pyproject.toml").read_text()
    text += "\n[tool.mutmut]\n" + "\n".join(
        [
            'source_paths = ["src"]',
            f'only_mutate = ["src/coactive_credd/{_source(module)}"]',
            f"pytest_add_cli_args_test_selection = {json.dumps(MODULES[module])}",
            # mutmut runs the suite several times in one process: a resource warning from one
            # run surfaces in the next as an error that is nobody's mutant
            # -n 0: mutmut counts the tests that reach a function in its own process, so no
            # xdist workers (pyproject's addopts asks for them)
            'pytest_add_cli_args = ["-p", "no:cacheprovider", "-q", "-x", "-n", "0", '
            '"-W", "ignore::pytest.PytestUnraisableExceptionWarning", '
            '"-W", "ignore::ResourceWarning"]',
            # the tests start subprocesses; forked straight from mutmut's own process, a child
            # they left behind is reaped by mutmut as if it were a worker, and mutmut stops
            'process_isolation = "forkserver"',
            # a mutant that hangs the tests is killed by its timeout, this many times the clean
            # run's time (plus 10 s): lower it to finish sooner, at the cost of slow survivors
            # counted as killed on a busy machine (docs/TESTING.md)
            f"timeout_multiplier = {timeout_multiplier}",
            "timeout_constant = 10.0",
        ]
    )
    (work / "pyproject.toml").write_text(text + "\n")
    (work / "mutants" / "src").mkdir(parents=True)  # on PYTHONPATH from the start (main())
    return work


def score(work: Path) -> dict[str, float]:
    subprocess.run(["mutmut", "export-cicd-stats"], cwd=work, check=True, capture_output=True)
    stats: dict[str, float] = json.loads((work / "mutants" / "mutmut-cicd-stats.json").read_text())
    killed = stats["killed"] + stats.get("timeout", 0)
    judged = killed + stats["survived"] + stats.get("no_tests", 0)
    stats["score"] = round(100 * killed / judged, 1) if judged else 0.0
    stats["not_checked"] = stats["total"] - judged - stats.get("skipped", 0)
    return stats


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("modules", nargs="*", metavar="MODULE", help=", ".join(MODULES))
    ap.add_argument(
        "--only",
        nargs="+",
        metavar="FUNC",
        help="mutate only these functions (Class.method or function) of the one MODULE given",
    )
    ap.add_argument("--max-children", type=int, default=2)
    ap.add_argument("--timeout-multiplier", type=float, default=15.0)
    args = ap.parse_args()
    unknown = sorted(set(args.modules) - set(MODULES))
    if unknown:
        ap.error(f"unknown module(s) {', '.join(unknown)}; choose from {', '.join(MODULES)}")
    if args.only and len(args.modules) != 1:
        ap.error("--only needs exactly one MODULE")
    if shutil.which("mutmut") is None:
        print("mutmut is not installed; run `pip install -e '.[test]'`", file=sys.stderr)
        return 2
    results = {}
    for module in args.modules or list(MODULES):
        work = prepare(module, args.timeout_multiplier)
        env = {
            **os.environ,
            "PYTHONPATH": f"{work}/mutants/src",
            "CI": "",
            # per mutant, the differential fuzz test runs its pinned examples and 60 more
            "COACTIVE_CREDD_FUZZ_EXAMPLES": os.environ.get("COACTIVE_CREDD_FUZZ_EXAMPLES", "60"),
        }
        run = subprocess.run(
            [
                "mutmut",
                "run",
                "--max-children",
                str(args.max_children),
                *mutant_globs(module, args.only),
            ],
            cwd=work,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(work / "mutmut.log", "w"),  # noqa: SIM115 - closed with the process
        )
        if not (work / "mutants" / "mutmut-stats.json").exists():
            print(f"{module}: mutmut failed (exit {run.returncode}) in {work}", file=sys.stderr)
            return 1
        results[module] = score(work)
        (work / "score.json").write_text(json.dumps(results[module], indent=2) + "\n")
        s = results[module]
        print(
            f"{module:10} score {s['score']:5.1f} %  killed {s['killed']}  timeout "
            f"{s.get('timeout', 0)}  survived {s['survived']}  no tests {s.get('no_tests', 0)}  "
            f"not checked {s['not_checked']}  total {s['total']}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
