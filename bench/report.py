"""Turn the suite's results into docs/BENCHMARKS.md and the latency-vs-concurrency plot."""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
PLOT_NAME = "bench-latency.png"
MIB = 1024.0
# The four servers of the issue, then the generator's own limit.
PLOTTED = (
    ("credd-ka", "(a) coactive-credd, keep-alive", "C0", "-"),
    ("credd-conn", "(b) coactive-credd, new connection", "C1", "-"),
    ("git-cache", "(c) git credential-cache--daemon", "C2", "-"),
    ("ceiling-ka", "(d) asyncio ceiling, keep-alive", "C3", "-"),
    ("ceiling-conn", "(d) asyncio ceiling, new connection", "C3", "--"),
    ("trivial-ka", "C canned server, keep-alive (generator limit)", "0.5", ":"),
)


def _f(x: float | None, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:,.{digits}f}"


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not b or math.isnan(a) or math.isnan(b):
        return None
    return a / b


def _rps(row: dict[str, Any] | None) -> float | None:
    return None if row is None else float(row["rps"])


def _x(r: float | None) -> str:
    return "-" if r is None else f"{r:.2f}x"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return [*out, ""]


class Lookup:
    def __init__(self, results: dict[str, Any]) -> None:
        self.r = results

    def serve(self, key: str, clients: int) -> dict[str, Any] | None:
        for row in self.r.get("serving", {}).get("rows", []):
            if row["key"] == key and row["clients"] == clients:
                return dict(row)
        return None

    def cold(self, key: str) -> float | None:
        for row in self.r.get("coldstart", {}).get("rows", []):
            if row["key"] == key:
                return float(row["median_ms"])
        return None


