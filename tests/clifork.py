"""``coactive-credd`` commands for the tests, each in a process of its own that starts
already loaded: a fork server, as multiprocessing's ``forkserver`` start method is one.

A ``python3 -m coactive_credd serve`` spends about 0.65 s of CPU before it answers, and a
``login`` 0.3 to 0.5 s, almost all of it importing aiohttp and cryptography; the suite starts
about 300 daemons and 700 commands, on a 2-core machine that it keeps busy. A copy forked
from a process that has imported those already spends about 0.04 s, and is otherwise the
same run: its own process and pid, stdin, stdout, stderr, environment, working folder, umask
and exit status, and ``coactive_credd.cli.main.main`` called with the same arguments, as
``__main__`` calls it. :func:`run` runs a command to its end, as ``subprocess.run`` does;
:func:`spawn` starts one (a daemon) and gives a :class:`Forked`, a small ``Popen``.

What a forked copy does not have of a fresh ``python3``: what is read once, as Python
starts or as a library is imported. Its argv and environment as ``/proc`` shows them are the
server's (``os.environ`` and ``sys.argv`` are the command's); ``sys.path`` is the server's,
so ``PYTHONPATH`` and ``-X`` options in its environment change nothing; aiohttp's default CA
store was loaded by the server, from the suite's ``SSL_CERT_FILE``; its stdin is a pipe
(empty unless given input); and its ``sys.modules`` holds more than the command would load.
A test about any of those runs the command as Python starts it:
``start_daemon(..., fresh=True)``, or a ``subprocess`` of its own (tests/test_walls.py,
tests/test_metrics.py). It ends as the interpreter would: it
waits for its threads, runs its ``atexit`` functions and flushes its output.

Each pytest process (each xdist worker) starts one server on first use; it ends when that
process does (its end of the socket closes). The server answers one request at a time and
reaps its children as they end, sending each one's wait status down a pipe of its own.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
# What the server imports before it forks: what `login` loads, the CLI's commands, `serve`.
PRELOAD = (
    "coactive_credd.cli.main",
    "coactive_credd.cli.commands",
    "coactive_credd.cli.login",
    "coactive_credd.cli.login_input",
    "coactive_credd.cli.login_verify",
    "coactive_credd.cli.login_writer",
    "coactive_credd.upstream.exchange",
    "coactive_credd.vault",
    # the commands the tests run most
    "coactive_credd.cli.client",
    "coactive_credd.cli.daemon",
    "coactive_credd.cli.doctor",
    "coactive_credd.cli.execrun",
    "coactive_credd.cli.status",
    "coactive_credd.cli.vault",
    # and what `serve` loads
    "coactive_credd.server.process",
)

_lock = threading.Lock()
_server: tuple[subprocess.Popen[bytes], socket.socket, Any] | None = None


def run(
    argv: list[str], *, input: str | None, env: dict[str, str], timeout: float
) -> subprocess.CompletedProcess[str]:
    """``coactive-credd ARGV`` with ``env`` (the whole environment), as ``subprocess.run``
    with ``capture_output=True, text=True`` would run it. Raises subprocess.TimeoutExpired
    (after killing it) when it runs past ``timeout`` seconds."""
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        child = spawn(argv, env=env, stdin=in_r, stdout=out_w, stderr=err_w)
    except BaseException:
        for fd in (in_w, out_r, err_r):
            os.close(fd)
        raise
    finally:
        for fd in (in_r, out_w, err_w):
            os.close(fd)
    out: dict[int, bytes] = {}
    threads = [
        threading.Thread(target=_feed, args=(in_w, (input or "").encode()), daemon=True),
        threading.Thread(target=_drain, args=(out_r, out), daemon=True),
        threading.Thread(target=_drain, args=(err_r, out), daemon=True),
    ]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    try:
        code = child.wait(timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
        for t in threads:
            t.join(5)
        raise subprocess.TimeoutExpired(argv, timeout) from None
    for t in threads:  # a child of its own may hold stdout open after it ended
        t.join(max(0.0, deadline - time.monotonic()))
        if t.is_alive():
            raise subprocess.TimeoutExpired(argv, timeout)
    return subprocess.CompletedProcess(
        ["coactive-credd", *argv], code, out.get(out_r, b"").decode(), out.get(err_r, b"").decode()
    )


class Forked:
    """A child of the server, with the part of :class:`subprocess.Popen` the tests use:
    ``pid``, ``returncode``, :meth:`poll`, :meth:`wait`, :meth:`send_signal`,
    :meth:`terminate`, :meth:`kill`. ``returncode`` is as Popen gives it (the exit code, or
    minus the signal that ended it). Raises RuntimeError from poll and wait when the server
    ended before the child did (nobody can tell how it ended then)."""

    def __init__(self, args: list[str], pid: int, status_fd: int) -> None:
        self.args = args
        self.pid = pid
        self.returncode: int | None = None
        self._status_fd = status_fd  # -1 once read and closed
        self._lock = threading.Lock()

    def poll(self) -> int | None:
        """The exit code once it ended, else None."""
        return self._collect(0)

    def wait(self, timeout: float | None = None) -> int:
        """The exit code, once it ends; raises subprocess.TimeoutExpired after ``timeout``
        seconds (None: no limit)."""
        code = self._collect(timeout)
        if code is None:
            raise subprocess.TimeoutExpired(self.args, timeout or 0)
        return code

    def send_signal(self, sig: int) -> None:
        """Signal it, unless it has ended (as Popen does)."""
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):  # it ended, and was reaped, just now
                os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def _collect(self, timeout: float | None) -> int | None:
        with self._lock:
            if self.returncode is not None:
                return self.returncode
            if self._status_fd < 0:
                raise RuntimeError(f"the fork server ended before its child {self.pid}")
            poller = select.poll()
            poller.register(self._status_fd, select.POLLIN)
            if not poller.poll(None if timeout is None else timeout * 1000):
                return None
            data = b""
            while chunk := os.read(self._status_fd, 64):
                data += chunk
            os.close(self._status_fd)
            self._status_fd = -1
            if not data:
                raise RuntimeError(f"the fork server ended before its child {self.pid}")
            self.returncode = os.waitstatus_to_exitcode(int(data))
            return self.returncode

    def __del__(self) -> None:
        if self._status_fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._status_fd)


def spawn(argv: list[str], *, env: dict[str, str], stdin: int, stdout: int, stderr: int) -> Forked:
    """Start ``coactive-credd ARGV`` with ``env`` (the whole environment), this process's
    working folder and umask, and the three file descriptors as its stdin, stdout and
    stderr (they stay open here; close them when you no longer need them)."""
    status_r, status_w = os.pipe()
    request = {"argv": argv, "env": env, "cwd": os.getcwd(), "umask": _umask()}
    try:
        with _lock:
            _, sock, reader = _ensure()
            socket.send_fds(
                sock, [json.dumps(request).encode() + b"\n"], [stdin, stdout, stderr, status_w]
            )
            pid = int(reader.readline())
    except BaseException:
        os.close(status_r)
        raise
    finally:
        os.close(status_w)
    return Forked(["coactive-credd", *argv], pid, status_r)


def _umask() -> int:
    """This process's umask, read without setting it (another thread may be creating files)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("Umask:"):
            return int(line.split()[1], 8)
    raise RuntimeError("no Umask line in /proc/self/status")


