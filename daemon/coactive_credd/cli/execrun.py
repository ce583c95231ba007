"""``coactive-credd exec``: run a command with a token that stays fresh for its whole life.

The command gets, in its environment::

    COACTIVE_ACCESS_TOKEN        the token when it started (fine for a short command)
    COACTIVE_TOKEN_EXPIRES_AT    when that token expires (RFC 3339 UTC)
    COACTIVE_ACCESS_TOKEN_FILE   a file that always holds a current token: read it per use
    COACTIVE_BASE_URL            the profile's Coactive base URL
    COACTIVE_CREDD_SOCKET        the daemon's socket (for the shims and /v1/events)
    COACTIVE_PROFILE             the profile

An environment variable cannot change under a running program, so ``exec`` stays as the
command's parent (as ``aws-vault exec`` does) instead of replacing itself: it follows the
daemon's ``/v1/events`` and rewrites the token file (atomically) at each rotation, relays
the signals sent to it, and exits as the command did (with the same signal, if it was killed
by one). Signals a terminal sends to the whole process group (Ctrl-C) reach the command
directly and are not relayed a second time. When the command ends the file is removed.

The file is ``--token-file PATH`` when given (its folder must be the user's and writable by
nobody else), else ``token`` in a fresh private folder under ``$XDG_RUNTIME_DIR`` (or the
temporary folder).

Standard library only: this runs on every ``exec``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import coactive_token
from coactive_credd.core import tokenfile

RELAYED = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGWINCH,
)
SI_KERNEL = 0x80  # si_code of a signal the kernel sent (a terminal's Ctrl-C, Ctrl-\)
DEAD = ("expired", "reauth_required", "locked", "no_token")  # states with no token to serve
RECONNECT = 1.0  # seconds before following the daemon again after the stream broke


class Keeper(threading.Thread):
    """Keeps ``path`` holding the profile's current token while the command runs."""

    def __init__(self, sock: str, profile: str, path: Path, first: coactive_token.Token) -> None:
        super().__init__(name="coactive-token-file", daemon=True)
        self.sock, self.profile, self.path = sock, profile, path
        self.token: str | None = first.access_token
        self.expires_at = first.expires_at.timestamp()
        self.seen: str | None = None  # the last token_sha256 an event named (no hashing here:
        # importing hashlib would cost every exec tens of milliseconds)
        self.lock = threading.Lock()
        self.done = threading.Event()
        try:
            tokenfile.write(path, first.access_token)
        except OSError as exc:
            raise tokenfile.TokenFileError(f"cannot write {path}: {exc.strerror}") from None

    def _fetch(self) -> None:
        with coactive_token.Client(self.sock, autostart=False) as client:
            tok = client.token(self.profile)
        with self.lock:
            if not self.done.is_set() and tok.access_token != self.token:
                tokenfile.write(self.path, tok.access_token)
                self.token = tok.access_token
            self.expires_at = tok.expires_at.timestamp()

    def _drop(self) -> None:
        """No valid token to give: remove the file rather than leave a dead token in it."""
        with self.lock:
            if self.token is not None:
                tokenfile.remove(self.path)
                self.token, self.seen = None, None

    def run(self) -> None:
        broke = False
        while not self.done.is_set():
            try:
                if broke:  # a rotation may have happened while the stream was down
                    self._fetch()
                for ev in coactive_token.watch(self.profile, socket_path=self.sock):
                    sha = ev.get("token_sha256")
                    if ev.get("state") in DEAD:
                        self._drop()
                    elif sha and sha != self.seen:  # the first event, then each rotation
                        self.seen = sha
                        self._fetch()
            except (coactive_token.CredddError, OSError):
                pass  # the old token stays while it is valid; try again shortly
            if time.time() >= self.expires_at:  # the daemon is gone and so is the token
                self._drop()
            broke = True
            self.done.wait(RECONNECT)

    def stop(self) -> None:
        with self.lock:
            self.done.set()
            tokenfile.remove(self.path)


