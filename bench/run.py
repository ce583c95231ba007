"""Run the coactive-credd benchmark suite and write docs/BENCHMARKS.md.

    python bench/run.py                 # the whole suite, ~10 minutes; writes the docs
    python bench/run.py --smoke         # seconds: checks that every part runs, not how fast
    python bench/run.py --parts serving,storm --out /tmp/b

Every comparison is measured in this one run, on this machine, with the same C load
generator (bench/loadgen.c), and reported as medians with ratios to baselines measured here.
Parts whose tools are missing (git, gcc, node, go, the daemon itself) are skipped and listed
as skipped in the results.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import shlex
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness
import report
from harness import REPO, Credd, Skip, median

PARTS = ("serving", "coldstart", "storm", "footprint", "profiles")


@dataclass(frozen=True)
class Plan:
    """How much of everything to do: the full suite or the smoke run."""

    smoke: bool
    clients: tuple[int, ...] = (1, 4, 16, 64)
    serve_seconds: float = 0.8
    serve_warmup: float = 0.2
    serve_reps: int = 3
    cold_runs: int = 21
    storm_callers: int = 1000
    storm_delays: tuple[float, ...] = (0.0, 0.2)
    storm_reps: int = 3
    ready_runs: int = 11
    soak_requests: int = 1_000_000
    soak_warmup_requests: int = 20_000
    idle_seconds: float = 0.0  # at least this idle window; the suite's own length counts
    profiles: int = 1000
    profile_lifetimes: str = "90:210"
    profile_window: float = 60.0


def smoke_plan() -> Plan:
    return Plan(
        smoke=True,
        clients=(1, 4),
        serve_seconds=0.2,
        serve_warmup=0.05,
        serve_reps=1,
        cold_runs=3,
        storm_callers=100,
        storm_reps=1,
        ready_runs=2,
        soak_requests=20_000,
        soak_warmup_requests=2_000,
        idle_seconds=2.0,
        profiles=20,
        profile_lifetimes="6:10",
        profile_window=3.0,
    )


class Suite:
    def __init__(self, plan: Plan, workdir: Path) -> None:
        self.plan = plan
        self.workdir = workdir
        self.results: dict[str, Any] = {"skipped": {}, "notes": []}
        self.credd_cmd = harness.credd_command()
        self._loadgen: Path | None = None
        self._loadgen_error: str | None = None
        self._idle: tuple[Credd, float, float, int] | None = None

    # ---- helpers --------------------------------------------------------------------------

    def loadgen(self) -> Path:
        if self._loadgen is None:
            if self._loadgen_error:
                raise Skip(self._loadgen_error)
            try:
                self._loadgen = harness.build_loadgen(self.workdir)
            except Skip as exc:
                self._loadgen_error = str(exc)
                raise
        return self._loadgen

    def need_credd(self) -> list[str]:
        if not self.credd_cmd:
            raise Skip("coactive-credd is not installed (pip install -e .)")
        try:
            import coactive_credd.testing.fakeupstream  # noqa: F401
        except ImportError as exc:
            raise Skip(f"the fake Coactive cannot be imported: {exc}") from None
        return self.credd_cmd

    @contextlib.contextmanager
    def credd(self, *, expires_in: int = 3600, login: bool = True) -> Iterator[Credd]:
        with harness.new_credd(self.need_credd(), expires_in=expires_in) as c:
            if login:
                c.login()
            yield c

    def skip(self, part: str, reason: str) -> None:
        self.results["skipped"][part] = reason
        print(f"  SKIPPED {part}: {reason}", flush=True)

    def note(self, text: str) -> None:
        self.results["notes"].append(text)
        print(f"  note: {text}", flush=True)

    # ---- 1. serving -----------------------------------------------------------------------

    def serving(self) -> None:
        plan, lg = self.plan, self.loadgen()
        targets: list[tuple[str, str, Path, str, int]] = []
        with contextlib.ExitStack() as stack:
            tsock = stack.enter_context(harness.trivial_server(lg, self.workdir))
            csock, cpid = stack.enter_context(harness.ceiling_server(self.workdir))
            try:
                c = stack.enter_context(self.credd())
                c.start()
                self.results.setdefault("serving_info", {})["daemon_event_loop"] = c.event_loop()
                targets += [
                    ("credd-ka", "(a) coactive-credd, keep-alive", c.sock, "keepalive", c.pid),
                    (
                        "credd-conn",
                        "(b) coactive-credd, connection per request",
                        c.sock,
                        "conn",
                        c.pid,
                    ),
                ]
            except Skip as exc:
                self.skip("serving (a), (b)", str(exc))
            try:
                gsock, gpid = stack.enter_context(harness.git_cache_daemon(self.workdir))
                targets.append(
                    (
                        "git-cache",
                        "(c) git credential-cache--daemon, connection per request",
                        gsock,
                        "gitcache",
                        gpid,
                    )
                )
            except Skip as exc:
                self.skip("serving (c)", str(exc))
            targets += [
                ("ceiling-ka", "(d) asyncio ceiling, keep-alive", csock, "keepalive", cpid),
                (
                    "ceiling-conn",
                    "(d) asyncio ceiling, connection per request",
                    csock,
                    "conn",
                    cpid,
                ),
                ("trivial-ka", "C canned server, keep-alive", tsock, "keepalive", 0),
                ("trivial-conn", "C canned server, connection per request", tsock, "conn", 0),
                ("trivial-git", "C canned server, git's protocol", tsock, "gitcache", 0),
            ]
            targets += self._serving_references(stack)
            runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
            for rep in range(plan.serve_reps):
                for clients in plan.clients:
                    # Rotate the order each round so no server always runs right after another.
                    order = targets[rep % len(targets) :] + targets[: rep % len(targets)]
                    for key, _label, sock, mode, pid in order:
                        cpu0 = harness.cpu_seconds(pid) if pid else 0.0
                        r = harness.run_loadgen(
                            lg,
                            sock,
                            mode,
                            clients,
                            duration=plan.serve_seconds,
                            warmup=plan.serve_warmup,
                        )
                        if pid:
                            # CPU over warm-up + measured window, per request in the window
                            # (a slight over-estimate, the same for every server).
                            used = harness.cpu_seconds(pid) - cpu0
                            share = plan.serve_seconds / (plan.serve_seconds + plan.serve_warmup)
                            r["server_cpu_us_per_req"] = used * share / max(1, r["requests"]) * 1e6
                        runs.setdefault((key, clients), []).append(r)
                print(f"  serving: round {rep + 1}/{plan.serve_reps} done", flush=True)
        rows = []
        for key, label, _sock, mode, _pid in targets:
            for clients in plan.clients:
                rs = runs[(key, clients)]
                rows.append(
                    {
                        "key": key,
                        "label": label,
                        "mode": mode,
                        "clients": clients,
                        "rps": median([r["rps"] for r in rs]),
                        "p50_ms": median([r["p50_ms"] for r in rs]),
                        "p99_ms": median([r["p99_ms"] for r in rs]),
                        "max_ms": max(r["max_ms"] for r in rs),
                        "errors": sum(r["errors"] for r in rs),
                        "first_error": next((r["first_error"] for r in rs if r["first_error"]), ""),
                        "cpu_us_per_req": median(
                            [r.get("server_cpu_us_per_req", float("nan")) for r in rs]
                        ),
                        "runs": len(rs),
                    }
                )
        self.results["serving"] = {
            "seconds_per_run": plan.serve_seconds,
            "warmup": plan.serve_warmup,
            "rows": rows,
            **self.results.pop("serving_info", {}),
        }

    def _serving_references(
        self, stack: contextlib.ExitStack
    ) -> list[tuple[str, str, Path, str, int]]:
        """Where the time goes: the ceiling and aiohttp's own floor on the daemon's event loop,
        aiohttp's parser alone, and the daemon on the other event loop."""
        refs: list[tuple[str, str, Path, str, int]] = []
        if self.plan.smoke:
            return refs
        try:
            import uvloop  # noqa: F401

            uv = True
        except ImportError:
            uv = False
            self.skip("serving references on uvloop", "uvloop is not installed")
        on = " on uvloop" if uv else ""
        if uv:
            usock, upid = stack.enter_context(harness.ceiling_server(self.workdir, uvloop=True))
            refs += [
                (
                    "ceiling-uv-ka",
                    "ref: asyncio ceiling on uvloop, keep-alive",
                    usock,
                    "keepalive",
                    upid,
                ),
                (
                    "ceiling-uv-conn",
                    "ref: asyncio ceiling on uvloop, connection per request",
                    usock,
                    "conn",
                    upid,
                ),
            ]
        asock, apid = stack.enter_context(
            harness.ceiling_server(self.workdir, api="aiohttp", uvloop=uv)
        )
        psock, ppid = stack.enter_context(
            harness.ceiling_server(self.workdir, api="parser", uvloop=uv)
        )
        refs += [
            (
                "aiohttp-ka",
                f"ref: aiohttp web.Server{on}, canned web.Response, keep-alive",
                asock,
                "keepalive",
                apid,
            ),
            (
                "aiohttp-conn",
                f"ref: aiohttp web.Server{on}, canned web.Response, connection per request",
                asock,
                "conn",
                apid,
            ),
            (
                "parser-ka",
                f"ref: asyncio Protocol + aiohttp's C parser{on}, keep-alive",
                psock,
                "keepalive",
                ppid,
            ),
            (
                "parser-conn",
                f"ref: asyncio Protocol + aiohttp's C parser{on}, connection per request",
                psock,
                "conn",
                ppid,
            ),
        ]
        if not uv:
            return refs
        # The same daemon as installed without the `fast` extra: uvloop cannot be imported.
        wrapper = [
            sys.executable,
            "-c",
            "import sys; sys.modules['uvloop'] = None; "
            "from coactive_credd.cli.main import main; sys.exit(main())",
        ]
        c = stack.enter_context(harness.Credd(command=wrapper, home=harness.short_tmpdir("ccb-")))
        c.login()
        c.start()
        self.results.setdefault("serving_info", {})["stdlib_daemon_event_loop"] = c.event_loop()
        refs += [
            (
                "credd-std-ka",
                "ref: (a) on the stdlib asyncio loop, keep-alive",
                c.sock,
                "keepalive",
                c.pid,
            ),
            (
                "credd-std-conn",
                "ref: (b) on the stdlib asyncio loop, connection per request",
                c.sock,
                "conn",
                c.pid,
            ),
        ]
        return refs

    # ---- 2. cold start --------------------------------------------------------------------

    def _shims(self, c: Credd) -> list[tuple[str, str, list[str], str, bool]]:
        """(key, label, argv, stdin, must print) for every shim found here."""
        host = c.fake.base_url.split("://", 1)[1]
        git_in = f"protocol=http\nhost={host}\n\n"
        found: list[tuple[str, str, list[str], str, bool]] = []
        sh_dir = REPO / "client_shim" / "sh"
        token = self._sh_shim(sh_dir, "coactive-token")
        if token:
            found.append(("coactive-token", "`coactive-token`", [token], "", True))
        else:
            self.skip("coldstart coactive-token", "not installed and not in client_shim/sh")
        helper = self._sh_shim(sh_dir, "git-credential-coactive")
        if helper:
            found.append(
                (
                    "git-credential-coactive",
                    "`git-credential-coactive get`",
                    [helper, "get"],
                    git_in,
                    True,
                )
            )
        else:
            self.skip(
                "coldstart git-credential-coactive", "not installed and not in client_shim/sh"
            )
        py_cli = harness.script("coactive-token-py")
        if py_cli:
            found.append(
                ("python-shim", "Python shim CLI (`coactive-token-py`)", [py_cli], "", True)
            )
        found.append(
            (
                "python-shim-m",
                "Python shim (`python -m coactive_token`)",
                [sys.executable, "-m", "coactive_token"],
                "",
                True,
            )
        )
        node = _node_shim(self.workdir)
        if isinstance(node, str):
            self.skip("coldstart node shim", node)
        else:
            found.append(("node-shim", "Node shim", node, "", True))
        go = _go_shim(self.workdir)
        if isinstance(go, str):
            self.skip("coldstart go shim", go)
        else:
            argv, info = go
            self.results.setdefault("coldstart_info", {})["go"] = info
            found.append(("go-shim", "Go shim", argv, "", True))
        found.append(
            ("credd-token", "`coactive-credd token`", [*self.need_credd(), "token"], "", True)
        )
        return found

    def _sh_shim(self, sh_dir: Path, name: str) -> str | None:
        """The shell shim as this checkout has it. pip copies ``script-files`` at install time,
        so an installed copy can be older than the source; time the source and say so."""
        src = _existing(sh_dir / name)
        installed = harness.script(name)
        if src and installed and Path(installed).read_bytes() != Path(src).read_bytes():
            self.note(
                f"the installed `{name}` ({installed}) differs from client_shim/sh/{name} "
                "(pip copied it at an earlier install); the cold start times the source"
            )
        return src or installed

    def _coldstart_references(self) -> list[tuple[str, str, list[str], str, bool]]:
        """What the shims cannot avoid: the start of the tools and runtimes they are made of."""
        refs: list[tuple[str, str, list[str], str, bool]] = [
            (
                "ref-python-S",
                "ref: `python -S -c pass` (no `site`)",
                [sys.executable, "-S", "-c", "pass"],
                "",
                False,
            ),
            (
                "ref-http-client",
                "ref: `python -c 'import http.client'`",
                [sys.executable, "-c", "import http.client"],
                "",
                False,
            ),
        ]
        curl = shutil.which("curl")
        if curl:
            refs.append(("ref-curl", "ref: `curl --version`", [curl, "--version"], "", True))
        node = shutil.which("node")
        if node:
            refs.append(("ref-node", "ref: `node -e 0`", [node, "-e", "0"], "", False))
        go = shutil.which("go")
        if go:
            d = self.workdir / "go-empty"
            d.mkdir(exist_ok=True)
            (d / "main.go").write_text("package main\n\nfunc main() {}\n")
            proc = subprocess.run(
                [go, "build", "-o", str(d / "empty"), "main.go"],
                cwd=d,
                env=dict(os.environ, CGO_ENABLED="0"),
                capture_output=True,
                text=True,
                timeout=600,
            )
            if proc.returncode == 0:
                refs.append(
                    ("ref-go-empty", "ref: an empty Go program", [str(d / "empty")], "", False)
                )
            else:
                self.skip("coldstart empty Go program", proc.stderr.strip()[-300:])
        return refs

    def coldstart(self) -> None:
        plan = self.plan
        git = shutil.which("git")
        with contextlib.ExitStack() as stack:
            c = stack.enter_context(self.credd())
            c.start()
            cmds = self._shims(c)
            cmds.append(
                ("python-pass", "`python -c pass`", [sys.executable, "-c", "pass"], "", False)
            )
            cmds += self._coldstart_references()
            git_env = harness.git_env()
            if git:
                gsock, _ = stack.enter_context(harness.git_cache_daemon(self.workdir))
                cmds.append(
                    (
                        "git-cache-get",
                        "`git credential-cache get`",
                        [git, "credential-cache", "--socket", str(gsock), "get"],
                        f"protocol=https\nhost={harness.GIT_HOST}\n\n",
                        True,
                    )
                )
            else:
                self.skip("coldstart git credential-cache get", "git is not installed")
            env = c.env
            # Every Python command should load the project from bytecode, as an install does.
            compiles = {
                key: harness.source_compiles(argv, stdin=stdin, env=env)
                for key, _label, argv, stdin, _must in cmds
                if key in ("python-shim", "python-shim-m", "credd-token", "python-pass")
            }
            for key, paths in compiles.items():
                if paths:
                    self.note(f"{key} compiled {len(paths)} module(s) from source: {paths[:5]}")
            self.results.setdefault("coldstart_info", {})["compiled_from_source"] = compiles
            times: dict[str, list[float]] = {k: [] for k, *_ in cmds}
            failed: dict[str, str] = {}
            for _ in range(plan.cold_runs):
                order = list(cmds)
                random.shuffle(order)  # interleaved, in a new order each round
                for key, _label, argv, stdin, must in order:
                    if key in failed:
                        continue
                    try:
                        times[key].append(
                            harness.time_command(
                                argv,
                                stdin=stdin,
                                env=git_env if key == "git-cache-get" else env,
                                check_out=must,
                            )
                        )
                    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
                        failed[key] = str(exc)
                        self.note(f"cold start of {key} failed: {exc}")
        rows = []
        for key, label, argv, _stdin, _must in cmds:
            ts = sorted(times[key])
            if not ts:
                continue
            rows.append(
                {
                    "key": key,
                    "label": label,
                    "argv": " ".join(shlex.quote(a) for a in argv),
                    "median_ms": median(ts) * 1e3,
                    "min_ms": ts[0] * 1e3,
                    "p90_ms": ts[int(0.9 * (len(ts) - 1))] * 1e3,
                    "runs": len(ts),
                }
            )
        self.results["coldstart"] = {
            "rows": rows,
            "failed": failed,
            **self.results.pop("coldstart_info", {}),
        }

    # ---- 3. refresh storm -----------------------------------------------------------------

    def storm(self) -> None:
        plan, lg = self.plan, self.loadgen()
        n = plan.storm_callers
        # The callers arrive when the cached token has just stopped being servable: every one
        # waits for the same login. (A min_ttl beyond what the last token held no longer works
        # for this: the daemon answers such a request 400 without a login.)
        target = "/v1/token?profile=default"
        rows: list[dict[str, Any]] = []
        floors: list[dict[str, Any]] = []
        with contextlib.ExitStack() as stack:
            c = stack.enter_context(self.credd())
            c.start()
            tsock = stack.enter_context(harness.trivial_server(lg, self.workdir))
            csock, _ = stack.enter_context(harness.ceiling_server(self.workdir))
            variants = (
                ("conn", False, "a new connection each"),
                ("keepalive", True, "connected beforehand"),
            )
            for mode, pre, what in variants:
                for name, sock in (("C canned server", tsock), ("asyncio ceiling", csock)):
                    rs = [
                        harness.run_loadgen(lg, sock, mode, n, per_client=1, preconnect=pre)
                        for _ in range(plan.storm_reps)
                    ]
                    floors.append(
                        {
                            "server": name,
                            "callers": what,
                            "p50_ms": median([r["p50_ms"] for r in rs]),
                            "p99_ms": median([r["p99_ms"] for r in rs]),
                            "max_ms": max(r["max_ms"] for r in rs),
                        }
                    )
            for delay in plan.storm_delays:
                for mode, pre, what in variants:
                    rs, logins = [], []
                    for _ in range(plan.storm_reps):
                        # A token that lives 4 s: servable for 2 s (the skew is at most half
                        # its life) and too short-lived to be refreshed ahead, so the first
                        # caller after that finds none and every caller waits for one login.
                        c.fake.delay = 0.0
                        c.fake.expires_in = 4
                        status, body = harness.http_get(
                            c.sock, "/v1/token/refresh?profile=default", method="POST"
                        )
                        if status != 200:
                            raise RuntimeError(f"forced refresh answered {status}: {body[:200]!r}")
                        c.fake.expires_in = 3600
                        c.fake.delay = delay
                        time.sleep(2.2)
                        before = c.fake.logins
                        r = harness.run_loadgen(
                            lg,
                            c.sock,
                            mode,
                            n,
                            per_client=1,
                            preconnect=pre,
                            path=target,
                            timeout=60,
                        )
                        logins.append(c.fake.logins - before)
                        rs.append(r)
                    c.fake.delay = 0.0
                    rows.append(
                        {
                            "delay_ms": delay * 1e3,
                            "callers": what,
                            "n": n,
                            "logins": logins,
                            "ok": sum(r["requests"] for r in rs),
                            "errors": sum(r["errors"] for r in rs),
                            "first_error": next(
                                (r["first_error"] for r in rs if r["first_error"]), ""
                            ),
                            "p50_ms": median([r["p50_ms"] for r in rs]),
                            "p99_ms": median([r["p99_ms"] for r in rs]),
                            "max_ms": max(r["max_ms"] for r in rs),
                            "runs": len(rs),
                        }
                    )
                    print(
                        f"  storm: {delay * 1e3:.0f} ms upstream, callers {what}: logins {logins}",
                        flush=True,
                    )
        self.results["storm"] = {"rows": rows, "floors": floors, "target": target}

    # ---- 4. footprint ---------------------------------------------------------------------

    def start_idle_daemon(self, stack: contextlib.ExitStack) -> None:
        """Start a daemon that only idles, for the whole length of the suite."""
        try:
            c = stack.enter_context(self.credd())
            c.start()
            status, _ = c.get()
            if status != 200:
                raise RuntimeError(f"first token fetch answered {status}")
            # Let start-up work settle before the window opens.
            time.sleep(0.5 if self.plan.smoke else 2.0)
            self._idle = (
                c,
                time.monotonic(),
                harness.cpu_seconds(c.pid),
                harness.context_switches(c.pid),
            )
        except Skip as exc:
            self.skip("footprint idle CPU", str(exc))
            self._idle = None

    def finish_idle(self) -> None:
        if self._idle is None:
            return
        c, t0, cpu0, sw0 = self._idle
        left = self.plan.idle_seconds - (time.monotonic() - t0)
        if left > 0:
            print(f"  footprint: idling {left:.0f} s more for the idle window", flush=True)
            time.sleep(left)
        window = time.monotonic() - t0
        cpu = harness.cpu_seconds(c.pid) - cpu0
        self.results.setdefault("footprint", {})["idle"] = {
            "window_s": window,
            "cpu_s": cpu,
            "cpu_s_per_10min": cpu * 600 / window,
            "wakeups": harness.context_switches(c.pid) - sw0,
            "wakeups_per_min": (harness.context_switches(c.pid) - sw0) * 60 / window,
            "rss_kib": harness.rss_kib(c.pid),
            "clock_tick_s": 1 / harness.CLK_TCK,
        }

    def footprint(self) -> None:
        plan, lg = self.plan, self.loadgen()
        fp = self.results.setdefault("footprint", {})
        # exec-to-ready, interleaved with the import it cannot avoid.
        ready: list[float] = []
        imports: list[float] = []
        with self.credd() as c:
            for _ in range(plan.ready_runs):
                imports.append(
                    harness.time_command(
                        [sys.executable, "-c", "import aiohttp.web"], check_out=False
                    )
                )
                ready.append(c.start())
                c.stop()
        fp["ready"] = {
            "exec_to_ready_ms": median(ready) * 1e3,
            "import_aiohttp_web_ms": median(imports) * 1e3,
            "runs": len(ready),
        }
        # RSS after start, after a warm-up, after a million requests.
        with self.credd() as c:
            c.start()
            rss_start = harness.rss_kib(c.pid)
            harness.run_loadgen(lg, c.sock, "keepalive", 16, requests=plan.soak_warmup_requests)
            rss_warm = harness.rss_kib(c.pid)
            cpu0 = harness.cpu_seconds(c.pid)
            r = harness.run_loadgen(
                lg, c.sock, "keepalive", 16, requests=plan.soak_requests, timeout=60
            )
            cpu = harness.cpu_seconds(c.pid) - cpu0
            time.sleep(0.5)
            rss_end = harness.rss_kib(c.pid)
            # New connections too: per-connection state that leaks shows here, not above.
            r2 = harness.run_loadgen(
                lg, c.sock, "conn", 4, requests=plan.soak_requests // 10, timeout=60
            )
            rss_conn = harness.rss_kib(c.pid)
        fp["soak"] = {
            "rss_after_start_kib": rss_start,
            "rss_after_warmup_kib": rss_warm,
            "warmup_requests": plan.soak_warmup_requests,
            "requests": r["requests"],
            "errors": r["errors"],
            "rps": r["rps"],
            "cpu_us_per_req": cpu / max(1, r["requests"]) * 1e6,
            "rss_after_requests_kib": rss_end,
            "growth_kib": rss_end - rss_warm,
            "conn_requests": r2["requests"],
            "rss_after_conn_kib": rss_conn,
        }

    # ---- 5. many profiles -----------------------------------------------------------------

    def profiles(self) -> None:
        plan = self.plan
        n = plan.profiles
        with self.credd(login=False) as c:
            t0 = time.monotonic()
            proc = subprocess.run(
                [
                    sys.executable,
                    str(harness.BENCH_DIR / "login_many.py"),
                    "--count",
                    str(n),
                    "--base-url",
                    c.fake.base_url,
                    "--lifetimes",
                    plan.profile_lifetimes,
                ],
                input=c.personal_token + "\n",
                text=True,
                env=c.env,
                capture_output=True,
                timeout=1800,
            )
            if proc.returncode != 0:
                raise RuntimeError(f"login_many failed: {proc.stderr.strip()[-500:]}")
            setup_s = time.monotonic() - t0
            lo, hi = (int(x) for x in plan.profile_lifetimes.split(":"))
            c.fake.expires_in = (lo + hi) // 2
            ready_s = c.start(timeout=120)
            rss_start = harness.rss_kib(c.pid)
            logins0, cpu0, t_start = c.fake.logins, harness.cpu_seconds(c.pid), time.monotonic()
            # Every profile asked once, over one keep-alive connection.
            bad = _fetch_all(c, [f"p{i:04d}" for i in range(n)])
            rss_served = harness.rss_kib(c.pid)
            left = plan.profile_window - (time.monotonic() - t_start)
            if left > 0:
                time.sleep(left)
            window = time.monotonic() - t_start
            cpu = harness.cpu_seconds(c.pid) - cpu0
            logins = c.fake.logins - logins0
            rss_end = harness.rss_kib(c.pid)
            # Refreshed tokens reach the vault in batches; a clean stop writes the last one.
            # Charging that write to the window's logins too gives the full cost per login.
            cpu_with_stop = c.stop_cpu() - cpu0
            logins_with_stop = c.fake.logins - logins0
        self.results["profiles"] = {
            "profiles": n,
            "lifetimes_s": plan.profile_lifetimes,
            "setup_s": setup_s,
            "exec_to_ready_ms": ready_s * 1e3,
            "rss_after_start_kib": rss_start,
            "rss_after_serving_all_kib": rss_served,
            "rss_end_kib": rss_end,
            "window_s": window,
            "logins": logins,
            "cpu_s": cpu,
            "cpu_ms_per_login": cpu / logins * 1e3 if logins else None,
            "cpu_s_with_stop": cpu_with_stop,
            "cpu_ms_per_login_with_stop": (
                cpu_with_stop / logins_with_stop * 1e3 if logins_with_stop else None
            ),
            "fetch_errors": bad,
        }

    # ---- driver ---------------------------------------------------------------------------

    def run(self, parts: list[str]) -> None:
        with contextlib.ExitStack() as stack:
            if "footprint" in parts:
                self.start_idle_daemon(stack)
            for part in parts:
                print(f"== {part}", flush=True)
                t0 = time.monotonic()
                fn: Callable[[], None] = getattr(self, part)
                try:
                    fn()
                except Skip as exc:
                    self.skip(part, str(exc))
                except Exception as exc:
                    self.results.setdefault("failed", {})[part] = f"{type(exc).__name__}: {exc}"
                    traceback.print_exc()
                load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
                self.results.setdefault("load_after_part", {})[part] = load
                print(f"   {part}: {time.monotonic() - t0:.0f} s (load {load})", flush=True)
            if "footprint" in parts:
                self.finish_idle()