def _feed(fd: int, data: bytes) -> None:
    try:
        with open(fd, "wb", buffering=0) as f:
            f.write(data)
    except BrokenPipeError:
        pass  # it read none of it, as subprocess.run allows


def _drain(fd: int, out: dict[int, bytes]) -> None:
    chunks = []
    with open(fd, "rb", buffering=0) as f:
        while chunk := f.read(65536):
            chunks.append(chunk)
    out[fd] = b"".join(chunks)


def _ensure() -> tuple[subprocess.Popen[bytes], socket.socket, Any]:
    global _server
    if _server is not None:
        if _server[0].poll() is None:
            return _server
        _close(_server[1], _server[2])  # it died: its children's statuses went with it
    ours, theirs = socket.socketpair()
    proc = subprocess.Popen(
        [sys.executable, "-c", f"from tests import clifork; clifork.serve({theirs.fileno()})"],
        pass_fds=[theirs.fileno()],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
    )
    theirs.close()
    reader = ours.makefile("rb")
    _server = (proc, ours, reader)
    atexit.register(_stop, proc, ours, reader)
    return _server


def _close(sock: socket.socket, reader: Any) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)  # the server reads the end, even while a file is open
    reader.close()
    sock.close()


def _stop(proc: subprocess.Popen[bytes], sock: socket.socket, reader: Any) -> None:
    _close(sock, reader)
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()