def targets(results: dict[str, Any]) -> list[tuple[str, str, str, bool | None]]:
    """(what, target, measured, met) for every target of the issue."""
    lk = Lookup(results)
    out: list[tuple[str, str, str, bool | None]] = []

    def add(what: str, target: str, fn: Callable[[], tuple[str, bool | None]]) -> None:
        try:
            measured, ok = fn()
        except (KeyError, TypeError, ValueError, ZeroDivisionError):
            measured, ok = "not measured", None
        out.append((what, target, measured, ok))

    def ka4() -> tuple[str, bool | None]:
        row = lk.serve("credd-ka", 4)
        if row is None:
            return "not measured", None
        ok = row["p50_ms"] <= 0.25 and row["p99_ms"] <= 1.0
        return f"{row['p50_ms']:.3f} ms / {row['p99_ms']:.3f} ms", ok

    def ka16() -> tuple[str, bool | None]:
        a, d, c = lk.serve("credd-ka", 16), lk.serve("ceiling-ka", 16), lk.serve("git-cache", 16)
        if a is None:
            return "not measured", None
        rd, rc = _ratio(a["rps"], _rps(d)), _ratio(a["rps"], _rps(c))
        ok = None if rd is None or rc is None else rd >= 0.5 and rc >= 0.5
        u = lk.serve("ceiling-uv-ka", 16)
        uv = f" (the ceiling on uvloop: {_x(_ratio(a['rps'], _rps(u)))})" if u else ""
        return (
            f"{a['rps']:,.0f}/s = {_x(rd)} ceiling ({_f(_rps(d), 0)}/s){uv}, "
            f"{_x(rc)} git ({_f(_rps(c), 0)}/s)",
            ok,
        )

    def conn4() -> tuple[str, bool | None]:
        b, c, d = lk.serve("credd-conn", 4), lk.serve("git-cache", 4), lk.serve("ceiling-conn", 4)
        if b is None or c is None:
            return "not measured", None
        rb, rd = _ratio(b["rps"], c["rps"]), _ratio(_rps(d), c["rps"])
        ok = None if rb is None else rb >= 0.25
        u = lk.serve("ceiling-uv-conn", 4)
        uv = f", on uvloop {_x(_ratio(_rps(u), c['rps']))}" if u else ""
        return (
            f"{b['rps']:,.0f}/s = {_x(rb)} git ({c['rps']:,.0f}/s); "
            f"the asyncio ceiling: {_x(rd)}{uv}",
            ok,
        )

    def cold(key: str, limit: float) -> Callable[[], tuple[str, bool | None]]:
        def fn() -> tuple[str, bool | None]:
            v, g = lk.cold(key), lk.cold("git-cache-get")
            r = _ratio(v, g)
            if r is None:
                return "not measured", None
            return f"{v:.1f} ms = {_x(r)} ({g:.1f} ms)", r <= limit

        return fn

    def token_cold() -> tuple[str, bool | None]:
        v, p = lk.cold("credd-token"), lk.cold("python-pass")
        r = _ratio(v, p)
        if r is None:
            return "not measured", None
        return f"{v:.1f} ms = {_x(r)} `python -c pass` ({p:.1f} ms)", r <= 1.5

    def storm() -> tuple[str, bool | None]:
        rows = results["storm"]["rows"]
        parts, ok = [], True
        for row in rows:
            one = all(n == 1 for n in row["logins"])
            fast = row["p99_ms"] <= row["delay_ms"] + 50
            ok = ok and one and fast and not row["errors"]
            parts.append(
                f"{row['delay_ms']:.0f} ms, {row['callers']}: logins {row['logins']}, "
                f"p99 {row['p99_ms']:.0f} ms"
            )
        return "; ".join(parts), ok

    def rss() -> tuple[str, bool | None]:
        s = results["footprint"]["soak"]
        start, growth = s["rss_after_start_kib"] / MIB, s["growth_kib"] / MIB
        return (
            f"{start:.1f} MiB / {growth:+.2f} MiB after {s['requests']:,} requests",
            start <= 50 and growth <= 2,
        )

    def idle() -> tuple[str, bool | None]:
        i = results["footprint"]["idle"]
        return (
            f"{i['cpu_s']:.2f} s over {i['window_s'] / 60:.1f} min → "
            f"{i['cpu_s_per_10min']:.2f} s per 10 min ({i['wakeups_per_min']:.1f} wake-ups/min)",
            i["cpu_s_per_10min"] <= 0.1,
        )

    def ready() -> tuple[str, bool | None]:
        r = results["footprint"]["ready"]
        x = r["exec_to_ready_ms"] / r["import_aiohttp_web_ms"]
        return (
            f"{r['exec_to_ready_ms']:.0f} ms = {x:.2f}x ({r['import_aiohttp_web_ms']:.0f} ms)",
            x <= 1.2,
        )

    def many() -> tuple[str, bool | None]:
        p = results["profiles"]
        peak = max(p["rss_after_serving_all_kib"], p["rss_end_kib"]) / MIB
        return f"{peak:.1f} MiB ({p['profiles']:,} profiles)", peak <= 80

    add("keep-alive, 4 clients: p50 / p99", "≤ 0.25 ms / ≤ 1 ms", ka4)
    add("keep-alive throughput, 16 clients", "≥ 0.5 x ceiling and ≥ 0.5 x git", ka16)
    add("new connection per request, 4 clients", "≥ 0.25 x git", conn4)
    add("Go shim cold start", "≤ 1.0 x `git credential-cache get`", cold("go-shim", 1.0))
    add(
        "`coactive-token` cold start",
        "≤ 3 x `git credential-cache get`",
        cold("coactive-token", 3.0),
    )
    add(
        "`git-credential-coactive get` cold start",
        "≤ 3 x `git credential-cache get`",
        cold("git-credential-coactive", 3.0),
    )
    add("refresh storm", "1 login; p99 ≤ upstream + 50 ms", storm)
    add("idle RSS / growth after 1M requests", "≤ 50 MiB / ≤ 2 MiB", rss)
    add("idle CPU", "≤ 0.1 s per 10 min", idle)
    add("exec to ready", "≤ 1.2 x `import aiohttp.web`", ready)
    add("`coactive-credd token` cold start", "≤ 1.5 x `python -c pass`", token_cold)
    add("1,000 profiles", "RSS ≤ 80 MiB", many)
    return out


