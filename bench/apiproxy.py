"""The API proxy's cost: a GET through the socket and through exec --proxy, against the fake.

Measured in one run, with one load generator (bench/loadgen.c, keep-alive, a thread per
client), against the fake Coactive (a separate process) serving ``GET /api/v1/stream?bytes=64``:

    direct   loadgen -> the fake over TCP, with the real token
    socket   loadgen -> the daemon's socket /api/ route -> the fake
    exec     loadgen -> exec --proxy's listener (TCP) -> the daemon's socket -> the fake

Added latency is the difference of the p50 (and p99) to ``direct``, at 1 and 16 clients.
Then 200 MiB each way with curl (through the socket, and straight to the fake), with the
daemon's peak RSS growth (VmHWM after minus VmRSS before), and ``GET /v1/token`` keep-alive
throughput on this tree's daemon against the same on the tree before the API proxy
(``--base-tree``: a copy of that tree's ``daemon/``), to show what the proxy costs the fast
path when it is not used.

    python bench/apiproxy.py [--base-tree DIR] [--json OUT]

Prints a Markdown section (what docs/BENCHMARKS.md carries) and, with --json, the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PT = "cpt_bench-personal-token"
MiB = 1024 * 1024


def _env(home: Path, tree: Path = ROOT) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update(
        COACTIVE_CREDD_HOME=str(home),
        COACTIVE_CREDD_SOCKET=str(home / "credd.sock"),
        COACTIVE_CREDD_AUTOSTART="0",
        PYTHONPATH=f"{tree / 'daemon'}:{ROOT / 'client_shim' / 'python'}",
    )
    return env


def _status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def _cpu(pid: int) -> float:
    """utime + stime of ``pid``, seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_socket(sock: Path, proc: subprocess.Popen[Any]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the daemon exited")
        if sock.exists():
            out = subprocess.run(
                ["curl", "-q", "-s", "--unix-socket", str(sock), "http://localhost/healthz"],
                capture_output=True,
                text=True,
            )
            if out.stdout == "ok":
                return
        time.sleep(0.05)
    raise RuntimeError("the daemon did not answer")


class Setup:
    """The fake, a logged-in home and a daemon of ``tree``."""

    def __init__(self, tree: Path, base_url: str) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="ccd-bap-", dir="/tmp"))
        self.home.chmod(0o700)
        self.env = _env(self.home, tree)
        self.sock = self.home / "credd.sock"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "coactive_credd",
                "login",
                "--base-url",
                base_url,
                "--personal-token-stdin",
            ],
            input=PT + "\n",
            env=self.env,
            check=True,
            capture_output=True,
            text=True,
        )
        self.daemon = subprocess.Popen(
            [sys.executable, "-m", "coactive_credd", "serve"],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_socket(self.sock, self.daemon)

    def token(self) -> str:
        return subprocess.run(
            [sys.executable, "-m", "coactive_credd", "token"],
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()

    def close(self) -> None:
        self.daemon.send_signal(signal.SIGTERM)
        self.daemon.wait(10)
        shutil.rmtree(self.home, ignore_errors=True)


def loadgen(
    exe: Path,
    clients: int,
    seconds: float,
    path: str,
    *,
    sock: Path | None = None,
    tcp: str | None = None,
    header: str | None = None,
) -> dict[str, Any]:
    cmd = [
        str(exe),
        "--mode",
        "keepalive",
        "--clients",
        str(clients),
        "--duration",
        str(seconds),
        "--warmup",
        "0.3",
        "--path",
        path,
        "--preconnect",
        "1",
    ]
    cmd += ["--tcp", tcp] if tcp else ["--socket", str(sock)]
    if header:
        cmd += ["--header", header]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def curl_time(args: list[str]) -> float:
    started = time.monotonic()
    subprocess.run(["curl", "-q", "-sS", "-o", "/dev/null", *args], check=True, timeout=300)
    return time.monotonic() - started


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base-tree", type=Path, help="a tree before the API proxy, for /v1/token")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--runs", type=int, default=3, help="interleaved runs; medians reported")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ccd-bap-build-", dir="/tmp"))
    exe = work / "loadgen"
    subprocess.run(
        ["gcc", "-O2", "-pthread", "-o", str(exe), str(ROOT / "bench" / "loadgen.c")], check=True
    )
    fake = subprocess.Popen(
        [sys.executable, "-m", "coactive_credd.testing.fakeupstream", "--personal-token", PT],
        env=_env(work),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert fake.stdout is not None
    base_url = fake.stdout.readline().strip()
    figures: dict[str, Any] = {"base_url": base_url, "loadavg_before": os.getloadavg()}
    s = Setup(ROOT, base_url)
    placeholder_file = work / "exec-env"
    exec_proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "coactive_credd",
            "exec",
            "--proxy",
            "--",
            "sh",
            "-c",
            f'echo "$COACTIVE_BASE_URL $COACTIVE_ACCESS_TOKEN" > {placeholder_file}; exec sleep 100000',
        ],
        env=s.env,
    )
    try:
        while not placeholder_file.exists() or not placeholder_file.read_text().strip():
            time.sleep(0.05)
        listener, placeholder = placeholder_file.read_text().split()
        token = s.token()
        path = "/api/v1/stream?bytes=64"
        fake_hostport = base_url.split("//")[1]
        routes = {
            "direct": {"tcp": fake_hostport, "header": f"Authorization: Bearer {token}"},
            "socket": {"sock": s.sock},
            "exec": {
                "tcp": listener.split("//")[1],
                "header": f"Authorization: Bearer {placeholder}",
            },
        }
        latency: dict[str, dict[int, list[dict[str, Any]]]] = {r: {1: [], 16: []} for r in routes}
        for _ in range(args.runs):
            for clients in (1, 16):
                for route, how in routes.items():
                    pids = [fake.pid, s.daemon.pid, exec_proc.pid]
                    before = [_cpu(p) for p in pids]
                    r = loadgen(exe, clients, args.seconds, path, **how)
                    spent = [_cpu(p) - b for p, b in zip(pids, before, strict=True)]
                    n = max(1, r["requests"])  # counted after the warm-up; CPU over all of it
                    total = n * (args.seconds + 0.3) / args.seconds
                    r["fake_cpu_us"], r["daemon_cpu_us"], r["exec_cpu_us"] = (
                        x / total * 1e6 for x in spent
                    )
                    latency[route][clients].append(r)
        figures["latency"] = {
            route: {
                str(c): {
                    k: statistics.median(r[k] for r in runs)
                    for k in (
                        "rps",
                        "p50_ms",
                        "p99_ms",
                        "fake_cpu_us",
                        "daemon_cpu_us",
                        "exec_cpu_us",
                    )
                }
                | {"errors": sum(r.get("errors", 0) for r in runs)}
                for c, runs in by_clients.items()
            }
            for route, by_clients in latency.items()
        }
        # 200 MiB each way
        big = work / "big"
        with open(big, "wb") as f:
            f.write(os.urandom(MiB) * 200)
        rss0 = _status(s.daemon.pid, "VmRSS")
        up_socket = curl_time(
            [
                "--unix-socket",
                str(s.sock),
                "-T",
                str(big),
                "-X",
                "PUT",
                "http://localhost/api/v1/echo",
            ]
        )
        down_socket = curl_time(
            ["--unix-socket", str(s.sock), f"http://localhost/api/v1/stream?bytes={200 * MiB}"]
        )
        hwm = _status(s.daemon.pid, "VmHWM")
        auth = ["-H", f"Authorization: Bearer {token}"]
        up_direct = curl_time([*auth, "-T", str(big), "-X", "PUT", f"{base_url}/api/v1/echo"])
        down_direct = curl_time([*auth, f"{base_url}/api/v1/stream?bytes={200 * MiB}"])
        figures["bulk"] = {
            "rss_before_kib": rss0,
            "hwm_after_kib": hwm,
            "growth_mib": (hwm - rss0) / 1024,
            "up_socket_mib_s": 200 / up_socket,
            "down_socket_mib_s": 200 / down_socket,
            "up_direct_mib_s": 200 / up_direct,
            "down_direct_mib_s": 200 / down_direct,
        }
    finally:
        exec_proc.send_signal(signal.SIGTERM)
        exec_proc.wait(10)
        s.close()
    # /v1/token: this tree and the base tree, interleaved
    trees = {"this": ROOT} | ({"base": args.base_tree} if args.base_tree else {})
    token_runs: dict[str, list[dict[str, Any]]] = {t: [] for t in trees}
    setups = {t: Setup(tree, base_url) for t, tree in trees.items()}
    try:
        for _ in range(args.runs):
            for t, st in setups.items():
                token_runs[t].append(
                    loadgen(exe, 4, args.seconds, "/v1/token?profile=default", sock=st.sock)
                )
    finally:
        for st in setups.values():
            st.close()
    figures["v1_token_4_clients"] = {
        t: {k: statistics.median(r[k] for r in runs) for k in ("rps", "p50_ms", "p99_ms")}
        for t, runs in token_runs.items()
    }
    fake.send_signal(signal.SIGTERM)
    fake.wait(10)
    shutil.rmtree(work, ignore_errors=True)
    figures["loadavg_after"] = os.getloadavg()
    print(report(figures, args))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return 0


