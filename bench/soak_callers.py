"""The soak's callers: steady ones that record every answer, and hostile ones.

Steady: keep-alive HTTP threads on the socket (most of the answers), one thread per shim kind
(sh under dash, Python, Node, Go, git through ``git credential fill``), each a new process per
request, and bursts of the C load generator while Coactive is healthy. Every answer becomes a
:class:`soak_check.Answer` with the soak's own (never stepped) times around it.

Hostile (same uid, so the peer check lets them in): slowloris connections that trickle a
request head one byte at a time, and connections that pipeline thousands of requests and never
read an answer.
"""

from __future__ import annotations

import contextlib
import json
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import harness
from harness import REPO
from soak_check import Answer


class _Plan(Protocol):
    @property
    def shims(self) -> bool: ...
    @property
    def loadgen(self) -> bool: ...
    @property
    def raw_threads(self) -> int: ...


class _Fake(Protocol):
    @property
    def base_url(self) -> str: ...


class Soak(Protocol):
    """What the callers need of a soak run (``soak.Soak``), named here so that the two modules
    do not import each other."""

    home: Path
    sock: Path
    env: dict[str, str]
    names: list[str]

    @property
    def plan(self) -> _Plan: ...
    @property
    def fake(self) -> _Fake: ...
    stop: threading.Event
    current: str
    answers: list[Answer]
    loadgen_runs: list[dict[str, Any]]

RAW_INTERVAL = 0.02  # seconds between one keep-alive thread's requests
SHIM_INTERVAL = 0.4  # seconds between one shim kind's process starts
LOADGEN_EVERY = 12.0  # seconds between load-generator bursts
CALL_TIMEOUT = 30.0