def _existing(p: Path) -> str | None:
    return str(p) if p.is_file() and os.access(p, os.X_OK) else None


def _node_shim(workdir: Path) -> list[str] | str:
    node = shutil.which("node")
    d = REPO / "client_shim" / "node"
    if not d.is_dir():
        return "no Node shim in client_shim/node yet"
    if not node:
        return "node is not installed"
    pkg = d / "package.json"
    if pkg.is_file():
        meta = json.loads(pkg.read_text())
        bins = meta.get("bin")
        entry = next(iter(bins.values())) if isinstance(bins, dict) and bins else bins
        if isinstance(entry, str) and (d / entry).is_file():
            return [node, str(d / entry)]
    for cand in sorted(d.rglob("*.js")) + sorted(d.rglob("*.mjs")) + sorted(d.rglob("*.cjs")):
        if (
            "node_modules" not in cand.parts
            and "test" not in cand.name
            and cand.read_text(errors="replace").startswith("#!")
        ):
            return [node, str(cand)]
    return "found no executable entry point in client_shim/node"


def _go_shim(workdir: Path) -> tuple[list[str], dict[str, Any]] | str:
    go = shutil.which("go")
    d = REPO / "client_shim" / "go"
    if not d.is_dir():
        return "no Go shim in client_shim/go yet"
    if not go:
        return "go is not installed"
    cli = d / "cmd" / "coactive-token"
    mains = [cli] if cli.is_dir() else []
    mains += sorted(
        {
            p.parent
            for p in d.rglob("*.go")
            if not p.name.endswith("_test.go") and "package main" in p.read_text(errors="replace")
        }
        - {cli}
    )
    if not mains:
        return "found no main package in client_shim/go"
    out = workdir / "coactive-token-go"
    env = dict(os.environ, CGO_ENABLED="0", GOFLAGS="-mod=mod")
    proc = subprocess.run(
        [go, "build", "-o", str(out), "."],
        cwd=mains[0],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode != 0:
        return f"go build failed: {proc.stderr.strip()[-300:]}"
    deps = subprocess.run(
        [go, "list", "-deps", "."],
        cwd=mains[0],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    ).stdout.split()
    version = subprocess.run([go, "version"], capture_output=True, text=True).stdout.strip()
    info = {
        "package": str(mains[0].relative_to(REPO)),
        "links_net_http": "net/http" in deps,
        "go": version,
        "binary_kib": out.stat().st_size // 1024,
    }
    return [str(out)], info


def _fetch_all(c: Credd, names: list[str]) -> int:
    """GET /v1/token for every profile over one keep-alive connection; returns the failures."""
    import http.client
    import socket

    class UnixConnection(http.client.HTTPConnection):
        def connect(self) -> None:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(60)
            s.connect(str(c.sock))
            self.sock = s

    conn = UnixConnection("localhost")
    bad = 0
    try:
        for name in names:
            conn.request("GET", f"/v1/token?profile={name}")
            resp = conn.getresponse()
            resp.read()
            bad += resp.status != 200
    finally:
        conn.close()
    return bad


def machine() -> dict[str, str]:
    def out(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    lscpu = out(["lscpu"])
    model = next(
        (ln.split(":", 1)[1].strip() for ln in lscpu.splitlines() if ln.startswith("Model name")),
        "",
    )
    versions = {}
    for mod in ("aiohttp", "cryptography"):
        try:
            versions[mod] = __import__(mod).__version__
        except ImportError:
            versions[mod] = "missing"
    return {
        "nproc": out(["nproc"]),
        "cpu": model,
        "uname": out(["uname", "-srmv"]),
        "python": platform.python_version(),
        "aiohttp": versions["aiohttp"],
        "cryptography": versions["cryptography"],
        "git": out(["git", "--version"]),
        "gcc": out(["gcc", "--version"]).splitlines()[0] if out(["gcc", "--version"]) else "",
        "memory": next(
            (
                f"{int(ln.split()[1]) / 2**20:.1f} GiB RAM"
                for ln in Path("/proc/meminfo").read_text().splitlines()
                if ln.startswith("MemTotal:")
            ),
            "",
        ),
        "load_before": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--smoke", action="store_true", help="a seconds-long run that checks the scripts work"
    )
    parser.add_argument(
        "--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}"
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="write BENCHMARKS.md, the plot and results.json here "
        "(default: docs/ for the full run, a temp folder for --smoke)",
    )
    parser.add_argument(
        "--idle-seconds",
        type=float,
        help="make the idle-CPU window at least this long "
        "(the suite's own length counts; 600 for the full 10 minutes)",
    )
    parser.add_argument(
        "--from-results",
        type=Path,
        metavar="JSON",
        help="measure nothing: re-render the page and plot from a results.json of an earlier run",
    )
    args = parser.parse_args(argv)
    if args.from_results:
        results = json.loads(args.from_results.read_text())
        out = args.out or (REPO / "docs")
        report.write(results, out)
        print(f"wrote {out / 'BENCHMARKS.md'} from {args.from_results}")
        return 0
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown parts: {', '.join(sorted(unknown))}")
    plan = smoke_plan() if args.smoke else Plan(smoke=False)
    if args.idle_seconds is not None:
        plan = Plan(**{**asdict(plan), "idle_seconds": args.idle_seconds})
    out = args.out or (harness.short_tmpdir("ccb-out-") if args.smoke else REPO / "docs")
    out.mkdir(parents=True, exist_ok=True)
    workdir = harness.short_tmpdir("ccb-")
    # Bytecode as a real install has it (pip compiles on install), and child processes that
    # may write bytecode like a user's do: with PYTHONDONTWRITEBYTECODE=1 and no .pyc, every
    # Python client start would pay for compiling the project again.
    bytecode = {
        "compiled": harness.compile_bytecode(),
        "dont_write_bytecode_was_set": bool(os.environ.pop("PYTHONDONTWRITEBYTECODE", None)),
    }
    # SIGTERM (a CI timeout) still stops every server this run started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.monotonic()
    suite = Suite(plan, workdir)
    suite.results["meta"] = {
        "command": " ".join(
            ["python bench/run.py", *(shlex.quote(a) for a in (argv or sys.argv[1:]))]
        ),
        "smoke": plan.smoke,
        "parts": parts,
        "plan": asdict(plan),
        "machine": machine(),
        "bytecode": bytecode,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    try:
        suite.run(parts)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    suite.results["meta"]["seconds"] = time.monotonic() - started
    suite.results["meta"]["load_after"] = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    # docs/ gets the page and the plot; the raw figures of a full run stay beside the scripts.
    raw = (
        harness.BENCH_DIR / "results.json"
        if args.out is None and not plan.smoke
        else out / "results.json"
    )
    raw.write_text(json.dumps(suite.results, indent=1, default=str) + "\n")
    report.write(suite.results, out)
    print(f"wrote {out / 'BENCHMARKS.md'} in {suite.results['meta']['seconds']:.0f} s", flush=True)
    return 1 if suite.results.get("failed") else 0


if __name__ == "__main__":
    sys.exit(main())