def _token_path(given: str | None) -> tuple[Path, Path | None]:
    """The token file and the folder made for it (None: the user's own folder)."""
    if given:
        return Path(os.path.abspath(os.path.expanduser(given))), None
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    tmp = os.environ.get("TMPDIR", "/tmp")  # noqa: S108 - a fresh random name, made 0700 below
    base = runtime if runtime and os.path.isdir(runtime) else tmp
    folder = Path(base) / f"coactive-exec-{os.urandom(8).hex()}"
    os.mkdir(folder, 0o700)  # fails rather than reuse anything already there
    os.chmod(folder, 0o700)  # whatever the umask
    return folder / "token", folder


def run(sock: str, profile: str, min_ttl: int, command: list[str], token_file: str | None) -> int:
    """Run ``command`` as described in the module doc; its exit status.

    Raises coactive_token.CredddError (before the command runs) and tokenfile.TokenFileError."""
    with coactive_token.Client(sock) as client:
        token = client.token(profile, min_ttl)
        status = client.status()
    base_url = next(
        (p.get("base_url") for p in status.get("profiles", []) if p.get("name") == token.profile),
        "",
    )
    path, made = _token_path(token_file)
    try:
        keeper = Keeper(sock, token.profile, path, token)
        env = dict(
            os.environ,
            COACTIVE_ACCESS_TOKEN=token.access_token,
            COACTIVE_ACCESS_TOKEN_FILE=str(path),
            COACTIVE_TOKEN_EXPIRES_AT=token.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            COACTIVE_BASE_URL=str(base_url or ""),
            COACTIVE_CREDD_SOCKET=sock,
            COACTIVE_PROFILE=token.profile,
        )
        # Block the signals before any thread starts, so they wait for sigwaitinfo below.
        waited = {*RELAYED, signal.SIGCHLD}
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, waited)
        try:
            try:
                pid = os.posix_spawnp(
                    command[0],
                    command,
                    env,
                    setsigmask=old_mask,
                    setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),  # Python ignores them
                )
            except OSError as exc:
                print(
                    f"coactive-credd: cannot run {command[0]!r}: {exc.strerror}; check the command and PATH",
                    file=sys.stderr,
                )
                return 127 if isinstance(exc, FileNotFoundError) else 126
            keeper.start()
            status_code = _wait(pid)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        keeper.stop()
    finally:
        tokenfile.remove(path)
        if made is not None:
            with contextlib.suppress(OSError):
                os.rmdir(made)
    if os.WIFSIGNALED(status_code):
        sig = os.WTERMSIG(status_code)
        with contextlib.suppress(OSError, ValueError):  # SIGKILL and SIGSTOP have no handler
            signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)  # end the way the command ended
        return 128 + sig
    return os.waitstatus_to_exitcode(status_code)


def _wait(pid: int) -> int:
    """Relay signals to ``pid`` until it ends; its wait status."""
    waited = {*RELAYED, signal.SIGCHLD}
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return status
        info = signal.sigtimedwait(waited, 1.0)
        if info is None or info.si_signo == signal.SIGCHLD:
            continue
        if info.si_code == SI_KERNEL and info.si_signo in (signal.SIGINT, signal.SIGQUIT):
            continue  # the terminal sent it to the command's process group too
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, info.si_signo)


def cmd_watch(args: argparse.Namespace) -> int:
    """``coactive-credd watch``: one line per token rotation or state change, for a person
    (``--json``: the event objects, one per line, for a script). Exit 3 when the daemon
    cannot be reached or stops."""
    profile = args.profile and coactive_token.check_profile_name(args.profile)
    sock = coactive_token.default_socket_path()
    for ev in coactive_token.watch(profile, socket_path=sock):
        if args.json:
            line = json.dumps(ev, separators=(",", ":"))
        else:
            sha = ev.get("token_sha256")
            line = " ".join(
                [
                    time.strftime("%H:%M:%S"),
                    str(ev.get("profile")),
                    str(ev.get("state")),
                    f"expires {ev['expires_at']}" if ev.get("expires_at") else "",
                    f"token sha256:{sha[:12]}" if sha else "no token",
                ]
            )
        print(" ".join(line.split()) if not args.json else line, flush=True)
    raise coactive_token.DaemonUnreachable(
        f"coactive-credd on {sock} closed the event stream (it stopped)",
        hint="start it again: coactive-credd serve",
        code="unreachable",
    )