def report(f: dict[str, Any], args: argparse.Namespace) -> str:
    lat = f["latency"]
    lines = [
        "## 6. The API proxy",
        "",
        f"`python bench/apiproxy.py{' --base-tree ' + str(args.base_tree) if args.base_tree else ''}`"
        f" ({args.runs} interleaved runs of {args.seconds:g} s after a 0.3 s warm-up; medians). "
        "`GET /api/v1/stream?bytes=64` on the fake Coactive (its own process), keep-alive, "
        "with bench/loadgen.c: straight to the fake over TCP with the token (direct), through the "
        "daemon's socket (socket), through `exec --proxy`'s listener and then the socket (exec). "
        f"Load average before: {' '.join(f'{x:.2f}' for x in f['loadavg_before'])}, after: "
        f"{' '.join(f'{x:.2f}' for x in f['loadavg_after'])} (2 shared cores).",
        "",
        "| route | clients | req/s | p50 ms | p99 ms | added p50 ms | added p99 ms | daemon CPU µs/req | exec listener CPU µs/req | fake CPU µs/req | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for route in ("direct", "socket", "exec"):
        for c in ("1", "16"):
            r, d = lat[route][c], lat["direct"][c]
            added50 = r["p50_ms"] - d["p50_ms"]
            added99 = r["p99_ms"] - d["p99_ms"]
            lines.append(
                f"| {route} | {c} | {r['rps']:,.0f} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | "
                f"{'-' if route == 'direct' else f'{added50:+.3f}'} | "
                f"{'-' if route == 'direct' else f'{added99:+.3f}'} | "
                f"{r['daemon_cpu_us']:.0f} | {r['exec_cpu_us']:.0f} | {r['fake_cpu_us']:.0f} | "
                f"{r['errors']} |"
            )
    b = f["bulk"]
    lines += [
        "",
        "200 MiB each way with curl (random bytes up with `-T`, the fake's stream down):",
        "",
        "| route | up MiB/s | down MiB/s |",
        "|---|---|---|",
        f"| through the socket | {b['up_socket_mib_s']:.0f} | {b['down_socket_mib_s']:.0f} |",
        f"| straight to the fake | {b['up_direct_mib_s']:.0f} | {b['down_direct_mib_s']:.0f} |",
        "",
        f"Daemon memory: RSS {b['rss_before_kib'] / 1024:.1f} MiB before, peak (VmHWM) "
        f"{b['hwm_after_kib'] / 1024:.1f} MiB after both transfers: growth "
        f"{b['growth_mib']:.1f} MiB (target: under 32 MiB).",
        "",
        "`GET /v1/token` keep-alive, 4 clients (the fast path, with no proxied traffic):",
        "",
        "| tree | req/s | p50 ms | p99 ms |",
        "|---|---|---|---|",
    ]
    for t, r in f["v1_token_4_clients"].items():
        name = "this branch" if t == "this" else "before the API proxy"
        lines.append(f"| {name} | {r['rps']:,.0f} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