def _verdict(ok: bool | None) -> str:
    return {True: "met", False: "**missed**", None: "-"}[ok]


def plot(results: dict[str, Any], path: Path, *, install: bool) -> str | None:
    """Draw p50 and p99 latency and throughput against concurrency; returns why not, if not."""
    try:
        import matplotlib
    except ImportError:
        if not install:
            return "matplotlib is not installed (`pip install matplotlib`)"
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "matplotlib"], check=False
        )
        try:
            import matplotlib
        except ImportError:
            return "matplotlib could not be installed (`pip install matplotlib`)"
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lk = Lookup(results)
    rows = results.get("serving", {}).get("rows", [])
    clients = sorted({r["clients"] for r in rows})
    if not clients:
        return "no serving results to plot"
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8))
    for key, label, color, style in PLOTTED:
        pts = [lk.serve(key, c) for c in clients]
        xs = [c for c, p in zip(clients, pts, strict=True) if p]
        got = [p for p in pts if p]
        if not got:
            continue
        for ax, field in zip(axes, ("p50_ms", "p99_ms", "rps"), strict=True):
            ax.plot(xs, [p[field] for p in got], style, color=color, marker="o", label=label)
    for ax, title in zip(
        axes, ("p50 latency (ms)", "p99 latency (ms)", "requests per second"), strict=True
    ):
        ax.set_xscale("log", base=2)
        ax.set_xticks(clients, [str(c) for c in clients])
        ax.set_yscale("log")
        ax.set_xlabel("concurrent clients")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    axes[2].legend(fontsize=7, loc="lower right")
    machine = results.get("meta", {}).get("machine", {})
    fig.suptitle(
        f"Token fetches over a Unix socket, C load generator — {machine.get('nproc', '?')} cores, "
        f"{results.get('meta', {}).get('date', '')}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return None


def write(results: dict[str, Any], out: Path) -> None:
    meta = results.get("meta", {})
    smoke = meta.get("smoke", False)
    why_no_plot = plot(results, out / PLOT_NAME, install=not smoke)
    if why_no_plot:
        results.setdefault("skipped", {})["plot"] = why_no_plot
    lines = _render(results, why_no_plot)
    (out / "BENCHMARKS.md").write_text("\n".join(lines).rstrip() + "\n")


def _render(results: dict[str, Any], why_no_plot: str | None) -> list[str]:
    """docs/BENCHMARKS.md as lines: the header, then one section per benchmark."""
    lk = Lookup(results)
    L = _header(results, lk)
    L += _serving(results, lk, why_no_plot)
    L += _coldstart(results, lk)
    L += _storm(results)
    L += _footprint(results)
    L += _profiles(results)
    L += _closing(results)
    return L


def _header(results: dict[str, Any], lk: Lookup) -> list[str]:
    """The title, the machine and the targets table."""
    meta = results.get("meta", {})
    m = meta.get("machine", {})
    L: list[str] = ["# Benchmarks", ""]
    if meta.get("smoke"):
        L += [
            "**Smoke run: these figures only show that the scripts work; they measure nothing.**",
            "",
        ]
    L += [
        "Generated by `bench/run.py`; do not edit by hand (the analysis at the end comes from "
        "`bench/analysis.md`). Every figure below was measured in one run of the suite, on one "
        "machine, with one load generator (`bench/loadgen.c`, C, a thread per client); ratios "
        "compare figures from that same run. The machine is shared and noisy: each serving figure "
        "is the median of several interleaved runs.",
        "",
        f"- command: `{meta.get('command', '')}` ({meta.get('seconds', 0):.0f} s)",
        f"- date: {meta.get('date', '')}",
        f"- machine: {m.get('nproc', '?')} cores ({m.get('cpu', '?')}), {m.get('memory', '')}",
        f"- kernel: {m.get('uname', '')}",
        f"- Python {m.get('python', '')}, aiohttp {m.get('aiohttp', '')}, {m.get('git', '')}, "
        f"{m.get('gcc', '')}; load average before the run: {m.get('load_before', '')}"
        + (f", after it: {meta['load_after']}" if meta.get("load_after") else ""),
        *_setup_lines(results),
        "",
        "## Targets",
        "",
    ]
    L += _table(
        ["what", "target", "measured", "verdict"],
        [[w, t, ms, _verdict(ok)] for w, t, ms, ok in targets(results)],
    )

    return L


def _serving(results: dict[str, Any], lk: Lookup, why_no_plot: str | None) -> list[str]:
    """Section 1: keep-alive and connection-per-request serving, against the baselines."""
    L: list[str] = []
    serving = results.get("serving")
    L += ["## 1. Serving", ""]
    if serving:
        loop = serving.get("daemon_event_loop")
        L += [
            f"Token fetches (`GET /v1/token?profile=default`, or git's `get`) for "
            f"{serving['seconds_per_run']} s after a {serving['warmup']} s warm-up, at each "
            "concurrency; median of the runs. Server CPU is the server process's own CPU time "
            "per answered request."
            + (
                f" coactive-credd in rows (a) and (b) ran on **{loop}**, as its log says"
                + (
                    " (`pip install coactive-credd[fast]` installs uvloop; the daemon uses it "
                    "when it can import it); the `ref: ... stdlib asyncio loop` rows are the "
                    "same daemon with uvloop hidden, as installed without the extra. "
                    "(d) is the issue's asyncio ceiling on the stdlib loop; "
                    "`ref: asyncio ceiling on uvloop` is the same server on uvloop."
                    if loop == "uvloop"
                    else "."
                )
                if loop
                else ""
            ),
            "",
        ]
        if why_no_plot:
            L += [f"(No plot: {why_no_plot}.)", ""]
        else:
            L += [f"![latency and throughput against concurrency]({PLOT_NAME})", ""]
        rows = []
        for row in serving["rows"]:
            base_key = "ceiling-ka" if row["mode"] == "keepalive" else "ceiling-conn"
            base = lk.serve(base_key, row["clients"])
            git = lk.serve("git-cache", row["clients"])
            rows.append(
                [
                    row["label"],
                    str(row["clients"]),
                    _f(row["rps"], 0),
                    _f(row["p50_ms"], 3),
                    _f(row["p99_ms"], 3),
                    _f(row["max_ms"], 1),
                    _f(row["cpu_us_per_req"], 1),
                    _x(_ratio(row["rps"], _rps(base))),
                    _x(_ratio(row["rps"], _rps(git))),
                    str(row["errors"])
                    if not row["errors"]
                    else f"{row['errors']} ({row['first_error']})",
                ]
            )
        L += _table(
            [
                "server",
                "clients",
                "req/s",
                "p50 ms",
                "p99 ms",
                "max ms",
                "server CPU µs/req",
                "x asyncio ceiling (same mode)",
                "x git",
                "errors",
            ],
            rows,
        )
        L += _generator_check(lk, [r["clients"] for r in serving["rows"]])
    else:
        L += ["Not measured in this run.", ""]

    return L


def _coldstart(results: dict[str, Any], lk: Lookup) -> list[str]:
    """Section 2: each shim's cold start."""
    L: list[str] = []
    cold = results.get("coldstart")
    L += ["## 2. Shim cold start", ""]
    if cold:
        L += [
            f"Whole-process wall time from `fork`/`exec` to exit, with a running daemon holding a "
            f"valid token; {cold['rows'][0]['runs'] if cold['rows'] else 0} runs of each, "
            "interleaved in a shuffled order each round.",
            "",
        ]
        g, p = lk.cold("git-cache-get"), lk.cold("python-pass")
        L += _table(
            [
                "command",
                "median ms",
                "min ms",
                "p90 ms",
                "x `git credential-cache get`",
                "x `python -c pass`",
            ],
            [
                [
                    row["label"],
                    _f(row["median_ms"], 1),
                    _f(row["min_ms"], 1),
                    _f(row["p90_ms"], 1),
                    _x(_ratio(row["median_ms"], g)),
                    _x(_ratio(row["median_ms"], p)),
                ]
                for row in cold["rows"]
            ],
        )
        for key, err in cold.get("failed", {}).items():
            L += [f"- {key} failed: {err}"]
        go = cold.get("go")
        if go:
            L += [
                f"- Go shim: built from `{go['package']}` in this run ({go['go']}, "
                f"{go['binary_kib']:,} KiB); links net/http: "
                f"{'yes' if go['links_net_http'] else 'no'}."
            ]
        compiles = cold.get("compiled_from_source")
        if compiles is not None:
            bad = {k: v for k, v in compiles.items() if v}
            L += [
                "- Python bytecode: "
                + (
                    "one run of each Python command under `python -v` loaded every module "
                    f"from a `.pyc` ({', '.join(compiles)}); none compiled from source."
                    if not bad
                    else "modules compiled from source on a timed run: "
                    + "; ".join(f"{k}: {len(v)} ({', '.join(v[:3])})" for k, v in bad.items())
                )
            ]
        L += [""]
    else:
        L += ["Not measured in this run.", ""]

    return L


def _storm(results: dict[str, Any]) -> list[str]:
    """Section 3: many callers at one refresh."""
    L: list[str] = []
    storm = results.get("storm")
    L += ["## 3. Refresh storm", ""]
    if storm:
        n = storm["rows"][0]["n"] if storm["rows"] else 0
        L += [
            f"{n:,} callers released together on `{storm['target']}` while the cached token has "
            "900 s left: no caller can be served from the cache, so all wait for one login "
            "(the daemon decides this exactly as for an expired token). Logins are counted by the "
            "fake Coactive; one figure per run.",
            "",
        ]
        L += _table(
            [
                "upstream delay",
                "callers",
                "logins per storm",
                "answered",
                "errors",
                "p50 wait ms",
                "p99 wait ms",
                "max ms",
                "p99 - delay",
            ],
            [
                [
                    f"{r['delay_ms']:.0f} ms",
                    r["callers"],
                    ", ".join(map(str, r["logins"])),
                    f"{r['ok']:,}",
                    str(r["errors"]) + (f" ({r['first_error']})" if r["errors"] else ""),
                    _f(r["p50_ms"], 1),
                    _f(r["p99_ms"], 1),
                    _f(r["max_ms"], 1),
                    _f(r["p99_ms"] - r["delay_ms"], 1),
                ]
                for r in storm["rows"]
            ],
        )
        L += [
            f"The floor: the same {n:,} callers against servers that answer at once, with no "
            "refresh at all (what thread wake-ups and accepting the connections cost here):",
            "",
        ]
        L += _table(
            ["server", "callers", "p50 ms", "p99 ms", "max ms"],
            [
                [
                    f["server"],
                    f["callers"],
                    _f(f["p50_ms"], 1),
                    _f(f["p99_ms"], 1),
                    _f(f["max_ms"], 1),
                ]
                for f in storm["floors"]
            ],
        )
    else:
        L += ["Not measured in this run.", ""]

    return L


def _footprint(results: dict[str, Any]) -> list[str]:
    """Section 4: the daemon's memory and start-up."""
    L: list[str] = []
    fp = results.get("footprint", {})
    L += ["## 4. Footprint", ""]
    if fp:
        rows = []
        s = fp.get("soak")
        if s:
            rows += [
                ["RSS after start (one profile)", f"{s['rss_after_start_kib'] / MIB:.1f} MiB"],
                [
                    f"RSS after {s['warmup_requests']:,} warm-up requests",
                    f"{s['rss_after_warmup_kib'] / MIB:.1f} MiB",
                ],
                [
                    f"RSS after {s['requests']:,} more keep-alive requests (16 clients, "
                    f"{s['rps']:,.0f}/s, {s['cpu_us_per_req']:.0f} µs CPU each, {s['errors']} errors)",
                    f"{s['rss_after_requests_kib'] / MIB:.1f} MiB ({s['growth_kib'] / MIB:+.2f} MiB)",
                ],
                [
                    f"RSS after {s['conn_requests']:,} more requests on new connections",
                    f"{s['rss_after_conn_kib'] / MIB:.1f} MiB",
                ],
            ]
        i = fp.get("idle")
        if i:
            note = (
                "the whole window"
                if i["window_s"] >= 600
                else f"measured over {i['window_s']:.0f} s and scaled to 10 min"
            )
            rows += [
                [
                    f"CPU while idle ({note}; the daemon served one request, then nothing, while the "
                    "rest of the suite ran beside it)",
                    f"{i['cpu_s']:.2f} s in {i['window_s']:.0f} s → {i['cpu_s_per_10min']:.3f} s per 10 min "
                    f"(resolution {i['clock_tick_s'] * 1e3:.0f} ms)",
                ],
                [
                    "wake-ups while idle (voluntary context switches)",
                    f"{i['wakeups']} ({i['wakeups_per_min']:.1f} per minute)",
                ],
                ["RSS of the idle daemon at the end", f"{i['rss_kib'] / MIB:.1f} MiB"],
            ]
        r = fp.get("ready")
        if r:
            rows += [
                [
                    f"exec to first `/healthz` answer (median of {r['runs']})",
                    f"{r['exec_to_ready_ms']:.0f} ms",
                ],
                [
                    "`python -c 'import aiohttp.web'` (same rounds)",
                    f"{r['import_aiohttp_web_ms']:.0f} ms",
                ],
                ["ratio", _x(_ratio(r["exec_to_ready_ms"], r["import_aiohttp_web_ms"]))],
            ]
        L += _table(["what", "figure"], rows)
    else:
        L += ["Not measured in this run.", ""]

    return L


def _profiles(results: dict[str, Any]) -> list[str]:
    """Section 5: many profiles in one daemon."""
    L: list[str] = []
    p = results.get("profiles")
    L += ["## 5. Many profiles", ""]
    if p:
        cpl = p["cpu_ms_per_login"]
        L += [
            f"{p['profiles']:,} profiles logged in with token lifetimes spread over "
            f"{p['lifetimes_s'].replace(':', '-')} s, so their refreshes fall due at different "
            "times; then the daemon started, every profile was fetched once, and the daemon ran "
            f"for a {p['window_s']:.0f} s window.",
            "",
        ]
        L += _table(
            ["what", "figure"],
            [
                ["exec to ready", f"{p['exec_to_ready_ms']:.0f} ms"],
                ["RSS after start", f"{p['rss_after_start_kib'] / MIB:.1f} MiB"],
                [
                    "RSS after one fetch of every profile",
                    f"{p['rss_after_serving_all_kib'] / MIB:.1f} MiB",
                ],
                ["RSS at the end of the window", f"{p['rss_end_kib'] / MIB:.1f} MiB"],
                ["logins in the window", str(p["logins"])],
                ["daemon CPU in the window", f"{p['cpu_s']:.2f} s"],
                [
                    "CPU per login in the window (refresh, batched persist, schedule)",
                    "-" if cpl is None else f"{cpl:.1f} ms",
                ],
                *(
                    [
                        [
                            "the same, counting the stop that writes the last batch",
                            f"{p['cpu_s_with_stop']:.2f} s → "
                            f"{p['cpu_ms_per_login_with_stop']:.1f} ms per login",
                        ]
                    ]
                    if p.get("cpu_ms_per_login_with_stop") is not None
                    else []
                ),
                ["failed fetches", str(p["fetch_errors"])],
            ],
        )
    else:
        L += ["Not measured in this run.", ""]

    return L


def _closing(results: dict[str, Any]) -> list[str]:
    """What was skipped or failed, the analysis, and how to re-run."""
    meta = results.get("meta", {})
    L: list[str] = []
    skipped = results.get("skipped", {})
    failed = results.get("failed", {})
    if skipped or failed or results.get("notes"):
        L += ["## Skipped, failed and notes", ""]
        L += [f"- skipped {k}: {v}" for k, v in skipped.items()]
        L += [f"- FAILED {k}: {v}" for k, v in failed.items()]
        L += [f"- {n}" for n in results.get("notes", [])]
        L += [""]

    analysis = BENCH_DIR / "analysis.md"
    if analysis.is_file() and not meta.get("smoke"):
        L += ["## Analysis", "", analysis.read_text().strip(), ""]

    L += [
        "## Running it",
        "",
        "```",
        "pip install -e '.[fast,test]'         # uvloop as users get it; matplotlib for the plot",
        "python bench/run.py                   # ~10 minutes; rewrites this page and the plot",
        "python bench/run.py --idle-seconds 600  # idle CPU over a full 10-minute window",
        "python bench/run.py --smoke --out /tmp/b  # seconds; what tests/test_bench_smoke.py runs",
        "python bench/run.py --parts serving,storm",
        "```",
        "",
        "Needs gcc (the load generator is compiled into a temp folder on each run), git, and "
        "optionally node and go for their shims. Raw figures: `bench/results.json`.",
    ]
    return L


def _rel(path: str) -> str:
    root = str(BENCH_DIR.parent) + "/"
    return path[len(root) :] if path.startswith(root) else path


def _setup_lines(results: dict[str, Any]) -> list[str]:
    bc = results.get("meta", {}).get("bytecode")
    if not bc:
        return []
    return [
        "- Python bytecode: compiled before timing (`python -m compileall -q` on "
        + ", ".join(f"`{_rel(d)}`" for d in bc["compiled"])
        + "), as `pip install` does for a real install"
        + (
            "; this environment sets `PYTHONDONTWRITEBYTECODE=1`, which the suite removes for "
            "the processes it starts, so no Python client start is charged for compiling the "
            "project from source"
            if bc.get("dont_write_bytecode_was_set")
            else ""
        )
    ]


def _generator_check(lk: Lookup, clients: list[int]) -> list[str]:
    """Say how close each server comes to what the load generator can drive."""
    lines = [
        "**Is the load generator the bottleneck?** Against a canned C server (one epoll thread):",
        "",
    ]
    for c in sorted(set(clients)):
        t_ka, t_conn, t_git = (
            lk.serve("trivial-ka", c),
            lk.serve("trivial-conn", c),
            lk.serve("trivial-git", c),
        )
        a, b, g, d = (lk.serve(k, c) for k in ("credd-ka", "credd-conn", "git-cache", "ceiling-ka"))
        if not t_ka:
            continue
        lines.append(
            f"- {c} clients: the generator drives {_f(t_ka['rps'], 0)}/s keep-alive, "
            f"{_f(_rps(t_conn), 0)}/s with a connection each, "
            f"{_f(_rps(t_git), 0)}/s in git's protocol; coactive-credd reaches "
            f"{_x(_ratio(_rps(a), t_ka['rps']))} and {_x(_ratio(_rps(b), _rps(t_conn)))} "
            f"of that, the asyncio ceiling {_x(_ratio(_rps(d), t_ka['rps']))}, "
            f"git's daemon {_x(_ratio(_rps(g), _rps(t_git)))}."
        )
    return [*lines, ""]
