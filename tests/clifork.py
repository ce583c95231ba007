"""``coactive-credd`` commands for the tests' set-up, each in a process of its own that starts
already loaded: a fork server, as multiprocessing's ``forkserver`` start method is one.

A ``login`` run as ``python3 -m coactive_credd login`` spends about 0.5 s of CPU, almost all
of it importing aiohttp and cryptography; the suite runs a few hundred of them to set up
the profiles its tests need, on a 2-core machine that the suite keeps busy. A copy forked
from a process that has imported those already spends about 0.06 s, and is otherwise the
same run: its own process, stdin, stdout, stderr, environment, working folder and exit
status, and ``coactive_credd.cli.main.main`` called with the same arguments, as
``__main__`` calls it.

Only set-up goes through here (:func:`tests.conftest.login`). A test about what a command
does as a process of its own (what it loads, its signals, its core dumps) runs it with
``run_cli``, as before.

Each pytest process (each xdist worker) starts one server on first use; it ends when that
process does (its end of the socket closes). One command runs at a time per server.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
# What the server imports before it forks: what `login` loads, and the rest of the CLI.
PRELOAD = (
    "coactive_credd.cli.main",
    "coactive_credd.cli.commands",
    "coactive_credd.cli.login",
    "coactive_credd.cli.login_input",
    "coactive_credd.cli.login_verify",
    "coactive_credd.cli.login_writer",
    "coactive_credd.upstream.exchange",
    "coactive_credd.vault",
)

_lock = threading.Lock()
_server: tuple[subprocess.Popen[bytes], socket.socket] | None = None


def run(
    argv: list[str], *, input: str | None, env: dict[str, str], timeout: float
) -> subprocess.CompletedProcess[str]:
    """``coactive-credd ARGV`` with ``env`` (the whole environment), as ``subprocess.run``
    with ``capture_output=True, text=True`` would run it. Raises subprocess.TimeoutExpired
    (after killing it) when it runs past ``timeout`` seconds."""
    with _lock:
        _, sock = _ensure()
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        request = {"argv": argv, "env": env, "cwd": os.getcwd()}
        try:
            socket.send_fds(sock, [json.dumps(request).encode() + b"\n"], [in_r, out_w, err_w])
        finally:
            for fd in (in_r, out_w, err_w):
                os.close(fd)
        reader = sock.makefile("rb")
        pid = int(reader.readline())
        out: dict[int, bytes] = {}
        threads = [
            threading.Thread(target=_feed, args=(in_w, (input or "").encode()), daemon=True),
            threading.Thread(target=_drain, args=(out_r, out), daemon=True),
            threading.Thread(target=_drain, args=(err_r, out), daemon=True),
        ]
        for t in threads:
            t.start()
        sock.settimeout(timeout)
        try:
            status = int(reader.readline())
        except TimeoutError:
            os.kill(pid, signal.SIGKILL)
            sock.settimeout(None)
            reader.readline()  # the server reaps it
            for t in threads:
                t.join(5)
            raise subprocess.TimeoutExpired(argv, timeout) from None
        finally:
            sock.settimeout(None)
        for t in threads:
            t.join()
        return subprocess.CompletedProcess(
            ["coactive-credd", *argv],
            os.waitstatus_to_exitcode(status),
            out.get(out_r, b"").decode(),
            out.get(err_r, b"").decode(),
        )


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


def _ensure() -> tuple[subprocess.Popen[bytes], socket.socket]:
    global _server
    if _server is not None and _server[0].poll() is None:
        return _server
    ours, theirs = socket.socketpair()
    proc = subprocess.Popen(
        [sys.executable, "-c", f"from tests import clifork; clifork.serve({theirs.fileno()})"],
        pass_fds=[theirs.fileno()],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
    )
    theirs.close()
    _server = (proc, ours)
    atexit.register(_stop, proc, ours)
    return _server


def _stop(proc: subprocess.Popen[bytes], sock: socket.socket) -> None:
    sock.close()  # the server reads the end, and exits
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()


# ---- the server ----------------------------------------------------------------------------


def serve(fd: int) -> None:
    """Import :data:`PRELOAD`, then fork one child per request read from ``fd``; send back
    its pid, then its wait status, each on a line."""
    import importlib
    import importlib.util

    for name in PRELOAD:
        importlib.import_module(name)
    spec = importlib.util.find_spec("coactive_credd.__main__")  # found, not run
    main_path = str(spec.origin if spec is not None else "")
    sock = socket.socket(fileno=fd)
    buf = b""
    while True:
        data, fds, _, _ = socket.recv_fds(sock, 1 << 20, 3)
        if not data:
            return
        buf += data
        if not buf.endswith(b"\n"):
            continue  # a request larger than one read (a big environment)
        request, buf = json.loads(buf), b""
        pid = os.fork()
        if pid == 0:
            sock.close()
            _child(request, fds, main_path)  # never returns
        for f in fds:
            os.close(f)
        sock.sendall(f"{pid}\n".encode())
        _, status = os.waitpid(pid, 0)
        sock.sendall(f"{status}\n".encode())


def _child(request: dict[str, Any], fds: list[int], main_path: str) -> None:
    code = 1
    try:
        for target, f in zip((0, 1, 2), fds, strict=True):
            os.dup2(f, target)
            os.close(f)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(request["cwd"])
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
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):  # a reader gone, a closed stream
                stream.flush()
        os._exit(code)
