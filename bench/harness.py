"""Processes, sockets and measurements shared by the benchmark parts.

Everything here talks to servers on Unix sockets or loopback only, and every loop is bounded
by a count or a deadline.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
GIT_HOST = "api.coactive.ai"
CLK_TCK = os.sysconf("SC_CLK_TCK")


class Skip(Exception):
    """A part (or a row of it) cannot run here; the message says which tool is missing."""


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def short_tmpdir(prefix: str) -> Path:
    """A private temp folder with a short path: Unix socket paths must fit in 108 bytes."""
    d = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    d.chmod(0o700)
    return d


# ---- tools -----------------------------------------------------------------------------------


def script(name: str) -> str | None:
    """The real path of a console script, skipping version-manager shims on PATH.

    pyenv's shims are shell scripts that re-resolve the interpreter on every start (tens of
    milliseconds), which would be charged to whatever is being timed.
    """
    own = Path(sysconfig.get_path("scripts")) / name
    if own.is_file() and os.access(own, os.X_OK):
        return str(own)
    found = shutil.which(name)
    if found and "/shims/" not in found:
        return found
    return None


def credd_command() -> list[str] | None:
    exe = script("coactive-credd")
    if exe:
        return [exe]
    try:
        import coactive_credd.cli.main  # noqa: F401
    except ImportError:
        return None
    return [sys.executable, "-m", "coactive_credd"]


def compile_bytecode() -> list[str]:
    """Compile the project's modules to bytecode, as ``pip install`` does for a real install.

    Without a ``.pyc`` beside each module (``PYTHONDONTWRITEBYTECODE=1`` in a checkout, or a
    source tree nobody has imported yet) every Python client start would compile the project
    from source again, which is not what an installed user pays. Returns the folders compiled.
    """
    import importlib.util

    dirs: list[str] = []
    for mod in ("coactive_credd", "coactive_token"):
        spec = importlib.util.find_spec(mod)
        if spec is None or not spec.origin:
            continue
        d = str(Path(spec.origin).parent)
        if d not in dirs:
            dirs.append(d)
    if dirs:
        subprocess.run(
            [sys.executable, "-m", "compileall", "-q", *dirs],
            check=True,
            capture_output=True,
            timeout=300,
        )
    return dirs


def source_compiles(
    cmd: Sequence[str], *, stdin: str = "", env: dict[str, str] | None = None
) -> list[str]:
    """The modules one run of a Python command compiles from source instead of loading their
    bytecode (``python -v`` says ``code object from '<x>.py'`` for those). Empty is right."""
    env = dict(os.environ if env is None else env, PYTHONVERBOSE="1")
    proc = subprocess.run(
        cmd, input=stdin.encode(), capture_output=True, env=env, timeout=60, check=False
    )
    out = []
    for line in proc.stderr.decode(errors="replace").splitlines():
        if line.startswith("# code object from '") and not line.rstrip().endswith(".pyc'"):
            out.append(line.split("'", 2)[1])
    return out


def build_loadgen(build_dir: Path) -> Path:
    gcc = shutil.which("gcc") or shutil.which("cc")
    if not gcc:
        raise Skip("no C compiler (gcc) to build bench/loadgen.c")
    out = build_dir / "loadgen"
    subprocess.run(
        [gcc, "-O2", "-Wall", "-pthread", "-o", str(out), str(BENCH_DIR / "loadgen.c")],
        check=True,
        capture_output=True,
    )
    return out


def run_loadgen(
    loadgen: Path,
    sock: Path | str,
    mode: str,
    clients: int,
    *,
    duration: float | None = None,
    requests: int | None = None,
    per_client: int | None = None,
    warmup: float = 0.0,
    path: str | None = None,
    preconnect: bool = False,
    timeout: int = 30,
) -> dict[str, Any]:
    cmd = [str(loadgen), "--socket", str(sock), "--mode", mode, "--clients", str(clients)]
    if duration is not None:
        cmd += ["--duration", str(duration)]
    if requests is not None:
        cmd += ["--requests", str(requests)]
    if per_client is not None:
        cmd += ["--per-client", str(per_client)]
    if warmup:
        cmd += ["--warmup", str(warmup)]
    if path:
        cmd += ["--path", path]
    if preconnect:
        cmd += ["--preconnect", "1"]
    cmd += ["--timeout", str(timeout), "--git-host", GIT_HOST]
    limit = (duration or 0) + warmup + timeout + 60 + (requests or 0) / 1000
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=limit)
    if not proc.stdout.strip():
        raise RuntimeError(
            f"loadgen printed nothing (exit {proc.returncode}): {proc.stderr.strip()}"
        )
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


# ---- processes -------------------------------------------------------------------------------


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process, from /proc (clock ticks, 10 ms here)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def context_switches(pid: int) -> int:
    """Voluntary context switches of all the process's threads: each is one wake-up after
    sleeping, for any reason."""
    total = 0
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        with contextlib.suppress(OSError):
            for line in status.read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    total += int(line.split()[1])
    return total


def stop_process(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def wait_for_line(proc: subprocess.Popen[str], want: str, timeout: float) -> None:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"process exited before printing {want!r}")
        if want in line:
            return
    raise TimeoutError(f"no {want!r} within {timeout} s")


def http_get(
    sock: Path | str, target: str, *, method: str = "GET", body: bytes = b"", timeout: float = 10.0
) -> tuple[int, bytes]:
    """One HTTP/1.1 request over a Unix socket, ``Connection: close``; (status, body)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(sock))
        head = f"{method} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
        if body:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        s.sendall(head.encode() + b"\r\n" + body)
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    raw = b"".join(chunks)
    head_raw, _, rest = raw.partition(b"\r\n\r\n")
    if not head_raw.startswith(b"HTTP/1."):
        raise RuntimeError(f"not an HTTP answer: {raw[:80]!r}")
    return int(head_raw.split()[1]), rest