class Callers:
    def __init__(self, soak: Soak) -> None:
        self.soak = soak
        self.broken: list[str] = []  # caller kinds that could not be set up here
        self.workdir = soak.home / "callers"
        self.workdir.mkdir(mode=0o700)
        self.shims: dict[str, Callable[[str], tuple[list[str], str, dict[str, str]]]] = {}
        if soak.plan.shims:
            self._find_shims()
        self.loadgen: Path | None = None
        if soak.plan.loadgen:
            try:
                self.loadgen = harness.build_loadgen(self.workdir)
            except (harness.Skip, subprocess.CalledProcessError) as exc:
                self.broken.append(f"loadgen: {exc}")

    # ---- setup -------------------------------------------------------------------------

    def _find_shims(self) -> None:
        import run as bench_run

        env = self.soak.env
        sh = REPO / "client_shim" / "sh"
        dash = shutil.which("dash")
        if dash:
            self.shims["sh"] = lambda p: (
                [dash, str(sh / "coactive-token"), "--profile", p],
                "",
                env,
            )
        else:
            self.broken.append("sh: dash is not installed")
        self.shims["python"] = lambda p: (
            [sys.executable, "-m", "coactive_token", "--profile", p],
            "",
            env,
        )
        node = bench_run._node_shim(self.workdir)
        if isinstance(node, str):
            self.broken.append(f"node: {node}")
        else:
            self.shims["node"] = lambda p: ([*node, "--profile", p], "", env)
        go = bench_run._go_shim(self.workdir)
        if isinstance(go, str):
            self.broken.append(f"go: {go}")
        else:
            self.shims["go"] = lambda p: ([*go[0], "--profile", p], "", env)
        git = shutil.which("git")
        if git:
            origin = self.soak.fake.base_url
            gitconfig = self.workdir / "gitconfig"
            gitconfig.write_text(
                f'[credential "{origin}"]\n\thelper =\n'
                f"\thelper = {sh / 'git-credential-coactive'}\n"
            )
            genv = dict(
                env,
                GIT_CONFIG_GLOBAL=str(gitconfig),
                GIT_CONFIG_NOSYSTEM="1",
                GIT_TERMINAL_PROMPT="0",
                GIT_ASKPASS="/bin/false",
                SSH_ASKPASS="/bin/false",
            )
            host = origin.split("://", 1)[1]
            self.shims["git"] = lambda p: (
                [git, "credential", "fill"],
                f"protocol=http\nhost={host}\nusername={p}\n\n",
                genv,
            )
        else:
            self.broken.append("git: not installed")

    def threads(self) -> list[threading.Thread]:
        out = [
            threading.Thread(target=self.raw, args=(i,), daemon=True, name=f"raw-{i}")
            for i in range(self.soak.plan.raw_threads)
        ]
        out += [
            threading.Thread(target=self.shim, args=(kind,), daemon=True, name=kind)
            for kind in self.shims
        ]
        if self.loadgen is not None:
            out.append(threading.Thread(target=self.bursts, daemon=True, name="loadgen"))
        return out

    # ---- steady callers ----------------------------------------------------------------

    def raw(self, index: int) -> None:
        rng = random.Random(index)
        conn: socket.socket | None = None
        soak = self.soak
        while not soak.stop.is_set():
            profile = rng.choice(soak.names)
            t0 = time.time()
            try:
                if conn is None:
                    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    conn.settimeout(CALL_TIMEOUT)
                    conn.connect(str(soak.sock))
                conn.sendall(
                    f"GET /v1/token?profile={profile} HTTP/1.1\r\nHost: l\r\n\r\n".encode()
                )
                status, body, close = read_answer(conn)
            except (OSError, ValueError) as exc:
                soak.answers.append(Answer("raw", profile, t0, time.time(), None, repr(exc)))
                with contextlib.suppress(OSError):
                    if conn is not None:
                        conn.close()
                conn = None
                soak.stop.wait(0.1)
                continue
            t1 = time.time()
            if close:
                conn.close()
                conn = None
            if status == 200:
                token = json.loads(body)["access_token"]
                soak.answers.append(Answer("raw", profile, t0, t1, token))
            else:
                soak.answers.append(Answer("raw", profile, t0, t1, None, _code(status, body)))
            soak.stop.wait(RAW_INTERVAL)
        if conn is not None:
            conn.close()

    def shim(self, kind: str) -> None:
        rng = random.Random(kind)
        soak = self.soak
        make = self.shims[kind]
        while not soak.stop.is_set():
            profile = rng.choice(soak.names)
            argv, stdin, env = make(profile)
            t0 = time.time()
            try:
                done = subprocess.run(
                    argv,
                    input=stdin,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=CALL_TIMEOUT,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                soak.answers.append(Answer(kind, profile, t0, time.time(), None, "timeout"))
                continue
            t1 = time.time()
            token = _shim_token(kind, done)
            error = None if token else f"exit {done.returncode}: {done.stderr.strip()[-160:]}"
            soak.answers.append(Answer(kind, profile, t0, t1, token, error))
            soak.stop.wait(SHIM_INTERVAL)

    def bursts(self) -> None:
        soak = self.soak
        assert self.loadgen is not None
        last = 0.0
        while not soak.stop.wait(1.0):
            if soak.current != "ok" or time.monotonic() - last < LOADGEN_EVERY:
                continue
            last = time.monotonic()
            with contextlib.suppress(Exception):
                out = harness.run_loadgen(
                    self.loadgen,
                    soak.sock,
                    "keepalive",
                    4,
                    duration=1.5,
                    path=f"/v1/token?profile={soak.names[0]}",
                    timeout=int(CALL_TIMEOUT),
                )
                if soak.current == "ok":  # a figure, not a rule: after an outage the daemon
                    soak.loadgen_runs.append(out)  # may rightly still wait to retry (<= 30 s)


def read_answer(conn: socket.socket) -> tuple[int, bytes, bool]:
    """One HTTP/1.1 answer from a keep-alive connection: (status, body, server closes)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionError("closed before an answer")
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionError("closed inside an answer")
        body += chunk
    return status, body[:length], headers.get("connection", "").lower() == "close"


def _code(status: int, body: bytes) -> str:
    with contextlib.suppress(ValueError, KeyError, TypeError):
        return f"{status} {json.loads(body)['error']['code']}"
    return str(status)


def _shim_token(kind: str, done: subprocess.CompletedProcess[str]) -> str | None:
    if done.returncode != 0:
        return None
    if kind == "git":
        for line in done.stdout.splitlines():
            if line.startswith("password="):
                return line.split("=", 1)[1] or None
        return None
    return done.stdout.strip() or None


# ---- hostile clients -------------------------------------------------------------------


def hostile(sock: Path, end: float, stop: threading.Event) -> dict[str, Any]:
    """Slowloris and never-reading clients against ``sock`` until ``end`` (monotonic)."""
    figures = {
        "slowloris_opened": 0,
        "slowloris_cut": 0,
        "burst_connections": 0,
        "burst_requests_sent": 0,
        "connect_refused": 0,
    }
    slow: list[socket.socket] = []
    bursts: list[socket.socket] = []
    request = b"GET /v1/token?profile=p00 HTTP/1.1\r\nHost: l\r\n\r\n"
    try:
        for _ in range(100):
            s = _connect(sock, figures)
            if s is None:
                continue
            with contextlib.suppress(OSError):
                s.sendall(b"GET /v1/token?profile=p00 HTTP/1.1\r\nX-Slow: ")
                slow.append(s)
                figures["slowloris_opened"] += 1
        for _ in range(8):
            s = _connect(sock, figures)
            if s is None:
                continue
            s.setblocking(False)
            bursts.append(s)
            figures["burst_connections"] += 1
        while not stop.is_set() and time.monotonic() < end:
            for s in list(slow):
                try:
                    s.send(b"a")
                except OSError:
                    slow.remove(s)
                    figures["slowloris_cut"] += 1
            for s in bursts:
                for _ in range(200):
                    try:
                        s.send(request)
                    except (BlockingIOError, OSError):
                        break
                    figures["burst_requests_sent"] += 1
            stop.wait(0.5)
    finally:
        for s in slow + bursts:
            s.close()
    return figures


def _connect(sock: Path, figures: dict[str, int]) -> socket.socket | None:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    try:
        s.connect(str(sock))
    except OSError:
        s.close()
        figures["connect_refused"] += 1
        return None
    return s
