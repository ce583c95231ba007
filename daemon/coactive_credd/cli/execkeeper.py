"""The token file of ``exec``: where it goes (``--token-file``, else a fresh private folder),
the thread that keeps it holding the current token (following ``/v1/events``), and the
process that removes it however exec ends (see :mod:`execrun`).

Standard library only (and the client shim): this runs on every ``exec``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import threading
import time
from pathlib import Path

import coactive_token

from coactive_credd.core import tokenfile

DEAD = ("expired", "locked", "no_token")  # states with no token to serve
# reauth_required may still serve a token (a rotation's rejected new credential): ask
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


def keep(keeper: Keeper, made: Path | None) -> int:
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


def token_path(given: str | None) -> tuple[Path, Path | None]:
    """The token file and the folder made for it (None: the user's own folder)."""
    if given:
        return Path(os.path.abspath(os.path.expanduser(given))), None
    folder = Path(_exec_base()) / f"coactive-exec-{os.urandom(8).hex()}"
    os.mkdir(folder, 0o700)  # fails rather than reuse anything already there
    os.chmod(folder, 0o700)  # whatever the umask
    return folder / "token", folder