def wait_until_answers(sock: Path, proc: subprocess.Popen[Any] | None, timeout: float) -> float:
    """Poll ``GET /healthz`` until it answers 200; returns the monotonic time it did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before it answered")
        with contextlib.suppress(OSError, RuntimeError):
            status, _ = http_get(sock, "/healthz", timeout=timeout)
            if status == 200:
                return time.monotonic()
        time.sleep(0.002)
    raise TimeoutError(f"{sock} did not answer within {timeout} s")


def time_command(
    cmd: Sequence[str],
    *,
    stdin: str = "",
    env: dict[str, str] | None = None,
    check_out: bool = True,
) -> float:
    """Whole-process wall time of one run, in seconds; fails if the command fails."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        cmd, input=stdin.encode(), capture_output=True, env=env, timeout=60, check=False
    )
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0 or (check_out and not proc.stdout.strip()):
        raise RuntimeError(
            f"{' '.join(cmd)} exited {proc.returncode} with {len(proc.stdout)} bytes of output: "
            f"{proc.stderr.decode(errors='replace').strip()[:300]}"
        )
    return elapsed


# ---- baselines -------------------------------------------------------------------------------


@contextlib.contextmanager
def trivial_server(loadgen: Path, workdir: Path) -> Iterator[Path]:
    """loadgen's own canned epoll server in C: the most the generator can drive."""
    sock = workdir / "trivial.sock"
    proc = subprocess.Popen(
        [str(loadgen), "--serve", str(sock), "--duration", "1800"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        if "ready" not in proc.stderr.readline():
            raise RuntimeError("the trivial server did not start")
        yield sock
    finally:
        stop_process(proc)


@contextlib.contextmanager
def ceiling_server(
    workdir: Path, *, api: str = "streams", uvloop: bool = False
) -> Iterator[tuple[Path, int]]:
    sock = workdir / f"ceiling-{api}{'-uvloop' if uvloop else ''}.sock"
    cmd = [
        sys.executable,
        str(BENCH_DIR / "ceiling_server.py"),
        "--socket",
        str(sock),
        "--api",
        api,
    ]
    proc = subprocess.Popen(
        cmd + (["--uvloop"] if uvloop else []),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_line(proc, "ready", 30)
        yield sock, proc.pid
    finally:
        stop_process(proc)


def git_env() -> dict[str, str]:
    """git without the user's or the system's config, so both sides do the same work."""
    env = dict(os.environ)
    env.update(GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL="/dev/null", GIT_TERMINAL_PROMPT="0")
    return env


@contextlib.contextmanager
def git_cache_daemon(workdir: Path) -> Iterator[tuple[Path, int]]:
    """``git credential-cache--daemon`` on its own socket, primed with one credential."""
    git = shutil.which("git")
    if not git:
        raise Skip("git is not installed")
    gdir = Path(tempfile.mkdtemp(prefix="git-", dir=workdir))
    sock = gdir / "socket"
    env = git_env()
    proc = subprocess.Popen(
        [git, "credential-cache--daemon", str(sock)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not sock.exists():
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("git credential-cache--daemon did not start")
            time.sleep(0.01)
        secret = "tok-" + secrets.token_hex(16)
        subprocess.run(
            [git, "credential-cache", "--timeout", "86400", "--socket", str(sock), "store"],
            input=f"protocol=https\nhost={GIT_HOST}\nusername=default\npassword={secret}\n\n",
            text=True,
            env=env,
            check=True,
            timeout=30,
        )
        yield sock, proc.pid
    finally:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            subprocess.run(
                [git, "credential-cache", "--socket", str(sock), "exit"],
                env=env,
                timeout=10,
                capture_output=True,
            )
        stop_process(proc)


# ---- coactive-credd --------------------------------------------------------------------------


@dataclass
class Credd:
    """One coactive-credd in its own ``COACTIVE_CREDD_HOME``, against its own fake Coactive."""

    command: list[str]
    home: Path
    expires_in: int = 3600
    personal_token: str = field(default_factory=lambda: "pt-" + secrets.token_hex(16))
    proc: subprocess.Popen[Any] | None = None
    _fake_cm: Any = None
    fake: Any = None

    @property
    def sock(self) -> Path:
        return self.home / "credd.sock"

    @property
    def env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("COACTIVE_CREDD_SOCKET", "COACTIVE_PROFILE", "NOTIFY_SOCKET", "LISTEN_FDS")
        }
        env["COACTIVE_CREDD_HOME"] = str(self.home)
        env["COACTIVE_CREDD_SOCKET"] = str(self.sock)
        return env

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def __enter__(self) -> Credd:
        from coactive_credd.testing.fakeupstream import FakeCoactiveThread

        self._fake_cm = FakeCoactiveThread(expires_in=self.expires_in)
        self.fake = self._fake_cm.__enter__()
        self.fake.add_personal_token(self.personal_token)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if self._fake_cm is not None:
            self._fake_cm.__exit__(None, None, None)
        shutil.rmtree(self.home, ignore_errors=True)

    def login(self, profile: str = "default") -> None:
        proc = subprocess.run(
            [
                *self.command,
                "login",
                "--profile",
                profile,
                "--base-url",
                self.fake.base_url,
                "--personal-token-stdin",
            ],
            input=self.personal_token + "\n",
            text=True,
            env=self.env,
            capture_output=True,
            timeout=60,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"coactive-credd login failed: {proc.stderr.strip()}")

    def start(self, timeout: float = 60.0) -> float:
        """Start ``serve``; returns the seconds from exec to the first ``/healthz`` answer."""
        log = (self.home / "serve.log").open("ab")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [*self.command, "serve", "--socket", str(self.sock)],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        log.close()
        try:
            ready = wait_until_answers(self.sock, self.proc, timeout)
        except Exception as exc:
            self.stop()
            raise RuntimeError(
                f"coactive-credd serve did not come up: {exc}; {self.log_tail()}"
            ) from exc
        return ready - t0

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def stop_cpu(self, timeout: float = 60.0) -> float:
        """Stop ``serve`` with SIGTERM and return the CPU seconds of its whole life, including
        what it did while stopping (a clean stop flushes pending vault writes).

        ``timeout`` is generous: that last write waits on fsync, which a disk busy with other
        work (the test suite's containers and 200 MiB bodies) can hold for seconds."""
        assert self.proc is not None
        proc, self.proc = self.proc, None
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                proc.returncode = os.waitstatus_to_exitcode(status)
                return usage.ru_utime + usage.ru_stime
            if time.monotonic() > deadline:
                proc.kill()
                _, status, usage = os.wait4(proc.pid, 0)
                proc.returncode = os.waitstatus_to_exitcode(status)
                raise RuntimeError(
                    f"coactive-credd did not stop within {timeout} s; {self.log_tail()}"
                )
            time.sleep(0.01)

    def event_loop(self) -> str:
        """The event loop the daemon says it runs on ("uvloop" or "asyncio"), from its log."""
        marker = "(event loop: "
        for line in reversed(self.log_tail_all().splitlines()):
            if marker in line:
                return line.split(marker, 1)[1].split(")", 1)[0]
        return "unknown"

    def log_tail_all(self) -> str:
        try:
            return (self.home / "serve.log").read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self) -> str:
        try:
            return (self.home / "serve.log").read_text(errors="replace")[-600:]
        except OSError:
            return ""

    def get(self, target: str = "/v1/token?profile=default") -> tuple[int, bytes]:
        return http_get(self.sock, target, timeout=30)


def new_credd(command: list[str], *, expires_in: int = 3600) -> Credd:
    return Credd(command=command, home=short_tmpdir("ccb-"), expires_in=expires_in)
