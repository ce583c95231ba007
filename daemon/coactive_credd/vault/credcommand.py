"""A profile's long-lived credential from a program: ``credential_command`` (a password
manager: ``["pass", "show", "coactive/token"]``, ``["op", "read", "op://Private/Coactive/token"]``).

The daemon runs it whenever a login needs the credential: without a shell (the list is the
argv), in the daemon's own environment and folder, standard input closed, in its own process
group, for at most :data:`TIMEOUT` seconds (then the whole group is killed), in a worker
thread so the event loop keeps serving. The credential is the first line of standard output
(its line ending stripped); it is held in memory only, never written to disk or logged. The
vault keeps a token-only entry for the profile (secret empty), so tokens still survive a
restart.

Failures (:class:`CommandFailed`) say what happened — the program is missing, exited with a
status, was killed, timed out, printed nothing — with the first line of its standard error,
unless that line repeats the credential. The daemon then puts the profile in
``reauth_required`` and does not run the command again until ``coactive-credd refresh`` or a
reload (:func:`fetch`): no loop.

Output is read in bounded memory: at most :data:`MAX_LINE` bytes of the first line are kept;
once the first line is complete, at most :data:`MAX_OUTPUT` bytes more are read before the
program is stopped (the rest is not needed); a first line longer than :data:`MAX_LINE` fails.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import selectors
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from coactive_credd.core.errors import CreddError

if TYPE_CHECKING:
    from coactive_credd.vault import CachedToken, ProfileSecrets

log = logging.getLogger("coactive_credd")

TIMEOUT = 30.0  # seconds
MAX_LINE = 64 * 1024  # bytes of the first line of stdout (a credential is far shorter)
MAX_OUTPUT = 1024 * 1024  # bytes read past the first line before the program is stopped
MAX_STDERR = 4096  # bytes of stderr kept (for its first line)


# Commands running now, so a daemon that stops mid-command ends them too (their own groups).
_running: set[subprocess.Popen[bytes]] = set()
_running_lock = threading.Lock()


@atexit.register
def _stop_running() -> None:
    with _running_lock:
        for proc in list(_running):
            _kill(proc)


# A credential_command profile's vault entry holds no secret, only the cached token, so a
# restart within the token's lifetime serves it without running the command or logging in.
NO_SECRET = ""


def kept_token(stored: ProfileSecrets | None) -> CachedToken | None:
    """The cached token of a credential_command profile's token-only vault entry."""
    if stored is None or stored.secret != NO_SECRET:
        return None
    return stored.token


class CommandFailed(CreddError):
    """The command gave no credential; the message is one line (never the credential)."""


def describe(argv: Sequence[str]) -> str:
    """The command as a shell would show it (its arguments name an item, not a secret)."""
    return shlex.join(argv)


def run(argv: Sequence[str], timeout: float = TIMEOUT) -> str:
    """Run `argv` and answer the first line of its standard output. Blocking: call it in a
    worker thread. Raises CommandFailed."""
    what = f"credential_command `{describe(argv)}`"
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own group: a timeout kills its children too
        )
    except FileNotFoundError:
        raise CommandFailed(f"{what}: no such program {argv[0]!r} (not on PATH)") from None
    except OSError as exc:
        raise CommandFailed(f"{what} could not start: {exc.strerror}") from None
    assert proc.stdout is not None and proc.stderr is not None
    with _running_lock:
        _running.add(proc)
    try:
        return _collect(proc, what, timeout)
    finally:
        with _running_lock:
            _running.discard(proc)


def _collect(proc: subprocess.Popen[bytes], what: str, timeout: float) -> str:
    assert proc.stdout is not None and proc.stderr is not None
    out, err = bytearray(), bytearray()
    stopped = timed_out = False
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ, out)
        sel.register(proc.stderr, selectors.EVENT_READ, err)
        while sel.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            for key, _ in sel.select(left):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    sel.unregister(key.fileobj)
                    continue
                buf: bytearray = key.data
                if buf is err:
                    err += chunk[: max(0, MAX_STDERR - len(err))]
                    continue
                out += chunk
                if b"\n" in out[: MAX_LINE + 1]:
                    if len(out) > MAX_LINE + MAX_OUTPUT:
                        stopped = True  # the first line is here; the rest is not needed
                elif len(out) > MAX_LINE:
                    stopped = True
            if stopped:
                break
    if timed_out or stopped:
        _kill(proc)
    status = proc.wait()
    proc.stdout.close()
    proc.stderr.close()
    first, nl, _ = bytes(out[: MAX_LINE + 1]).partition(b"\n")
    secret = first.rstrip(b"\r").decode("utf-8", "replace")
    reason = _first_line(err, secret)
    tail = f": {reason}" if reason else ""
    if timed_out:
        raise CommandFailed(f"{what} did not finish within {timeout:g} s and was stopped{tail}")
    if not nl and len(out) > MAX_LINE:
        raise CommandFailed(f"{what} printed a first line longer than {MAX_LINE} bytes")
    if not stopped and status != 0:
        how = f"was killed by signal {-status}" if status < 0 else f"exited with status {status}"
        raise CommandFailed(f"{what} {how}{tail}")
    if not secret.strip():
        raise CommandFailed(f"{what} printed nothing on its first line{tail}")
    return secret


def _kill(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()


def _first_line(err: bytes | bytearray, secret: str) -> str:
    """Standard error's first non-empty line, printable, at most 200 characters; empty when
    it would repeat the credential (or any long piece of it)."""
    for raw in bytes(err).splitlines():
        line = raw.decode("utf-8", "replace").strip()
        if not line:
            continue
        line = "".join(c if c.isprintable() else "?" for c in line)[:200]
        s = secret.strip()
        if s and (
            s in line or (len(s) >= 8 and any(s[i : i + 8] in line for i in range(len(s) - 7)))
        ):
            return ""
        return line
    return ""


async def in_thread(argv: Sequence[str]) -> str:
    """:func:`run` in a daemon thread: a daemon stopping mid-command does not wait for it
    (the command's group is killed at exit)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[str] = loop.create_future()

    def settle(result: str | None, exc: BaseException | None) -> None:
        if done.cancelled():
            return
        if exc is not None:
            done.set_exception(exc)
        else:
            assert result is not None
            done.set_result(result)

    def work() -> None:
        result: str | None = None
        failure: BaseException | None = None
        try:
            result = run(argv)
        except BaseException as exc:  # handed to the awaiting task
            failure = exc
        with contextlib.suppress(RuntimeError):  # the loop closed: the daemon is stopping
            loop.call_soon_threadsafe(settle, result, failure)

    threading.Thread(target=work, name="credential_command", daemon=True).start()
    return await done
