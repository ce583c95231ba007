"""Before/after in one run: the same measurements on two trees of this project, interleaved.

    python3 bench/compare.py --base REV [--after REV] [--runs 20] [--rounds 5] [--serving-only]

A change on the token path, client start-up or the daemon's start is quoted as medians from
one run against its parent, not against figures from another day: this script checks out
``REV`` in a temporary git worktree and times, for that tree ("before") and this checkout
("after"; or ``--after REV``, checked out the same way, to bisect), each on its own daemon
and fake Coactive:

- the cold start of every client (the sh shim under dash, the git helper's ``get``, the Python
  shim, ``coactive-credd token``, the Node shim, the Go shim built from that tree);
- ``coactive-credd serve`` from exec to its first answer;
- serving with the C load generator: keep-alive at 4 and 16 clients, a connection per request
  at 4 clients (req/s, p50 and p99).

Every round runs both trees in a shuffled order, so drift on a shared machine hits both
alike. Each tree's Python code is found through ``PYTHONPATH`` (its ``daemon/`` and
``client_shim/python/``) and compiled to bytecode first, as an install has it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))

import harness  # noqa: E402


@dataclass
class Tree:
    """One checkout of the project and the daemon serving from it."""

    name: str
    root: Path
    credd: harness.Credd | None = None
    clients: list[tuple[str, list[str], str]] = field(default_factory=list)

    @property
    def pythonpath(self) -> str:
        return f"{self.root / 'daemon'}:{self.root / 'client_shim' / 'python'}"

    def env(self) -> dict[str, str]:
        assert self.credd is not None
        env = self.credd.env
        env["PYTHONPATH"] = self.pythonpath
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["COACTIVE_CREDD_AUTOSTART"] = "0"
        return env


class TreeCredd(harness.Credd):
    """harness.Credd with the tree's code on PYTHONPATH for the daemon and the CLI."""

    pythonpath: str = ""

    @property
    def env(self) -> dict[str, str]:
        env = super().env
        env["PYTHONPATH"] = self.pythonpath
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        return env


@contextlib.contextmanager
def worktree(rev: str) -> Iterator[Path]:
    """``rev`` checked out in a temporary, detached git worktree (removed afterwards)."""
    folder = Path(tempfile.mkdtemp(prefix="ccb-base-", dir="/tmp")) / "tree"
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "-q", "--detach", str(folder), rev],
        check=True,
    )
    try:
        yield folder
    finally:
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "remove", "--force", str(folder)],
            check=False,
            capture_output=True,
        )
        shutil.rmtree(folder.parent, ignore_errors=True)


def compile_tree(root: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "compileall",
            "-q",
            str(root / "daemon" / "coactive_credd"),
            str(root / "client_shim" / "python"),
        ],
        check=True,
        capture_output=True,
    )