# ---- the server ----------------------------------------------------------------------------


def serve(fd: int) -> None:
    """Import :data:`PRELOAD`, then fork one child per request read from ``fd`` and send back
    its pid on a line; when a child ends, write its wait status to the pipe that came with
    its request, and close that pipe."""
    import importlib
    import importlib.util

    for name in PRELOAD:
        importlib.import_module(name)
    spec = importlib.util.find_spec("coactive_credd.__main__")  # found, not run
    main_path = str(spec.origin if spec is not None else "")
    sock = socket.socket(fileno=fd)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    status_fds: dict[int, int] = {}  # child pid -> the write end of its status pipe
    buf = b""
    fds: list[int] = []
    while True:
        ready = select.select([sock, wake_r], [], [])[0]
        if wake_r in ready:
            with contextlib.suppress(BlockingIOError):
                while os.read(wake_r, 256):
                    pass
        _reap(status_fds)
        if sock not in ready:
            continue
        data, more, _, _ = socket.recv_fds(sock, 1 << 20, 4)
        if not data:
            return  # the pytest process ended; children still running go on alone
        buf += data
        fds += more  # they come with the first part of a request only
        if not buf.endswith(b"\n"):
            continue  # a request larger than one read (a big environment)
        request, buf = json.loads(buf), b""
        fds, taken = [], fds
        pid = os.fork()
        if pid == 0:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            sock.close()
            for f in (wake_r, wake_w, *status_fds.values()):
                os.close(f)
            _child(request, taken, main_path)  # never returns
        for f in taken[:3]:
            os.close(f)
        status_fds[pid] = taken[3]
        sock.sendall(f"{pid}\n".encode())


def _reap(status_fds: dict[int, int]) -> None:
    while status_fds:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        fd = status_fds.pop(pid, None)
        if fd is not None:
            with contextlib.suppress(BrokenPipeError):  # nobody waits for it any more
                os.write(fd, f"{status}\n".encode())
            os.close(fd)


def _child(request: dict[str, Any], fds: list[int], main_path: str) -> None:
    code = 1
    try:
        os.close(fds[3])
        for target, f in zip((0, 1, 2), fds[:3], strict=True):
            os.dup2(f, target)
        for f in set(fds[:3]) - {0, 1, 2}:
            os.close(f)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(request["cwd"])
        os.umask(request["umask"])
        sys.argv = [main_path, *request["argv"]]
        time.tzset()
        from coactive_credd.cli.main import main

        try:
            result = main(request["argv"])
            code = result if isinstance(result, int) else 0
        except SystemExit as exc:  # as the interpreter turns one into an exit status
            if exc.code is None:
                code = 0
            elif isinstance(exc.code, int):
                code = exc.code
            else:
                print(exc.code, file=sys.stderr)
                code = 1
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        # As the interpreter ends: wait for the threads that are not daemons, run the atexit
        # functions (the vault's clean-ups), flush stdout (exit 120 when that fails).
        with contextlib.suppress(BaseException):
            threading._shutdown()  # type: ignore[attr-defined]
        with contextlib.suppress(BaseException):
            atexit._run_exitfuncs()
        try:
            sys.stdout.flush()
        except (OSError, ValueError):
            code = code or 120
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.flush()
        os._exit(code)
