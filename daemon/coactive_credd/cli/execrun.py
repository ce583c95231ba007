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
by one). It relays only what the command could not have got itself: a terminal's Ctrl-C
reaches a foreground command directly; off a terminal the command gets a process group of
its own, so a signal to exec's group (``kill -TERM -PGID``) reaches it once, through exec;
under systemd, a signal from systemd to the main process of a service is not relayed
(``KillMode=control-group``, the default, sends it to every process of the service).

The command gets the parent-death signal (``SIGTERM``, Linux's ``PR_SET_PDEATHSIG``): if exec
is killed, even by ``SIGKILL``, the command is told to stop. The token file is removed on
every way out: by exec itself, or, if exec was killed, by a small helper process forked
before anything else that waits for exec to end (a pipe only exec holds open). Without the
daemon, exec removes the file when the token stops being served (``serve_until``, the
daemon's own ``expires_at - skew``), as the daemon does its own.

The file is ``--token-file PATH`` when given (its folder must be the user's and writable by
nobody else, and the folders above it safe), else ``token`` in a fresh private folder under
``$XDG_RUNTIME_DIR``, ``$TMPDIR`` or ``/tmp``: the first that passes the safe-path rule.

Standard library only: this runs on every ``exec``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import stat
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

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
DEAD = ("expired", "locked", "no_token")  # states with no token to serve
# reauth_required may still serve a token (a rotation's rejected new credential): ask
PR_SET_PDEATHSIG = 1  # prctl(2)
DEATH_SIGNAL = signal.SIGTERM
SI_USER = 0  # si_code of a signal kill(2) sent
RECONNECT = 1.0  # seconds before following the daemon again after the stream broke


class Keeper(threading.Thread):
    """Keeps ``path`` holding the profile's current token while the command runs."""

    def __init__(
        self,
        sock: str,
        profile: str,
        path: Path,
        first: coactive_token.Token,
        serve_until: float | None = None,
    ) -> None:
        super().__init__(name="coactive-token-file", daemon=True)
        self.sock, self.profile, self.path = sock, profile, path
        self.token: str | None = first.access_token
        # when the daemon stops serving it (expires_at - skew), epoch seconds
        self.expires_at = serve_until or first.expires_at.timestamp()
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
            until = serve_until(client.status(), tok.profile)
        with self.lock:
            if not self.done.is_set() and tok.access_token != self.token:
                tokenfile.write(self.path, tok.access_token)
                self.token = tok.access_token
            self.expires_at = until or tok.expires_at.timestamp()

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
                    elif ev.get("state") == "reauth_required":
                        try:
                            self._fetch()  # still served (a rotation's old token), or not
                        except coactive_token.CredddError:
                            self._drop()
                    elif sha and sha != self.seen:  # the first event, then each rotation
                        self.seen = sha
                        self._fetch()
            except (coactive_token.CredddError, OSError):
                pass  # the old token stays while it is valid; try again shortly
            if time.time() >= self.expires_at:  # the daemon is gone and so is the token
                self._drop()
            broke = True
            self.done.wait(min(RECONNECT, max(0.0, self.expires_at - time.time()) + 0.01))

    def stop(self) -> None:
        with self.lock:
            self.done.set()
            tokenfile.remove(self.path)


def serve_until(status: dict[str, object], profile: str) -> float | None:
    """The profile's ``serve_until`` in a ``/v1/status`` answer, epoch seconds (None if absent)."""
    from datetime import UTC, datetime

    profiles = status.get("profiles")
    for p in profiles if isinstance(profiles, list) else []:
        if (
            isinstance(p, dict)
            and p.get("name") == profile
            and isinstance(p.get("serve_until"), str)
        ):
            with contextlib.suppress(ValueError):
                moment = datetime.strptime(p["serve_until"], "%Y-%m-%dT%H:%M:%SZ")
                return moment.replace(tzinfo=UTC).timestamp()
    return None


def _prctl() -> Callable[..., int] | None:
    """libc's ``prctl`` (Linux), loaded before any fork; None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        return cast(Callable[..., int], ctypes.CDLL(None, use_errno=True).prctl)
    except (OSError, AttributeError):
        return None


def _in_foreground() -> bool:
    """Is exec in the foreground process group of its terminal (so Ctrl-C reaches all)?"""
    try:
        return os.tcgetpgrp(0) == os.getpgrp()
    except OSError:
        return False


def _spawn(command: list[str], env: dict[str, str], mask: set[int | signal.Signals]) -> int:
    """Start ``command`` (``fork`` and ``execvpe``; not ``posix_spawn``, which cannot ask for
    the parent-death signal), its pid. Called before any thread starts: between ``fork`` and
    ``exec`` the child only sets its process group, its parent-death signal, signal
    dispositions and mask (the caveats of subprocess's ``preexec_fn`` are about threads).
    PR_SET_PDEATHSIG follows the thread that forked, the main one, which lives as long as
    exec. Raises OSError (the child's, when it could not run the command)."""
    prctl = _prctl()
    own_group = not _in_foreground()
    parent = os.getpid()
    r, w = os.pipe()  # close-on-exec: a successful exec closes it, a failure writes errno
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child, measured by the tests' outcomes
        try:
            os.close(r)
            if own_group:
                os.setpgid(0, 0)
            if prctl is not None:
                prctl(PR_SET_PDEATHSIG, int(DEATH_SIGNAL), 0, 0, 0)
                if os.getppid() != parent:  # exec died before that: stop now
                    os._exit(128 + int(DEATH_SIGNAL))
            for sig in (signal.SIGPIPE, signal.SIGXFSZ):  # Python ignores them
                signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            os.execvpe(command[0], command, env)  # noqa: S606 - argv, as posix_spawnp took it
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.write(w, str(exc.errno or 0).encode())
        finally:
            os._exit(127)
    os.close(w)
    if own_group:
        with contextlib.suppress(OSError):
            os.setpgid(pid, pid)  # as the child does: whichever runs first
    err = os.read(r, 16)
    os.close(r)
    if err:
        os.waitpid(pid, 0)
        code = int(err)
        raise OSError(code, os.strerror(code))
    return pid


def _keep(keeper: Keeper, made: Path | None) -> int:
    """Fork the process that keeps the token file current (``keeper``'s thread) and removes
    it, and exec's folder, once exec has ended however it ended (``SIGKILL`` included): it
    waits for the end of a pipe only exec holds. In a session of its own, ignoring the
    signals a group or a terminal sends, so it outlives exec. Exec itself stays one thread:
    the parent-death signal follows the parent *thread*, and a child of a process with more
    threads gets it again as each one dies. Returns the pipe's end exec keeps open."""
    r, w = os.pipe()
    if os.fork() == 0:  # pragma: no cover - the keeper process
        try:
            os.close(w)
            os.setsid()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
                signal.signal(sig, signal.SIG_IGN)
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            keeper.start()
            while os.read(r, 1):
                pass
            keeper.stop()
            if made is not None:
                with contextlib.suppress(OSError):
                    os.rmdir(made)
        except BaseException:  # nowhere to report it: at least the file goes
            with contextlib.suppress(OSError):
                tokenfile.remove(keeper.path)
        finally:
            os._exit(0)
    os.close(r)
    return w


def _exec_base() -> str:
    """Where exec makes its folder: ``$XDG_RUNTIME_DIR``, else ``$TMPDIR``, else ``/tmp``,
    the first that exists and, with every folder above it, passes the safe-path rule (a
    folder another uid may write could swap exec's folder for one of its own). Raises
    tokenfile.TokenFileError when none does."""
    trusted = frozenset({0, os.geteuid()})
    tried: list[str] = []
    for base in (os.environ.get("XDG_RUNTIME_DIR"), os.environ.get("TMPDIR"), "/tmp"):  # noqa: S108
        if not base or not os.path.isabs(base) or base in tried:
            continue
        tried.append(base)
        try:
            st = os.stat(base)
        except OSError:
            continue
        if (
            stat.S_ISDIR(st.st_mode)
            and coactive_token.path_problem(base, st, trusted) is None
            and coactive_token.unsafe_parent(os.path.join(base, "x"), trusted) is None
        ):
            return base
    raise tokenfile.TokenFileError(
        f"no safe folder for the token file among {', '.join(tried)} (another user could "
        f"write there); set TMPDIR to a folder of yours, or pass --token-file PATH"
    )


def _token_path(given: str | None) -> tuple[Path, Path | None]:
    """The token file and the folder made for it (None: the user's own folder)."""
    if given:
        return Path(os.path.abspath(os.path.expanduser(given))), None
    folder = Path(_exec_base()) / f"coactive-exec-{os.urandom(8).hex()}"
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
    keeping = -1
    try:
        keeper = Keeper(sock, token.profile, path, token, serve_until(status, token.profile))
        env = dict(
            os.environ,
            COACTIVE_ACCESS_TOKEN=token.access_token,
            COACTIVE_ACCESS_TOKEN_FILE=str(path),
            COACTIVE_TOKEN_EXPIRES_AT=token.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            COACTIVE_BASE_URL=str(base_url or ""),
            COACTIVE_CREDD_SOCKET=sock,
            COACTIVE_PROFILE=token.profile,
        )
        # Block the signals before anything forks, so they wait for sigwaitinfo below.
        waited = {*RELAYED, signal.SIGCHLD}
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, waited)
        try:
            keeping = _keep(keeper, made)
            try:
                pid = _spawn(command, env, old_mask)
            except OSError as exc:
                print(
                    f"coactive-credd: cannot run {command[0]!r}: {exc.strerror}; check the command and PATH",
                    file=sys.stderr,
                )
                return 127 if isinstance(exc, FileNotFoundError) else 126
            status_code = _wait(pid)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    finally:
        tokenfile.remove(path)
        if made is not None:
            with contextlib.suppress(OSError):
                os.rmdir(made)
        if keeping >= 0:
            os.close(keeping)  # the keeper stops, finding nothing left to remove
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
        if from_service_manager(info):
            continue  # systemd sent it to every process of the service, the command too
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, info.si_signo)


wait = _wait  # for exec --proxy (execproxy), which relays signals the same way


def from_service_manager(info: signal.struct_siginfo) -> bool:
    """A signal systemd sent to the main process of a service (``INVOCATION_ID`` is set for
    every service process; exec is the main one when its parent is systemd, pid 1)."""
    return (
        info.si_code == SI_USER
        and info.si_pid == 1
        and os.getppid() == 1
        and bool(os.environ.get("INVOCATION_ID"))
    )


# Seconds `watch` waits for a restarted daemon before it exits 3: a service manager restarts
# one within a few (RestartSec=2s; a socket unit at once).
WATCH_GIVE_UP = 15.0


def cmd_watch(args: argparse.Namespace) -> int:
    """``coactive-credd watch``: one line per token rotation or state change, for a person
    (``--json``: the event objects, one per line, for a script). A daemon that restarts is
    followed again, as ``exec`` does (its first events repeat each profile's state). Exit 3
    when the daemon cannot be reached at the start, or stays away ``WATCH_GIVE_UP`` s."""
    profile = args.profile and coactive_token.check_profile_name(args.profile)
    sock = coactive_token.default_socket_path()
    followed = False
    while True:
        try:
            for ev in coactive_token.watch(profile, socket_path=sock):
                followed = True
                _print_event(ev, args.json)
        except coactive_token.DaemonUnreachable:
            if not followed:
                raise
        if not _back(sock, WATCH_GIVE_UP):
            raise coactive_token.DaemonUnreachable(
                f"coactive-credd on {sock} closed the event stream and did not come back "
                f"within {WATCH_GIVE_UP:g} s",
                hint="start it again: coactive-credd serve",
                code="unreachable",
            )


def _back(sock: str, within: float) -> bool:
    """Whether a daemon answers on ``sock`` again within ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        time.sleep(RECONNECT / 4)
        try:
            with coactive_token.Client(sock, timeout=2, autostart=False) as client:
                if client.request("GET", "/healthz")[0] == 200:
                    return True
        except coactive_token.UntrustedDaemon:
            raise
        except coactive_token.CredddError:
            pass
    return False


def _print_event(ev: dict[str, object], as_json: bool) -> None:
    if as_json:
        print(json.dumps(ev, separators=(",", ":")), flush=True)
        return
    sha = ev.get("token_sha256")
    line = " ".join(
        [
            time.strftime("%H:%M:%S"),
            str(ev.get("profile")),
            str(ev.get("state")),
            f"expires {ev['expires_at']}" if ev.get("expires_at") else "",
            f"token sha256:{str(sha)[:12]}" if sha else "no token",
        ]
    )
    print(" ".join(line.split()), flush=True)