def build_go(root: Path, out: Path) -> list[str] | None:
    go = shutil.which("go")
    main = root / "client_shim" / "go" / "cmd" / "coactive-token"
    if not go or not main.is_dir():
        return None
    proc = subprocess.run(
        [go, "build", "-o", str(out), "."],
        cwd=main,
        env=dict(os.environ, CGO_ENABLED="0", GOFLAGS="-mod=mod"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    return [str(out)] if proc.returncode == 0 else None


def client_commands(tree: Tree, workdir: Path) -> list[tuple[str, list[str], str]]:
    """(name, argv, stdin) for every client of ``tree``."""
    assert tree.credd is not None
    host = tree.credd.fake.base_url.split("://", 1)[1]
    sh = shutil.which("dash") or "sh"
    shim = tree.root / "client_shim"
    cmds: list[tuple[str, list[str], str]] = [
        ("coactive-token (sh, dash)", [sh, str(shim / "sh" / "coactive-token")], ""),
        (
            "git-credential-coactive get",
            [sh, str(shim / "sh" / "git-credential-coactive"), "get"],
            f"protocol=http\nhost={host}\n\n",
        ),
        ("python -m coactive_token", [sys.executable, "-m", "coactive_token"], ""),
        ("coactive-credd token", [sys.executable, "-m", "coactive_credd", "token"], ""),
    ]
    node = shutil.which("node")
    entry = shim / "node" / "bin" / "coactive-token.js"
    if node and entry.is_file():
        cmds.append(("Node shim", [node, str(entry)], ""))
    go = build_go(tree.root, workdir / f"go-{tree.name}")
    if go:
        cmds.append(("Go shim", go, ""))
    return cmds


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="the git revision measured as 'before'")
    ap.add_argument("--after", help="the git revision measured as 'after' (default: this checkout)")
    ap.add_argument("--runs", type=int, default=20, help="cold starts per client and tree")
    ap.add_argument("--rounds", type=int, default=5, help="serving and start-up rounds")
    ap.add_argument("--seconds", type=float, default=0.8, help="seconds per serving run")
    ap.add_argument(
        "--serving-only", action="store_true", help="skip the cold starts and the Go build"
    )
    ap.add_argument("--out", type=Path, help="also write the raw figures here, as JSON")
    args = ap.parse_args(argv)

    workdir = harness.short_tmpdir("ccb-cmp-")
    loadgen = harness.build_loadgen(workdir)
    results: dict[str, Any] = {"base": args.base, "cold_ms": {}, "ready_ms": {}, "serving": {}}
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        base_root = stack.enter_context(worktree(args.base))
        after_root = stack.enter_context(worktree(args.after)) if args.after else REPO
        trees = [Tree("before", base_root), Tree("after", after_root)]
        for t in trees:
            compile_tree(t.root)
            c = TreeCredd(
                command=[sys.executable, "-m", "coactive_credd"],
                home=harness.short_tmpdir("ccb-"),
            )
            c.pythonpath = t.pythonpath
            t.credd = stack.enter_context(c)
            c.login()
            c.start()
            t.clients = [] if args.serving_only else client_commands(t, workdir)

        cold: dict[tuple[str, str], list[float]] = {}
        for _ in range(0 if args.serving_only else args.runs):
            order = [(t, cmd) for t in trees for cmd in t.clients]
            random.shuffle(order)
            for t, (name, cmd, stdin) in order:
                ms = harness.time_command(cmd, stdin=stdin, env=t.env()) * 1e3
                cold.setdefault((name, t.name), []).append(ms)

        ready: dict[str, list[float]] = {}
        serving: dict[tuple[str, str], list[dict[str, Any]]] = {}
        modes = [
            ("keep-alive, 4 clients", "keepalive", 4),
            ("keep-alive, 16 clients", "keepalive", 16),
            ("connection per request, 4 clients", "conn", 4),
        ]
        for _ in range(args.rounds):
            order = list(trees)
            random.shuffle(order)
            for t in order:
                assert t.credd is not None
                t.credd.stop()
                ready.setdefault(t.name, []).append(t.credd.start() * 1e3)
                for label, mode, clients in modes:
                    r = harness.run_loadgen(
                        loadgen, t.credd.sock, mode, clients, duration=args.seconds, warmup=0.2
                    )
                    serving.setdefault((label, t.name), []).append(r)

    after = args.after or "this checkout"
    print(f"# before = {args.base}, after = {after}; {time.monotonic() - started:.0f} s\n")
    print("| what | before | after | after/before |")
    print("|---|---|---|---|")
    for name, _cmd, _stdin in trees[1].clients:
        b, a = median(cold.get((name, "before"), [])), median(cold.get((name, "after"), []))
        results["cold_ms"][name] = {"before": b, "after": a}
        print(
            f"| cold start: {name} (ms, median of {args.runs}) | {b:.1f} | {a:.1f} | {a / b:.2f} |"
        )
    b, a = median(ready["before"]), median(ready["after"])
    results["ready_ms"] = {"before": b, "after": a}
    print(
        f"| `serve` exec to ready (ms, median of {args.rounds}) | {b:.0f} | {a:.0f} | {a / b:.2f} |"
    )
    for label, _mode, _clients in modes:
        row: dict[str, dict[str, float]] = {}
        for key, unit in (("rps", "req/s"), ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms")):
            b = median([r[key] for r in serving[(label, "before")]])
            a = median([r[key] for r in serving[(label, "after")]])
            row[key] = {"before": b, "after": a}
            fmt = "{:,.0f}" if key == "rps" else "{:.3f}"
            print(f"| {label}: {unit} | {fmt.format(b)} | {fmt.format(a)} | {a / b:.2f} |")
        results["serving"][label] = row
    errors = sum(r["errors"] for rs in serving.values() for r in rs)
    print(f"\nload generator errors: {errors}")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    shutil.rmtree(workdir, ignore_errors=True)
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
