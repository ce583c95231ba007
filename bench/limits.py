"""The daemon under resource limits, flooded: it refuses new connections and keeps serving the
connected ones.

    python bench/limits.py                       # both: ulimit -n 64, then a memory cgroup
    python bench/limits.py --only nofile --json /tmp/limits.json

``nofile``: ``coactive-credd serve`` started with RLIMIT_NOFILE 64 (soft and hard, as
``ulimit -n 64`` gives). Four callers connect and keep asking on their keep-alive
connections; then a flood opens 1000 connections as fast as it can and holds them, while
slowloris and never-reading clients push in too. Every request of the connected callers
must be answered with a token, the daemon must live, and once the flood lets go a new
connection must be served again.

``memory``: the same flood (plus never-reading clients pipelining thousands of requests)
against a daemon started in a cgroup-v1 memory cgroup limited to 64 MiB (its warm RSS is
about 50 MiB), so all its memory counts, not only what it allocates after joining. Needs a
writable ``/sys/fs/cgroup/memory`` (root here); said so and skipped otherwise. The daemon
must not be OOM-killed and must keep serving.

Loopback and Unix sockets only; each flood lasts ``--seconds``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness
from soak_callers import read_answer

CGROUP_ROOT = Path("/sys/fs/cgroup/memory")
REQUEST = b"GET /v1/token?profile=default HTTP/1.1\r\nHost: l\r\n\r\n"


class Connected(threading.Thread):
    """A caller on one keep-alive connection opened before the flood, asking every 20 ms."""

    def __init__(self, sock: Path, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.stop, self.ok, self.failed, self.errors = stop, 0, 0, []
        self.conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.conn.settimeout(10)
        self.conn.connect(str(sock))

    def run(self) -> None:
        while not self.stop.wait(0.02):
            try:
                self.conn.sendall(REQUEST)
                status, _, _ = read_answer(self.conn)
            except (OSError, ValueError) as exc:
                self.failed += 1
                self.errors.append(repr(exc))
                return  # the connection is gone: that is the failure to report
            if status == 200:
                self.ok += 1
            else:
                self.failed += 1
                self.errors.append(str(status))
        self.conn.close()


def flood(sock: Path, seconds: float, *, connections: int, bursts: int) -> dict[str, Any]:
    """Open ``connections`` connections and hold them; ``bursts`` more pipeline requests and
    never read. Returns how the daemon took them."""
    held: list[socket.socket] = []
    fig = {"attempted": 0, "connect_failed": 0, "cut_without_answer": 0, "answered": 0}
    end = time.monotonic() + seconds
    for _ in range(connections):
        fig["attempted"] += 1
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(2)
        try:
            s.connect(str(sock))
        except OSError:
            fig["connect_failed"] += 1
            s.close()
            continue
        held.append(s)
    burst: list[socket.socket] = []
    for _ in range(bursts):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with contextlib.suppress(OSError):
            s.connect(str(sock))
            s.setblocking(False)
            burst.append(s)
    sent = 0
    while time.monotonic() < end:
        for s in burst:
            for _ in range(500):
                try:
                    s.send(REQUEST)
                except OSError:
                    break
                sent += 1
        time.sleep(0.2)
    # How did the held connections fare? One request each: an answer, or cut.
    for s in held:
        try:
            s.sendall(REQUEST)
            s.settimeout(2)
            read_answer(s)
            fig["answered"] += 1
        except (OSError, ValueError):
            fig["cut_without_answer"] += 1
        s.close()
    for s in burst:
        s.close()
    fig["burst_requests_sent_unread"] = sent
    return fig


def scenario(name: str, seconds: float, cgroup_mib: int | None = None) -> dict[str, Any]:
    c = harness.new_credd(harness.credd_command() or [sys.executable, "-m", "coactive_credd"])
    cgroup: Path | None = None
    with c:
        c.login()
        out: dict[str, Any] = {"scenario": name, "flood_seconds": seconds}
        if name == "memory":
            limit = (cgroup_mib or 64) * 2**20
            cgroup = CGROUP_ROOT / f"coactive-credd-limits-{os.getpid()}"
            cgroup.mkdir()
            (cgroup / "memory.limit_in_bytes").write_text(str(limit))
            out["limit_mib"] = limit / 2**20
        procs = str(cgroup / "cgroup.procs") if cgroup is not None else None

        def pre() -> None:  # in the child, before exec: only a setrlimit or one write
            if name == "nofile":
                resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
            if procs is not None:
                with open(procs, "w") as f:
                    f.write(str(os.getpid()))

        log = (c.home / "serve.log").open("ab")
        c.proc = subprocess.Popen(
            [*c.command, "serve", "--socket", str(c.sock)],
            env=c.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            preexec_fn=pre,
        )
        log.close()
        harness.wait_until_answers(c.sock, c.proc, 60)
        out["rss_kib_warm"] = harness.rss_kib(c.pid)
        try:
            lines_before = len(c.log_tail_all().splitlines())
            stop = threading.Event()
            connected = [Connected(c.sock, stop) for _ in range(4)]
            for t in connected:
                t.start()
            time.sleep(0.5)
            out["flood"] = flood(
                c.sock,
                seconds,
                connections=1000,
                bursts=0 if name == "nofile" else 16,
            )
            stop.set()
            for t in connected:
                t.join(timeout=15)
            out["connected_answers_ok"] = sum(t.ok for t in connected)
            out["connected_failures"] = sum(t.failed for t in connected)
            out["connected_errors"] = [e for t in connected for e in t.errors][:5]
            out["daemon_alive"] = c.proc.poll() is None
            status, _ = harness.http_get(c.sock, "/v1/token?profile=default", timeout=10)
            out["new_connection_after_flood"] = status
            out["log_lines_during_flood"] = len(c.log_tail_all().splitlines()) - lines_before
            out["rss_kib_after"] = harness.rss_kib(c.pid) if out["daemon_alive"] else None
            if cgroup is not None:
                out["cgroup_peak_mib"] = round(
                    int((cgroup / "memory.max_usage_in_bytes").read_text()) / 2**20, 1
                )
                out["cgroup_failcnt"] = int((cgroup / "memory.failcnt").read_text())
        finally:
            if cgroup is not None:
                with contextlib.suppress(OSError):
                    c.proc.send_signal(signal.SIGTERM)
                    c.proc.wait(timeout=10)
                with contextlib.suppress(OSError):
                    cgroup.rmdir()
    out["ok"] = bool(
        out["daemon_alive"]
        and out["connected_failures"] == 0
        and out["connected_answers_ok"] > 0
        and out["new_connection_after_flood"] == 200
    )
    return out


def cgroup_writable() -> str | None:
    """None when a memory cgroup can be made here, else why not."""
    if not CGROUP_ROOT.is_dir():
        return f"no cgroup-v1 memory hierarchy at {CGROUP_ROOT}"
    probe = CGROUP_ROOT / f"coactive-credd-probe-{os.getpid()}"
    try:
        probe.mkdir()
    except OSError as exc:
        return f"cannot create a memory cgroup under {CGROUP_ROOT}: {exc.strerror}"
    probe.rmdir()
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", choices=("nofile", "memory"))
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    results: list[dict[str, Any]] = []
    for name in ("nofile", "memory"):
        if args.only and name != args.only:
            continue
        if name == "memory" and (why := cgroup_writable()):
            results.append({"scenario": name, "skipped": why})
            continue
        results.append(scenario(name, args.seconds))
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0 if all(r.get("ok", True) for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
