"""Get a current Coactive access token from the local coactive-credd daemon.

One stdlib-only module: vendor it by copying this file, or use the copy installed with
``coactive-credd``.  It speaks the daemon's socket protocol (HTTP/1.1 over a Unix socket)::

    import coactive_token
    token = coactive_token.get_token()                   # the access token, as a str
    info = coactive_token.fetch_token("prod", min_ttl=600)
    info.expires_at, info.authorization                  # aware UTC datetime, "Bearer ..."

    requests.get(url, auth=coactive_token.CoactiveAuth())  # or httpx.Client(auth=...)

Every failure is a ``CredddError``; each subclass also derives from the stdlib type a
caller would already catch, and carries the exit code the command-line shims use::

    CredddError (Exception)                 .code .message .hint .exit_code .status
    ├── DaemonUnreachable (ConnectionError)  exit 3  the daemon is not running
    │   ├── DaemonNotAnswering               exit 3  a daemon holds the socket but does not answer
    │   └── UntrustedDaemon                  exit 3  the socket or its daemon is not this user's
    ├── BadRequest (ValueError)              exit 2  bad_request, forbidden
    ├── UnknownProfile (LookupError)         exit 4  unknown_profile
    ├── ReauthRequired                       exit 5  reauth_required: log in again
    ├── UpstreamUnavailable                  exit 6  upstream_unavailable, no valid token
    └── VaultLocked                          exit 7  locked

Error messages never contain a token.

When no daemon answers (no socket, or connection refused), getting a token starts one in the
background, like git-credential-cache does, unless ``COACTIVE_CREDD_AUTOSTART=0`` or a user
service is installed (see :func:`autostart_enabled`).
"""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import sys
import threading
import time
from collections.abc import AsyncGenerator, Generator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlencode

if TYPE_CHECKING:
    import asyncio

__version__ = "0.1.0"  # the package's; tests check every shim says the same

__all__ = [
    "EXIT_LOCKED",
    "EXIT_OK",
    "EXIT_REAUTH",
    "EXIT_UNAVAILABLE",
    "EXIT_UNKNOWN_PROFILE",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "BadRequest",
    "Client",
    "CoactiveAuth",
    "CredddError",
    "DaemonNotAnswering",
    "DaemonUnreachable",
    "ReauthRequired",
    "Token",
    "UnknownProfile",
    "UntrustedDaemon",
    "UpstreamUnavailable",
    "VaultLocked",
    "aget_token",
    "autostart_enabled",
    "awatch",
    "daemon_uid",
    "default_profile",
    "default_socket_path",
    "fetch_token",
    "format_token",
    "get_token",
    "httpx_client",
    "httpx_transport",
    "main",
    "other_uid_may_serve",
    "proxy_socket",
    "requests_adapter",
    "requests_session",
    "start_daemon",
    "verify_daemon",
    "watch",
]

# The SPEC's exit codes, shared by every shim's command line.
EXIT_OK = 0
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_UNKNOWN_PROFILE = 4
EXIT_REAUTH = 5
EXIT_UNAVAILABLE = 6
EXIT_LOCKED = 7
EXIT_OTHER = 1  # an answer the protocol does not define; not one of the SPEC's codes

ENV_SOCKET = "COACTIVE_CREDD_SOCKET"
ENV_HOME = "COACTIVE_CREDD_HOME"
ENV_PROFILE = "COACTIVE_PROFILE"
ENV_AUTOSTART = "COACTIVE_CREDD_AUTOSTART"
ENV_COMMAND = "COACTIVE_CREDD_COMMAND"
DEFAULT_PROFILE = "default"
DEFAULT_TIMEOUT = 30.0
_MAX_SOCKET_PATH = 107  # bytes in sockaddr_un.sun_path, less the terminating NUL (Linux)
ALIVE_CHECK = 2.0  # seconds without an answer before asking whether the daemon is alive at all

START_HINT = "start it with: coactive-credd serve; or as a service: coactive-credd install-service"


# --------------------------------------------------------------------------- errors


class CredddError(Exception):
    """Root of every error this module raises.  ``str()`` is one line: ``message (hint)``."""

    exit_code = EXIT_OTHER

    def __init__(
        self, message: str, *, code: str = "error", hint: str = "", status: int | None = None
    ) -> None:
        self.code = code
        self.message = _one_line(message)
        self.hint = _one_line(hint)
        self.status = status
        super().__init__(self.message)

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class DaemonUnreachable(CredddError, ConnectionError):
    """Nothing answers on the socket, or the daemon did not answer in time."""

    exit_code = EXIT_UNREACHABLE


class DaemonNotAnswering(DaemonUnreachable):
    """A daemon holds the socket but did not answer in time (wedged, or stopped): starting
    another one would not help, ``coactive-credd stop`` ends it.  Exit 3."""


class BadRequest(CredddError, ValueError):
    """The daemon refused the request as malformed, or refused this user (``forbidden``)."""

    exit_code = EXIT_USAGE


class UnknownProfile(CredddError, LookupError):
    """No profile of that name is configured."""

    exit_code = EXIT_UNKNOWN_PROFILE


class ReauthRequired(CredddError):
    """Coactive rejected the stored credentials; ``coactive-credd login`` again."""

    exit_code = EXIT_REAUTH


class UpstreamUnavailable(CredddError):
    """There is no valid token and Coactive cannot be reached right now."""

    exit_code = EXIT_UNAVAILABLE


class VaultLocked(CredddError):
    """The daemon's vault is locked (passphrase mode)."""

    exit_code = EXIT_LOCKED


_BY_CODE: dict[str, type[CredddError]] = {
    "bad_request": BadRequest,
    "forbidden": BadRequest,
    "unknown_profile": UnknownProfile,
    "reauth_required": ReauthRequired,
    "upstream_unavailable": UpstreamUnavailable,
    "locked": VaultLocked,
}
# Used only when an error answer carries no recognisable code.
_BY_STATUS: dict[int, str] = {
    400: "bad_request",
    403: "forbidden",
    404: "unknown_profile",
    423: "locked",
    424: "reauth_required",
    503: "upstream_unavailable",
}


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _error_from_answer(status: int, body: bytes) -> CredddError:
    """Translate an error answer ``{"error": {"code", "message", "hint"}}`` to its class."""
    code = message = hint = ""
    try:
        err = json.loads(body.decode("utf-8"))["error"]
        code = str(err.get("code") or "")
        message = str(err.get("message") or "")
        hint = str(err.get("hint") or "")
    except (ValueError, TypeError, KeyError, AttributeError):
        pass
    if code not in _BY_CODE:
        code = code or _BY_STATUS.get(status, f"http_{status}")
    cls = _BY_CODE.get(code, CredddError)
    return cls(
        message or f"coactive-credd answered {status} ({code})", code=code, hint=hint, status=status
    )


def _unreachable(socket_path: str, exc: BaseException) -> DaemonUnreachable:
    if isinstance(exc, TimeoutError):
        pid = _daemon_pid(socket_path)
        who = f"coactive-credd (pid {pid})" if pid else "coactive-credd"
        return DaemonNotAnswering(
            f"{who} is not answering on {socket_path}",
            code="unreachable",
            hint="`coactive-credd stop` ends it; the next command starts a fresh one",
        )
    size = len(os.fsencode(socket_path))
    if size > _MAX_SOCKET_PATH:
        return DaemonUnreachable(
            f"the socket path {socket_path} is {size} bytes, longer than the "
            f"{_MAX_SOCKET_PATH} a Unix socket allows",
            code="unreachable",
            hint=f"`export {ENV_SOCKET}=SHORTER_PATH` (or a shorter {ENV_HOME})",
        )
    if isinstance(exc, FileNotFoundError):
        what = f"the coactive-credd daemon is not running (no socket at {socket_path})"
    elif isinstance(exc, ConnectionRefusedError):
        what = f"the coactive-credd daemon is not running (nothing listens on {socket_path})"
    elif isinstance(exc, PermissionError):
        what = f"cannot open coactive-credd's socket {socket_path}: permission denied"
    else:
        what = f"lost the connection to coactive-credd on {socket_path}"
    return DaemonUnreachable(what, code="unreachable", hint=start_hint())


def start_hint() -> str:
    """The command that starts the daemon here: the user service's when one is installed."""
    manager = installed_service()
    if manager == "launchd":
        return "start it with: launchctl kickstart gui/$(id -u)/ai.coactive.credd"
    if manager == "systemd":
        return "start it with: systemctl --user start coactive-credd.socket"
    return START_HINT


def _daemon_pid(socket_path: str) -> int | None:
    """The pid the daemon wrote in its lock file beside the socket (for messages only)."""
    try:
        with open(socket_path + ".lock", "rb") as f:
            raw = f.read(32).strip()
    except OSError:
        return None
    return int(raw) if raw.isdigit() else None


# --------------------------------------------------------------------------- trust
#
# Before a byte goes to the socket, the client checks whom it talks to (docs/SECURITY.md):
# the socket's folder belongs to this user (or root) and nobody else can write to it, and the
# process that answers runs as this user (the kernel says so: SO_PEERCRED on Linux,
# LOCAL_PEERCRED on macOS).  COACTIVE_CREDD_DAEMON_UID=N trusts uid N as well (an app
# container beside a sidecar).  The same rule, :func:`path_problem`, is the daemon's and the
# CLI's "safe path" rule for every file and folder they touch (coactive_credd.fsutil).

ENV_DAEMON_UID = "COACTIVE_CREDD_DAEMON_UID"


class UntrustedDaemon(DaemonUnreachable):
    """The socket's folder or the process answering on it is not this user's: nothing was
    sent to it.  Exit 3, like any daemon that cannot be reached."""


_UID_NUMBER = re.compile(r"0|[1-9][0-9]{0,9}")  # ASCII only: [0-9], never \d
_MAX_UID = 2**32 - 2  # (uid_t)-1 is "no uid"


def daemon_uid() -> int | None:
    """``$COACTIVE_CREDD_DAEMON_UID`` as a uid, ``None`` when unset or empty.

    Only ASCII decimal digits are a uid, as ``id -u`` prints it: no sign, space or leading
    zero, at most 4294967294 (tests/vectors/safe_path.json ``daemon_uid``; every client
    parses it so).  Anything else raises :class:`BadRequest` (exit 2), naming no value."""
    raw = os.environ.get(ENV_DAEMON_UID, "")
    if not raw:
        return None
    if not _UID_NUMBER.fullmatch(raw) or int(raw) > _MAX_UID:
        raise BadRequest(
            f"{ENV_DAEMON_UID} is not a uid number",
            hint=f"set it to the daemon's uid in ASCII digits, as `id -u` prints it, or unset {ENV_DAEMON_UID}",
            code="bad_request",
        )
    return int(raw)


def trusted_uids(*, daemon: bool = True) -> frozenset[int]:
    """The uids a file, folder or daemon may belong to: this user and root, and with
    ``daemon`` the uid in ``$COACTIVE_CREDD_DAEMON_UID`` (:func:`daemon_uid`; its
    :class:`BadRequest` when malformed)."""
    uids = {os.geteuid(), 0}
    extra = daemon_uid() if daemon else None
    if extra is not None:
        uids.add(extra)
    return frozenset(uids)


# What a daemon of $COACTIVE_CREDD_DAEMON_UID (a sidecar) may be asked: tokens, events and
# status, and a refresh (which carries no secret).  Everything else, a passphrase or a
# credential above all (/v1/admin/unlock, /v1/admin/credentials), goes only to a daemon of
# the user's own uid (or root's, who could read it anyway).  SPEC: "Clients trust only their
# own user's daemon".
_SIDECAR_REQUESTS = frozenset(
    {
        ("GET", "/healthz"),
        ("GET", "/v1/token"),
        ("GET", "/v1/credential"),
        ("GET", "/v1/events"),
        ("GET", "/v1/status"),
        ("POST", "/v1/token/refresh"),
    }
)


def other_uid_may_serve(method: str, path: str) -> bool:
    """Whether the request ``method path`` may go to a daemon (and socket folder) of the
    trusted-but-other uid ``$COACTIVE_CREDD_DAEMON_UID``.  The one place that decides it:
    :class:`Client` asks it before each request, whatever connection carries it."""
    return (method, path.split("?", 1)[0]) in _SIDECAR_REQUESTS


def _quote(path: str) -> str:
    return path if re.fullmatch(r"[\w@%+=:,./-]+", path) else "'" + path.replace("'", "'\\''") + "'"


def runtime_fallback_root() -> str:
    """``/tmp/runtime-$UID``: the runtime folder used when ``XDG_RUNTIME_DIR`` is unset."""
    return f"/tmp/runtime-{os.getuid()}"  # noqa: S108 - created 0700 and verified like tmux's


def path_problem(path: str, st: os.stat_result, trusted: frozenset[int]) -> tuple[str, str] | None:
    """The safe-path rule for one file or folder, after OpenSSH's ``safe_path``.

    ``st`` is its ``lstat``.  Answers ``None`` when it is owned by a uid in ``trusted`` and
    writable by nobody else (root-owned sticky folders such as ``/tmp`` excepted), else
    ``(what is wrong, the command that fixes it)``.  The runtime fallback
    (:func:`runtime_fallback_root`) must be this user's own and private, as tmux's is.
    """
    if (
        st.st_uid in trusted
        and not st.st_mode & 0o022
        and not stat.S_ISLNK(st.st_mode)
        and not path.startswith("/tmp/runtime-")  # noqa: S108 - only compared
    ):
        return None  # the common case, decided without building any message
    quoted = _quote(path)
    if stat.S_ISLNK(st.st_mode):
        return "it is a symlink", f"rm {quoted}"
    mode = stat.S_IMODE(st.st_mode)
    euid = os.geteuid()
    runtime = os.environ.get("XDG_RUNTIME_DIR") or ""
    if path == runtime_fallback_root() and (st.st_uid != euid or mode & 0o077):
        return (
            f"owner uid {st.st_uid}, mode {mode:04o}; it must be yours with mode 0700 "
            "(another user may have made it to catch your credentials)",
            f"sudo rm -rf {quoted}  # or set XDG_RUNTIME_DIR to a private folder of yours",
        )
    if st.st_uid not in trusted:
        if runtime and (path + "/").startswith(runtime.rstrip("/") + "/"):
            fix = f"export XDG_RUNTIME_DIR=/run/user/{euid}  # after su: unset XDG_RUNTIME_DIR"
        else:
            fix = f"sudo chown {euid} {quoted}  # or remove it if you did not make it"
        return f"owner uid {st.st_uid}, not you (uid {euid})", fix
    if mode & 0o022 and not (stat.S_ISDIR(st.st_mode) and st.st_uid == 0 and mode & 0o1000):
        return f"mode {mode:04o}, writable by others", f"chmod go-w {quoted}"
    return None


def unsafe_parent(path: str, trusted: frozenset[int] | None = None) -> tuple[str, str, str] | None:
    """The first folder above ``path`` that breaks :func:`path_problem`, as ``(folder, what
    is wrong, fix)``, or ``None``.  Walks up to the home folder (included) or ``/``, both as
    written and with symlinks resolved; folders that do not exist yet are skipped."""
    trusted = trusted if trusted is not None else trusted_uids(daemon=False)
    home = os.path.abspath(os.path.expanduser("~"))
    stops = {home, os.path.realpath(home)}
    start = os.path.dirname(os.path.abspath(path))
    seen: set[str] = set()
    blocked: str | None = None
    for d in (start, os.path.realpath(start)):
        while d not in seen:
            seen.add(d)
            try:
                st = os.stat(
                    d
                )  # a symlinked folder is judged by its target; its own folder is next
            except FileNotFoundError:
                pass
            except PermissionError:
                blocked = blocked or d
            else:
                problem = path_problem(d, st, trusted)
                if problem is not None:
                    return d, *problem
            if d in stops:
                break
            d = os.path.dirname(d)
    if blocked is not None:
        return (
            blocked,
            "permission denied: a folder above it belongs to someone else",
            (
                "unset XDG_RUNTIME_DIR  # after su"
                if os.environ.get("XDG_RUNTIME_DIR")
                else f"ls -ld {_quote(blocked)}"
            ),
        )
    return None


def _verify_folder(socket_path: str, trusted: frozenset[int] | None = None) -> int | None:
    """The client's trust rule for the socket's folder (docs/SECURITY.md, one rule for every
    client, tests/vectors/safe_path.json); answers the folder's owner, ``None`` when there
    is no folder (no daemon).  Raises :class:`UntrustedDaemon` (exit 3), or
    :class:`BadRequest` (exit 2) for a malformed ``$COACTIVE_CREDD_DAEMON_UID``.

    - The folder, when it exists, must be a real folder (no symlink: the daemon never serves
      through one), owned by a uid in ``trusted`` and writable by nobody else (no sticky
      exception: the daemon's own folder is 0700, or 0711 when shared).
    - Every folder above it, up to the home folder or ``/``, as written and with symlinks
      resolved, must pass :func:`path_problem` (root-owned sticky folders excepted), whether
      or not the folder exists: a folder others may rename can be swapped under the check.
      With ``$COACTIVE_CREDD_DAEMON_UID`` set and the folder there, the folders above are the
      pod's (a Kubernetes ``emptyDir`` is ``0777``) and are not judged: the sidecar's folder
      is, and the kernel names who answers where the language can ask.
    """
    trusted = trusted if trusted is not None else trusted_uids()
    folder = os.path.dirname(socket_path) or "."
    try:
        st: os.stat_result | None = os.lstat(folder)
    except FileNotFoundError:  # no daemon; a folder above that is not safe is said now
        st = None
    except PermissionError:
        bad = unsafe_parent(folder, trusted)
        raise _untrusted(
            socket_path,
            bad[0] if bad else folder,
            bad[1:] if bad else ("permission denied", f"ls -ld {_quote(os.path.dirname(folder))}"),
        ) from None
    if st is not None:
        problem = path_problem(folder, st, trusted)
        if problem is None and not stat.S_ISDIR(st.st_mode):
            problem = ("not a folder", f"ls -ld {_quote(folder)}")
        if problem is None and st.st_mode & 0o022:  # a sticky /tmp is no socket folder
            problem = (
                f"mode {stat.S_IMODE(st.st_mode):04o}, writable by others",
                f"export {ENV_SOCKET}=A_FOLDER_OF_YOURS/credd.sock",
            )
        if problem is not None:
            more = _sidecar_hint(st.st_uid) if problem[1].startswith("sudo chown") else ""
            raise _untrusted(socket_path, folder, problem, more)
        if os.environ.get(ENV_DAEMON_UID):
            return st.st_uid
    bad = unsafe_parent(folder, trusted)
    if bad is not None:
        raise _untrusted(socket_path, bad[0], bad[1:])
    return None if st is None else st.st_uid


def _untrusted(
    socket_path: str, where: str, problem: tuple[str, str] | None, more: str = ""
) -> UntrustedDaemon:
    what, fix = problem or ("not yours", f"ls -ld {_quote(where)}")
    return UntrustedDaemon(
        f"refusing to talk to the daemon on {socket_path}: {where} is not safe ({what}); "
        "nothing was sent",
        code="untrusted_daemon",
        hint=f"fix it with `{fix}`{more}",
    )


def _sidecar_hint(owner: int) -> str:
    """For a socket folder of another uid ``owner`` (a sidecar's, perhaps) while
    ``$COACTIVE_CREDD_DAEMON_UID`` is unset: the app's way to trust that uid, said beside the
    chown; else ``""``."""
    if os.environ.get(ENV_DAEMON_UID):
        return ""
    return (
        f"; or, if uid {owner} runs your daemon (a sidecar), set "
        f"{ENV_DAEMON_UID}={owner} and list your uid {os.geteuid()} in its allowed_uids"
    )


def verify_daemon(
    socket_path: str | None = None, *, timeout: float = 5.0, own_uid_only: bool = False
) -> None:
    """Check, sending nothing, that the daemon on ``socket_path`` (default
    :func:`default_socket_path`) is one this user trusts: its folder, and the process
    answering if one does.  With ``own_uid_only`` (a command about to read a passphrase or
    a credential for the daemon), ``$COACTIVE_CREDD_DAEMON_UID`` is not trusted
    (:func:`other_uid_may_serve`).  Raises :class:`UntrustedDaemon` (exit 3); no daemon is
    fine."""
    path = socket_path or default_socket_path()
    trusted = trusted_uids()
    owner = _verify_folder(path, trusted)
    _own_uid_only(path, owner, None, own_uid_only)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except OSError:
            return  # nobody answers: nobody to trust
        _own_uid_only(path, owner, _verify_peer(sock, path, trusted), own_uid_only)
    finally:
        sock.close()


def _own_uid_only(
    socket_path: str, folder_uid: int | None, peer_uid: int | None, required: bool
) -> None:
    """With ``required``, refuse a socket folder or daemon of ``$COACTIVE_CREDD_DAEMON_UID``
    (trusted for tokens, events and status only): nothing was sent."""
    if not required:
        return
    own = trusted_uids(daemon=False)
    for what, uid in (("its folder belongs to", folder_uid), ("it runs as", peer_uid)):
        if uid is not None and uid not in own:
            raise UntrustedDaemon(
                f"refusing to send a passphrase or credential to the daemon on {socket_path}: "
                f"{what} uid {uid} ({ENV_DAEMON_UID}), not you (uid {os.geteuid()}); "
                "nothing was sent",
                code="untrusted_daemon",
                hint=f"run this command as uid {uid}, where its daemon runs, or unset "
                f"{ENV_DAEMON_UID} for a daemon of your own",
            )


def _peer_uid(sock: socket.socket) -> int | None:
    """The uid of the process at the other end of a connected Unix socket, as the kernel
    tells it; ``None`` where this platform cannot ask."""
    if sys.platform.startswith("linux"):
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)  # struct ucred
    elif sys.platform == "darwin":
        # struct xucred {u_int cr_version; uid_t cr_uid; ...} at level SOL_LOCAL (0).
        raw = sock.getsockopt(0, getattr(socket, "LOCAL_PEERCRED", 1), 76)
    else:
        return None
    return int.from_bytes(raw[4:8], sys.byteorder)


def _verify_peer(
    sock: socket.socket, socket_path: str, trusted: frozenset[int] | None = None
) -> int | None:
    """Refuse a daemon that does not run as this user (or root, or the trusted uid);
    answers its uid (``None`` where the platform cannot tell)."""
    try:
        uid = _peer_uid(sock)
    except OSError as exc:
        raise UntrustedDaemon(
            f"refusing to talk to the daemon on {socket_path}: cannot learn who runs it "
            f"({exc.strerror}); nothing was sent",
            code="untrusted_daemon",
            hint=START_HINT,
        ) from None
    trusted = trusted if trusted is not None else trusted_uids()
    if uid is not None and uid not in trusted:
        raise UntrustedDaemon(
            f"refusing to talk to the daemon on {socket_path}: it runs as uid {uid}, not as "
            f"you (uid {os.geteuid()}); nothing was sent",
            code="untrusted_daemon",
            hint=f"stop that process; if uid {uid} runs your daemon (a sidecar), set "
            f"{ENV_DAEMON_UID}={uid}",
        )
    return uid


# --------------------------------------------------------------------------- defaults


def default_socket_path() -> str:
    """The socket path every shim and the daemon agree on (docs/ARCHITECTURE.md)."""
    explicit = os.environ.get(ENV_SOCKET)
    if explicit:
        return explicit
    home = os.environ.get(ENV_HOME)
    if home:
        return os.path.join(home, "credd.sock")
    if sys.platform == "darwin":
        return os.path.join(
            os.path.expanduser("~"), "Library/Caches/TemporaryItems/coactive-credd/credd.sock"
        )
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return os.path.join(runtime, "coactive-credd", "credd.sock")
    uid = os.getuid()
    if os.path.isdir(f"/run/user/{uid}"):
        return f"/run/user/{uid}/coactive-credd/credd.sock"
    return f"/tmp/runtime-{uid}/coactive-credd/credd.sock"  # noqa: S108 - per-uid, 0700


def default_profile() -> str:
    """``$COACTIVE_PROFILE``, or ``default``."""
    return os.environ.get(ENV_PROFILE) or DEFAULT_PROFILE


# --------------------------------------------------------------------------- autostart

AUTOSTART_WAIT = 10.0  # seconds a daemon started here gets to answer
LOG_NAME = "credd.log"  # beside the socket: the started daemon's stdout and stderr
# What `coactive-credd install-service` writes: with one of these, the service manager owns
# the daemon, and a shim starting its own would compete with it.
_SYSTEMD_UNITS = ("coactive-credd.socket", "coactive-credd.service")
_LAUNCHD_PLIST = os.path.join("Library", "LaunchAgents", "ai.coactive.credd.plist")
# A service manager's protocols address the caller (if it runs as a service), never a daemon
# the caller starts: that daemon would report itself ready on the caller's behalf.
_SERVICE_ENV = (
    "NOTIFY_SOCKET",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
)


def installed_service() -> str | None:
    """``systemd`` or ``launchd`` when coactive-credd's user unit or agent is installed."""
    home = os.path.expanduser("~")
    config_dirs = [
        d for d in (os.environ.get("XDG_CONFIG_HOME"), os.path.join(home, ".config")) if d
    ]
    units = [os.path.join(d, "systemd", "user", u) for d in config_dirs for u in _SYSTEMD_UNITS]
    if any(os.path.lexists(p) for p in units):
        return "systemd"
    if os.path.lexists(os.path.join(home, _LAUNCHD_PLIST)):
        return "launchd"
    return None


def service_installed() -> bool:
    """Whether a systemd user unit or a launchd agent for coactive-credd is installed."""
    return installed_service() is not None


def autostart_enabled() -> bool:
    """Whether a caller that finds no daemon starts one: ``$COACTIVE_CREDD_AUTOSTART`` ``1``
    or ``0``; unset, on unless a user service is installed."""
    value = os.environ.get(ENV_AUTOSTART, "").strip().lower()
    if value in ("0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    return not service_installed()


def _no_daemon(exc: BaseException) -> bool:
    """The connection failed because nothing serves the socket (not: slow, or not ours)."""
    return isinstance(exc, FileNotFoundError | ConnectionRefusedError)


def start_daemon(socket_path: str | None = None, *, wait: float = AUTOSTART_WAIT) -> None:
    """Start ``coactive-credd serve`` in the background and wait until it answers.

    The daemon runs in its own session with stdin from /dev/null and its output appended to
    ``credd.log`` (0600) in the socket's private folder; it gets this process's environment.
    When many callers start one at once, the daemon's startup lock lets one serve and the
    others exit "already running": their callers wait for the one that won.  Raises
    :class:`DaemonUnreachable`, naming the log, when no daemon answers in ``wait`` seconds.
    """
    sock = os.path.abspath(socket_path or default_socket_path())
    folder = os.path.dirname(sock)
    log_path = os.path.join(folder, LOG_NAME)
    not_running = f"the coactive-credd daemon is not running on {sock}"
    try:
        _private_folder(folder)
        log_fd = os.open(
            log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
        )
    except OSError as exc:
        # Starting one elsewhere would not help: the folder is what needs fixing.
        raise DaemonUnreachable(
            f"{not_running} and cannot be started there: {exc}",
            code="unreachable",
            hint=f"make the folder yours and private: `chmod 700 {folder}`, or set {ENV_HOME}",
        ) from None
    argv = _serve_argv(sock)
    try:
        os.fchmod(log_fd, 0o600)
        offset = os.fstat(log_fd).st_size
        pid = _spawn(argv, log_fd)
    except OSError as exc:
        raise _start_failed(
            f"{not_running} and {argv[0]} could not be started ({exc.strerror}); "
            f"set {ENV_COMMAND} to the coactive-credd executable"
        ) from None
    finally:
        os.close(log_fd)
    deadline = time.monotonic() + wait
    running = True
    while True:
        if running:
            try:
                running = os.waitpid(pid, os.WNOHANG)[0] == 0
            except ChildProcessError:  # reaped by the caller's own child handling
                running = False
            else:
                # Another daemon holding the socket is why ours left: wait for that one.
                if not running and not _lost_race(log_path, offset):
                    why = _last_words(log_path, offset)
                    raise _start_failed(
                        f"{not_running} and starting it failed{why}; see {log_path}"
                    )
        if _answers(sock, max(deadline - time.monotonic(), 0.05)):
            break
        if time.monotonic() >= deadline:
            if running:
                _reap_later(pid)
            raise _start_failed(
                f"coactive-credd was started but did not answer on {sock} within {wait:g} s; "
                f"see {log_path}"
            )
        time.sleep(0.025)
    if running:
        _reap_later(pid)


def _start_failed(message: str) -> DaemonUnreachable:
    return DaemonUnreachable(message, code="unreachable", hint=start_hint())


def _private_folder(folder: str) -> None:
    """Create ``folder`` and its missing parents 0700, or check that it is ours and private,
    as the daemon will: otherwise the log would be written where others can reach it."""
    bad = unsafe_parent(os.path.join(folder, LOG_NAME))
    if bad is not None:
        raise PermissionError(f"{bad[0]} is not safe ({bad[1]}); fix it with `{bad[2]}`")
    missing: list[str] = []
    probe = folder
    while not os.path.lexists(probe) and os.path.dirname(probe) != probe:
        missing.append(probe)
        probe = os.path.dirname(probe)
    for d in reversed(missing):
        try:
            os.mkdir(d, 0o700)
        except FileExistsError:  # another caller made it just now
            continue
        os.chmod(d, 0o700)  # mkdir's mode went through the umask
    st = os.lstat(folder)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise PermissionError(f"{folder} must be a folder of yours with mode 0700")


def _serve_argv(sock: str) -> list[str]:
    command = os.environ.get(ENV_COMMAND)
    if not command:
        import importlib.util

        # The same interpreter that has the package needs no PATH (a venv, pipx).
        if sys.executable and importlib.util.find_spec("coactive_credd") is not None:
            return [sys.executable, "-m", "coactive_credd", "serve", "--socket", sock]
        command = "coactive-credd"
    return [command, "serve", "--socket", sock]


def _spawn(argv: list[str], log_fd: int) -> int:
    """Start ``argv`` detached: no fork of this (perhaps threaded) process, no inherited
    stdout a caller's ``$(...)`` would wait on."""
    env = {k: v for k, v in os.environ.items() if k not in _SERVICE_ENV}
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_DUP2, log_fd, 1),
        (os.POSIX_SPAWN_DUP2, log_fd, 2),
    ]
    spawn = os.posix_spawn if os.sep in argv[0] else os.posix_spawnp
    try:
        return spawn(argv[0], argv, env, file_actions=actions, setsid=True)
    except NotImplementedError:  # a libc without POSIX_SPAWN_SETSID: its own group, at least
        return spawn(argv[0], argv, env, file_actions=actions, setpgroup=0)


def _answers(sock: str, timeout: float) -> bool:
    """``GET /healthz`` answers 200.  A daemon still loading has its socket bound already:
    the connection waits in the backlog until it serves (or is reset if it fails)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        s.connect(sock)
        _verify_peer(s, sock)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        head = b""
        while b"\r\n" not in head and len(head) < 64:
            chunk = s.recv(64)
            if not chunk:
                break
            head += chunk
        return head.split(b" ", 2)[1:2] == [b"200"]
    except (OSError, BadRequest):
        return False
    finally:
        s.close()


def _lost_race(log_path: str, offset: int) -> bool:
    """The daemon started here left because another one holds the socket (its last words)."""
    try:
        with open(log_path, "rb") as f:
            f.seek(offset)
            return b"already running" in f.read(1 << 16)
    except OSError:
        return False


LAST_WORDS_MAX = 200  # characters of the daemon's last log line a failed start shows


def _last_words(log_path: str, offset: int) -> str:
    """``": <why>"``: the last line the daemon wrote to its log since ``offset`` (why it
    failed: the daemon's log never holds a secret), without its ``coactive-credd: `` prefix,
    control characters escaped, cut to :data:`LAST_WORDS_MAX` characters; ``""`` when none."""
    try:
        with open(log_path, "rb") as f:
            f.seek(max(offset, os.fstat(f.fileno()).st_size - (1 << 16)))
            data = f.read(1 << 16)
    except OSError:
        return ""
    lines = [ln.strip() for ln in data.decode("utf-8", "replace").splitlines() if ln.strip()]
    if not lines:
        return ""
    line = lines[-1].partition("coactive-credd: ")[2] or lines[-1]
    line = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in line)
    if len(line) > LAST_WORDS_MAX:
        line = line[: LAST_WORDS_MAX - 1] + "\u2026"
    return f": {line}"


def _reap_later(pid: int) -> None:
    """Collect the daemon's exit status whenever it ends, so a long-running caller never
    keeps it as a zombie."""

    import contextlib

    def reap() -> None:
        with contextlib.suppress(ChildProcessError):  # the caller's own child handling got it
            os.waitpid(pid, 0)

    threading.Thread(target=reap, name="coactive-credd-reaper", daemon=True).start()


# --------------------------------------------------------------------------- the token


class Token:
    """One access token as the daemon served it.  ``repr()`` never shows the token.

    A plain class rather than a dataclass: importing dataclasses costs a command-line shim
    about 5 ms of its start-up, a tenth of its whole run.
    """

    __slots__ = ("access_token", "expires_at", "expires_in", "profile", "token_type")

    def __init__(
        self,
        profile: str,
        access_token: str,
        token_type: str,
        expires_at: datetime,
        expires_in: int,
    ) -> None:
        self.profile = profile
        self.access_token = access_token
        self.token_type = token_type
        self.expires_at = expires_at
        self.expires_in = expires_in

    def _key(self) -> tuple[str, str, str, datetime, int]:
        return (self.profile, self.access_token, self.token_type, self.expires_at, self.expires_in)

    def __eq__(self, other: object) -> bool:
        return self._key() == other._key() if isinstance(other, Token) else NotImplemented

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (
            f"Token(profile={self.profile!r}, token_type={self.token_type!r}, "
            f"expires_at={self.expires_at.isoformat()!r}, expires_in={self.expires_in})"
        )

    @property
    def authorization(self) -> str:
        """The ``Authorization`` header value: ``Bearer <token>``."""
        return f"Bearer {self.access_token}"

    def to_dict(self) -> dict[str, Any]:
        """The daemon's JSON shape (``expires_at`` as RFC 3339 UTC)."""
        return {
            "profile": self.profile,
            "access_token": self.access_token,
            "token_type": self.token_type,
            "expires_at": self.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "expires_in": self.expires_in,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Token:
        try:
            expires_at = datetime.fromisoformat(str(data["expires_at"]))
            if expires_at.tzinfo is None:
                expires_at = expires_at.replace(tzinfo=UTC)
            return cls(
                profile=str(data["profile"]),
                access_token=str(data["access_token"]),
                token_type=str(data.get("token_type") or "Bearer"),
                expires_at=expires_at.astimezone(UTC),
                expires_in=int(data["expires_in"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            # Name only the fault: the answer holds a token.
            raise CredddError(
                f"coactive-credd sent a malformed token answer ({type(exc).__name__})",
                code="bad_answer",
            ) from None


def format_token(token: Token, fmt: str = "raw") -> str:
    """Render a token as ``raw`` (the token), ``json``, ``header`` or ``env`` (sh syntax)."""
    if fmt == "raw":
        return token.access_token
    if fmt == "json":
        return json.dumps(token.to_dict())
    if fmt == "header":
        return f"Authorization: {token.authorization}"
    if fmt == "env":
        quoted = "'" + token.access_token.replace("'", "'\\''") + "'"
        return f"export COACTIVE_ACCESS_TOKEN={quoted}"
    raise ValueError(f"unknown format {fmt!r}: use raw, json, header or env")


def token_sha256(access_token: str) -> str:
    """The hex digest the daemon expects in ``rejected_token_sha256``."""
    import hashlib

    return hashlib.sha256(access_token.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- sync client


class _BadAnswer(Exception):
    """The other end of the socket did not answer in HTTP/1.1."""


_MAX_HEAD = 64 * 1024


class _Connection:
    """One keep-alive HTTP/1.1 connection to the daemon's socket.

    Written by hand rather than with http.client: that import alone costs a command-line
    caller about 17 ms, a quarter of its whole run, and the daemon's answers are small and
    always carry a Content-Length.
    """

    def __init__(self, socket_path: str, timeout: float) -> None:
        trusted = trusted_uids()
        self.folder_uid = _verify_folder(socket_path, trusted)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # A stopped daemon's listener still accepts into its backlog, so waits are short
            # and a slow answer is checked on (see _fill), not waited out for `timeout`.
            sock.settimeout(min(timeout, ALIVE_CHECK))
            sock.connect(socket_path)
            self.peer_uid = _verify_peer(sock, socket_path, trusted)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self.path = socket_path
        self.timeout = timeout
        self.deadline = 0.0
        self.buf = b""

    def close(self) -> None:
        self.sock.close()

    def _fill(self) -> bool:
        while True:
            try:
                chunk = self.sock.recv(65536)
                break
            except TimeoutError:
                # A daemon waiting on Coactive still answers /healthz at once; one that does
                # not is stopped or wedged: say so now rather than after the whole timeout.
                if time.monotonic() >= self.deadline or not _answers(self.path, ALIVE_CHECK):
                    raise
        self.buf += chunk
        return bool(chunk)

    def request(self, method: str, path: str, payload: bytes | None) -> tuple[int, bytes, bool]:
        """Send one request; answers (status, body, whether the daemon closes after it)."""
        head = f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n"
        if payload is not None:
            head += "Content-Type: application/json\r\n"
        if payload is not None or method != "GET":
            head += f"Content-Length: {len(payload or b'')}\r\n"
        self.deadline = time.monotonic() + self.timeout
        self.sock.sendall(head.encode("ascii") + b"\r\n" + (payload or b""))
        while b"\r\n\r\n" not in self.buf:
            if len(self.buf) > _MAX_HEAD or not self._fill():
                raise _BadAnswer("no complete answer")
        raw_head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        version, status, headers = _parse_head(raw_head)
        closes = version != b"HTTP/1.1" or headers.get(b"connection", b"").lower() == b"close"
        if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            while b"\r\n0\r\n\r\n" not in b"\r\n" + self.buf:
                if not self._fill():
                    raise _BadAnswer("chunked answer cut short")
            end = (b"\r\n" + self.buf).index(b"\r\n0\r\n\r\n") + 5
            body, self.buf = _dechunk(self.buf[:end]), self.buf[end:]
        elif b"content-length" in headers:
            try:
                length = int(headers[b"content-length"])
            except ValueError:
                raise _BadAnswer("bad Content-Length") from None
            while len(self.buf) < length:
                if not self._fill():
                    raise _BadAnswer("answer cut short")
            body, self.buf = self.buf[:length], self.buf[length:]
        else:  # delimited by the end of the connection
            while self._fill():
                pass
            body, self.buf, closes = self.buf, b"", True
        return status, body, closes


def _parse_head(raw: bytes) -> tuple[bytes, int, dict[bytes, bytes]]:
    """The HTTP version, status and lower-cased headers of an answer's head."""
    lines = raw.split(b"\r\n")
    try:
        version, code = lines[0].split()[:2]
        status = int(code)
    except ValueError:
        raise _BadAnswer("bad status line") from None
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return version, status, headers


def _dechunk(data: bytes) -> bytes:
    out, rest = bytearray(), data
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        try:
            size = int(size_line.split(b";")[0] or b"0", 16)
        except ValueError:
            raise _BadAnswer("bad chunk size") from None
        if size == 0:
            break
        out += rest[:size]
        rest = rest[size + 2 :]
    return bytes(out)


_PROFILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_profile_name(name: str) -> str:
    """Return ``name`` if it is a valid profile name; else raise :class:`BadRequest`."""
    if not _PROFILE_NAME.fullmatch(name):
        raise BadRequest(
            f"invalid profile name {name!r}",
            hint="use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
            code="bad_request",
        )
    return name


def _token_path(route: str, profile: str | None, min_ttl: int | None) -> str:
    query: dict[str, str | int] = {"profile": check_profile_name(profile or default_profile())}
    if min_ttl:
        query["min_ttl"] = int(min_ttl)
    return f"{route}?{urlencode(query)}"


def _refresh_request(
    profile: str | None, rejected_token: str | None
) -> tuple[str, dict[str, Any] | None]:
    body = (
        None if rejected_token is None else {"rejected_token_sha256": token_sha256(rejected_token)}
    )
    return _token_path("/v1/token/refresh", profile, None), body


def _check_min_ttl(min_ttl: int) -> None:
    if isinstance(min_ttl, bool) or not isinstance(min_ttl, int) or min_ttl < 0:
        raise BadRequest("min_ttl must be a whole number of seconds, 0 or more", code="bad_request")


class Client:
    """A connection to the daemon, kept alive between calls; safe to share between threads.

    ``socket_path`` defaults to :func:`default_socket_path`; ``timeout`` bounds each call
    (a call that has to wait for Coactive can take a while).  When no daemon answers,
    :meth:`token` and :meth:`refresh` start one (:func:`start_daemon`) if ``autostart`` and
    :func:`autostart_enabled` allow; :meth:`status` and :meth:`request` never do: they ask
    about the daemon that is there.
    """

    def __init__(
        self,
        socket_path: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        autostart: bool = True,
    ) -> None:
        self.socket_path = socket_path or default_socket_path()
        self.timeout = timeout
        self.autostart = autostart
        self._conn: _Connection | None = None
        self._used = False  # the open connection has already carried a request
        self._lock = threading.Lock()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _roundtrip(
        self, method: str, path: str, body: dict[str, Any] | None, *, start: bool = False
    ) -> tuple[int, bytes]:
        payload = None if body is None else json.dumps(body).encode("utf-8")
        start = start and self.autostart
        if self._conn is None and not os.path.exists(self.socket_path):
            # No socket: an unsafe folder (or one above) may be why, and no daemon may be
            # started there; _Connection checks the folder of a socket that exists.
            _verify_folder(self.socket_path)
            if not (start and autostart_enabled()):
                # Fail before trying to connect: the common "daemon not running" case.
                raise _unreachable(self.socket_path, FileNotFoundError()) from None
        with self._lock:
            while True:
                reused = self._conn is not None and self._used
                if self._conn is None:
                    self._used = False
                try:
                    if self._conn is None:
                        self._conn = _Connection(self.socket_path, self.timeout)
                    conn = self._conn
                    _own_uid_only(
                        self.socket_path,
                        conn.folder_uid,
                        conn.peer_uid,
                        not other_uid_may_serve(method, path),
                    )
                    status, data, closes = conn.request(method, path, payload)
                except UntrustedDaemon:
                    self._drop()
                    raise
                except (OSError, _BadAnswer) as exc:
                    self._drop()
                    # The daemon may close an idle keep-alive connection at any time: a request
                    # that failed on a reused connection is sent once more on a fresh one.
                    if reused and not isinstance(exc, TimeoutError):
                        continue
                    if not (start and _no_daemon(exc) and autostart_enabled()):
                        raise _unreachable(self.socket_path, exc) from None
                else:
                    self._used = True
                    if closes:
                        self._drop()
                    return status, data
                start = False  # once: a daemon that was started and still fails is reported
                start_daemon(self.socket_path)

    def request(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> tuple[int, dict[str, Any]]:
        """Send any request (e.g. admin calls); answers ``(status, JSON object)``.

        Error answers are returned, not raised; a body that is not a JSON object comes back
        as ``{"body": text}``.  Raises :class:`DaemonUnreachable` when there is no daemon.
        """
        status, data = self._roundtrip(method, path, body)
        return status, _json_object(data)

    def _call(
        self, method: str, path: str, body: dict[str, Any] | None = None, *, start: bool = False
    ) -> dict[str, Any]:
        status, data = self._roundtrip(method, path, body, start=start)
        if status >= 400:
            raise _error_from_answer(status, data)
        return _json_object(data)

    def token(self, profile: str | None = None, min_ttl: int = 0) -> Token:
        """The profile's current token, valid for at least ``min_ttl`` more seconds."""
        _check_min_ttl(min_ttl)
        return Token.from_dict(
            self._call("GET", _token_path("/v1/token", profile, min_ttl), start=True)
        )

    def refresh(self, profile: str | None = None, rejected_token: str | None = None) -> Token:
        """Force a new token; with ``rejected_token``, only if that token is still current."""
        path, body = _refresh_request(profile, rejected_token)
        return Token.from_dict(self._call("POST", path, body, start=True))

    def status(self) -> dict[str, Any]:
        """The daemon's status: version, pid, locked, profiles (never a secret)."""
        return self._call("GET", "/v1/status")


def _json_object(data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(data.decode("utf-8")) if data else {}
    except ValueError:
        return {"body": data.decode("utf-8", "replace")}
    return value if isinstance(value, dict) else {"body": value}


def fetch_token(
    profile: str | None = None, min_ttl: int = 0, *, socket_path: str | None = None
) -> Token:
    """The profile's current :class:`Token` (one short-lived connection)."""
    with Client(socket_path) as client:
        return client.token(profile, min_ttl)


def get_token(
    profile: str | None = None, min_ttl: int = 0, *, socket_path: str | None = None
) -> str:
    """The profile's current access token, valid for at least ``min_ttl`` more seconds."""
    return fetch_token(profile, min_ttl, socket_path=socket_path).access_token


# --------------------------------------------------------------------------- events


class _EventStream:
    """Incremental parser of ``GET /v1/events``: HTTP head, chunked body, SSE lines."""

    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        self.buf = b""
        self.head: dict[bytes, bytes] | None = None
        self.chunk_left = -1  # bytes left in the current chunk; -1: a size line comes next
        self.body = b""
        self.data: list[str] = []

    @staticmethod
    def request(profile: str | None) -> bytes:
        query = f"?profile={check_profile_name(profile)}" if profile else ""
        return (
            f"GET /v1/events{query} HTTP/1.1\r\nHost: localhost\r\n"
            f"Accept: text/event-stream\r\n\r\n"
        ).encode("ascii")

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        """The events completed by ``data``; raises the daemon's error for an error answer."""
        self.buf += data
        if self.head is None:
            if b"\r\n\r\n" not in self.buf:
                if len(self.buf) > _MAX_HEAD:
                    raise _unreachable(self.socket_path, ConnectionResetError())
                return []
            raw, _, self.buf = self.buf.partition(b"\r\n\r\n")
            try:
                _, status, self.head = _parse_head(raw)
            except _BadAnswer:
                raise _unreachable(self.socket_path, ConnectionResetError()) from None
            if status != 200:
                length = int(self.head.get(b"content-length", b"0") or 0)
                raise _error_from_answer(status, self.buf[:length])
        if self.head.get(b"transfer-encoding", b"").lower() != b"chunked":
            self.body, self.buf = self.body + self.buf, b""
        while self.buf:
            if self.chunk_left < 0:
                line, sep, rest = self.buf.partition(b"\r\n")
                if not sep:
                    break
                self.chunk_left, self.buf = int(line.split(b";")[0] or b"0", 16), rest
            take = self.buf[: self.chunk_left]
            self.body += take
            self.buf = self.buf[len(take) :]
            self.chunk_left -= len(take)
            if self.chunk_left == 0:
                if len(self.buf) < 2:
                    self.chunk_left = 0
                    break
                self.buf, self.chunk_left = self.buf[2:], -1
        events = []
        *lines, self.body = self.body.split(b"\n")
        for line in lines:
            text = line.rstrip(b"\r").decode("utf-8", "replace")
            if text.startswith("data:"):
                self.data.append(text[5:].lstrip(" "))
            elif not text and self.data:
                try:
                    ev = json.loads("\n".join(self.data))
                except ValueError:
                    ev = None
                self.data = []
                if isinstance(ev, dict):
                    events.append(ev)
        return events


def watch(
    profile: str | None = None, *, socket_path: str | None = None, timeout: float = 60.0
) -> Generator[dict[str, Any], None, None]:
    """Follow the daemon's ``GET /v1/events``: yields one dict per change of a profile's
    token or state, ``{"profile", "state", "expires_at", "token_sha256"}`` (never the token;
    fetch it with :func:`fetch_token` when ``token_sha256`` changes). The first events give
    each profile's current state. ``profile`` limits the stream to one profile.

    Ends (returns) when the daemon closes the stream; raises :class:`DaemonUnreachable` when
    the daemon cannot be reached or says nothing for ``timeout`` seconds (it sends a
    heartbeat every 15 s), and the daemon's error for an error answer::

        for event in coactive_token.watch("prod"):
            if event["token_sha256"] != current: ...
    """
    path = socket_path or default_socket_path()
    stream = _EventStream(path)
    try:
        sock = _Connection(path, timeout).sock  # the same connection (and checks) as Client's
        sock.settimeout(timeout)  # a quiet stream is normal: heartbeats come every 15 s
    except UntrustedDaemon:
        raise
    except OSError as exc:
        raise _unreachable(path, exc) from None
    with sock:
        try:
            sock.sendall(stream.request(profile))
            while chunk := sock.recv(65536):
                yield from stream.feed(chunk)
        except OSError as exc:
            raise _unreachable(path, exc) from None


async def awatch(
    profile: str | None = None, *, socket_path: str | None = None, timeout: float = 60.0
) -> AsyncGenerator[dict[str, Any], None]:
    """:func:`watch` on the running event loop: ``async for event in awatch("prod"): ...``"""
    import asyncio

    path = socket_path or default_socket_path()
    stream = _EventStream(path)
    _verify_folder(path)
    try:
        reader, writer = await asyncio.wait_for(_aconnect(path, False), timeout)
    except (OSError, TimeoutError) as exc:
        raise _unreachable(path, exc) from None
    try:
        _verify_peer(writer.get_extra_info("socket"), path)  # before a byte is sent
    except UntrustedDaemon:
        writer.close()
        raise
    try:
        writer.write(stream.request(profile))
        while chunk := await asyncio.wait_for(reader.read(65536), timeout):
            for ev in stream.feed(chunk):
                yield ev
    except (OSError, TimeoutError) as exc:
        raise _unreachable(path, exc) from None
    finally:
        writer.close()


# --------------------------------------------------------------------------- async client


async def _aconnect(
    socket_path: str, start: bool
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    import asyncio

    _verify_folder(socket_path)
    try:
        reader, writer = await asyncio.open_unix_connection(socket_path)
    except OSError as exc:
        if not (start and _no_daemon(exc) and autostart_enabled()):
            raise
        await asyncio.to_thread(start_daemon, socket_path)
        _verify_folder(socket_path)
        reader, writer = await asyncio.open_unix_connection(socket_path)
    try:
        _verify_peer(writer.get_extra_info("socket"), socket_path)
    except UntrustedDaemon:
        writer.close()
        raise
    return reader, writer


async def _arequest(
    socket_path: str,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    timeout: float,
    start: bool = False,
) -> tuple[int, bytes]:
    import asyncio

    payload = b"" if body is None else json.dumps(body).encode("utf-8")
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n"
        f"Connection: close\r\nContent-Length: {len(payload)}\r\n"
    )
    if body is not None:
        head += "Content-Type: application/json\r\n"
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await _aconnect(socket_path, start)
            writer.write(head.encode("ascii") + b"\r\n" + payload)
            await writer.drain()
            raw = await _aread_checked(reader, socket_path)
    except CredddError:  # the daemon could not be started: already says why
        raise
    except (OSError, TimeoutError) as exc:
        raise _unreachable(socket_path, exc) from None
    finally:
        if writer is not None:
            writer.close()
    return _parse_http_response(socket_path, raw)


async def _aread_checked(reader: asyncio.StreamReader, socket_path: str) -> bytes:
    """The whole answer; after ``ALIVE_CHECK`` seconds of silence, asks ``/healthz`` (in a
    thread) whether the daemon is alive at all, and gives up at once when it is not, as the
    sync client does: a stopped daemon is named now, not after the whole timeout."""
    import asyncio

    task = asyncio.ensure_future(reader.read())
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=ALIVE_CHECK)
            if done:
                return task.result()
            if not await asyncio.to_thread(_answers, socket_path, ALIVE_CHECK):
                raise TimeoutError
    finally:
        task.cancel()


def _parse_http_response(socket_path: str, raw: bytes) -> tuple[int, bytes]:
    """Split a whole HTTP/1.1 answer (read to EOF) into status and decoded body."""
    head, _, body = raw.partition(b"\r\n\r\n")
    try:
        _, status, headers = _parse_head(head)
        if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            body = _dechunk(body)
        elif b"content-length" in headers:
            body = body[: int(headers[b"content-length"])]
    except (_BadAnswer, ValueError):
        raise _unreachable(socket_path, ConnectionResetError()) from None
    return status, body


async def _acall(
    socket_path: str | None,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    start: bool = True,
) -> dict[str, Any]:
    status, data = await _arequest(
        socket_path or default_socket_path(), method, path, body, timeout, start
    )
    if status >= 400:
        raise _error_from_answer(status, data)
    return _json_object(data)


async def afetch_token(
    profile: str | None = None, min_ttl: int = 0, *, socket_path: str | None = None
) -> Token:
    """Like :func:`fetch_token`, on the running event loop (no thread)."""
    _check_min_ttl(min_ttl)
    return Token.from_dict(
        await _acall(socket_path, "GET", _token_path("/v1/token", profile, min_ttl))
    )


async def aget_token(
    profile: str | None = None, min_ttl: int = 0, *, socket_path: str | None = None
) -> str:
    """Like :func:`get_token`, on the running event loop (no thread)."""
    return (await afetch_token(profile, min_ttl, socket_path=socket_path)).access_token


async def arefresh(
    profile: str | None = None,
    rejected_token: str | None = None,
    *,
    socket_path: str | None = None,
) -> Token:
    """Like :meth:`Client.refresh`, on the running event loop."""
    path, body = _refresh_request(profile, rejected_token)
    return Token.from_dict(await _acall(socket_path, "POST", path, body))


# --------------------------------------------------------------------------- HTTP auth


class CoactiveAuth:
    """Bearer auth for ``requests`` and ``httpx``, without importing either.

    ``requests.get(url, auth=CoactiveAuth())`` and ``httpx.Client(auth=CoactiveAuth())``
    (sync or async) add ``Authorization: Bearer <token>``.  When Coactive answers 401, the
    rejected token is reported to the daemon (which replaces it only if it is still the
    current one) and the request is sent once more with the new token.  A request whose body
    cannot be replayed (a stream) is not retried: its 401 is returned as it is.
    """

    # httpx reads these; neither body needs buffering for this flow.
    requires_request_body = False
    requires_response_body = False

    _httpx_class: type[CoactiveAuth] | None = None

    def __new__(cls, *args: Any, **kwargs: Any) -> CoactiveAuth:
        # httpx only runs the full auth flow for instances of httpx.Auth (any other callable
        # gets a one-shot wrapper without the retry).  When the caller has imported httpx,
        # the instance is made of a subclass mixing it in; httpx is never imported here.
        httpx = sys.modules.get("httpx")
        if cls is CoactiveAuth and httpx is not None and hasattr(httpx, "Auth"):
            if CoactiveAuth._httpx_class is None:
                CoactiveAuth._httpx_class = type("CoactiveAuth", (CoactiveAuth, httpx.Auth), {})
            cls = CoactiveAuth._httpx_class
        return super().__new__(cls)

    def __init__(
        self,
        profile: str | None = None,
        *,
        min_ttl: int = 0,
        socket_path: str | None = None,
        client: Client | None = None,
    ) -> None:
        self.profile = profile
        self.min_ttl = min_ttl
        self.socket_path = socket_path
        # Without a client of the caller's, each call opens its own short connection, so the
        # auth object owns nothing that needs closing.
        self._client = client

    def __repr__(self) -> str:
        return f"CoactiveAuth(profile={self.profile!r})"

    def _socket_path(self) -> str | None:
        return self._client.socket_path if self._client is not None else self.socket_path

    def _token(self) -> str:
        if self._client is not None:
            return self._client.token(self.profile, self.min_ttl).access_token
        return get_token(self.profile, self.min_ttl, socket_path=self.socket_path)

    def _refresh(self, rejected: str | None) -> str:
        if self._client is not None:
            return self._client.refresh(self.profile, rejected_token=rejected).access_token
        with Client(self.socket_path) as client:
            return client.refresh(self.profile, rejected_token=rejected).access_token

    # -- requests -----------------------------------------------------------------

    def __call__(self, request: Any) -> Any:
        token = self._token()
        request.headers["Authorization"] = f"Bearer {token}"
        if hasattr(request, "register_hook"):  # requests.PreparedRequest
            request._coactive_token = token
            request.register_hook("response", self._requests_on_response)
        return request

    def _requests_on_response(self, response: Any, **kwargs: Any) -> Any:
        request = response.request
        if (
            response.status_code != 401
            or getattr(request, "_coactive_retried", False)
            or not _replayable(request.body)
        ):
            return response
        rejected = getattr(request, "_coactive_token", None)
        token = self._refresh(rejected)
        # Free the connection before sending again, as requests' own digest auth does.
        _ = response.content
        response.close()
        retry = request.copy()
        retry.headers["Authorization"] = f"Bearer {token}"
        retry._coactive_token = token
        retry._coactive_retried = True
        again = response.connection.send(retry, **kwargs)
        again.history.append(response)
        again.request = retry
        return again

    # -- httpx --------------------------------------------------------------------

    def auth_flow(self, request: Any) -> Generator[Any, Any, None]:
        token = self._token()
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401 and _httpx_replayable(request):
            token = self._refresh(token)
            request.headers["Authorization"] = f"Bearer {token}"
            yield request

    async def async_auth_flow(self, request: Any) -> AsyncGenerator[Any, Any]:
        token = (
            await afetch_token(self.profile, self.min_ttl, socket_path=self._socket_path())
        ).access_token
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401 and _httpx_replayable(request):
            new = await arefresh(self.profile, token, socket_path=self._socket_path())
            request.headers["Authorization"] = f"Bearer {new.access_token}"
            yield request


def _replayable(body: object) -> bool:
    return body is None or isinstance(body, bytes | str)


def _httpx_replayable(request: Any) -> bool:
    # httpx reads byte bodies into request._content up front; streams it does not.
    return hasattr(request, "_content")


# --------------------------------------------------------------------------- CLI


PROG = "coactive-token-py"  # the name pip installs this CLI as ([project.scripts])

# --------------------------------------------------------------------------- the API proxy
#
# The daemon forwards any request whose path starts with /api/ to the profile's Coactive,
# with the current token (docs/PROTOCOL.md, "The API proxy"): these send requests there, so
# a program never holds a token at all.  ``requests`` and ``httpx`` are imported only when
# one of these is called.

PROXY_BASE_URL = "http://localhost"  # the URL prefix the transports below send over the socket
PROFILE_HEADER = "Coactive-Profile"


def proxy_socket(socket_path: str | None = None, timeout: float | None = 60.0) -> socket.socket:
    """A socket connected to the daemon, checked as every call of this module is (the
    folder's owner and mode, then the uid answering).  Raises :class:`DaemonUnreachable`
    (:class:`UntrustedDaemon` for a daemon this user does not trust); nothing is sent."""
    path = socket_path or default_socket_path()
    _verify_folder(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except OSError as exc:
            raise _unreachable(path, exc) from None
        _verify_peer(sock, path)
    except BaseException:
        sock.close()
        raise
    return sock


def requests_adapter(socket_path: str | None = None) -> Any:
    """A ``requests`` transport adapter that sends every request over the daemon's socket
    (mount it on :data:`PROXY_BASE_URL`, as :func:`requests_session` does)."""
    import requests.adapters
    import urllib3.connection
    import urllib3.connectionpool

    class _Connection(urllib3.connection.HTTPConnection):
        def _new_conn(self) -> socket.socket:
            timeout = self.timeout if isinstance(self.timeout, int | float) else None
            return proxy_socket(socket_path, timeout)

    class _Pool(urllib3.connectionpool.HTTPConnectionPool):
        ConnectionCls = _Connection

    class _Adapter(requests.adapters.HTTPAdapter):
        def __init__(self) -> None:
            super().__init__()
            self._socket_pool = _Pool("localhost", 80, maxsize=10)

        def get_connection_with_tls_context(self, *args: Any, **kwargs: Any) -> Any:
            return self._socket_pool

        def get_connection(self, *args: Any, **kwargs: Any) -> Any:
            return self._socket_pool

        def close(self) -> None:
            self._socket_pool.close()
            super().close()

    return _Adapter()


def requests_session(profile: str | None = None, *, socket_path: str | None = None) -> Any:
    """A ``requests.Session`` for Coactive's API through the daemon: ask for
    ``PROXY_BASE_URL + "/api/..."`` and the daemon adds the token of ``profile`` (default
    :func:`default_profile`)::

        s = coactive_token.requests_session()
        s.get(coactive_token.PROXY_BASE_URL + "/api/v1/datasets").json()
    """
    import requests

    session = requests.Session()
    session.trust_env = False  # no HTTP(S)_PROXY, no .netrc: the socket is the only way out
    session.mount(PROXY_BASE_URL + "/", requests_adapter(socket_path))
    session.headers[PROFILE_HEADER] = check_profile_name(profile or default_profile())
    return session


def httpx_transport(profile: str | None = None, *, socket_path: str | None = None) -> Any:
    """An ``httpx`` transport that sends every request over the daemon's socket, with the
    ``Coactive-Profile`` header of ``profile`` (default :func:`default_profile`) unless the
    request has one; each connection is checked as :func:`proxy_socket` checks it."""
    import httpcore
    import httpx

    path = socket_path or default_socket_path()
    name = check_profile_name(profile or default_profile())
    _verify_folder(path)

    class _Backend(httpcore.SyncBackend):
        def connect_unix_socket(self, *args: Any, **kwargs: Any) -> Any:
            try:
                stream = super().connect_unix_socket(*args, **kwargs)
            except OSError as exc:
                raise _unreachable(path, exc) from None
            try:
                _verify_peer(stream.get_extra_info("socket"), path)
            except BaseException:
                stream.close()
                raise
            return stream

    inner = httpx.HTTPTransport(uds=path)
    inner._pool._network_backend = _Backend()  # httpx passes no backend of its own through

    class _Transport(httpx.BaseTransport):
        def handle_request(self, request: Any) -> Any:
            if PROFILE_HEADER not in request.headers:
                request.headers[PROFILE_HEADER] = name
            return inner.handle_request(request)

        def close(self) -> None:
            inner.close()

    return _Transport()


def httpx_client(
    profile: str | None = None, *, socket_path: str | None = None, **kwargs: Any
) -> Any:
    """An ``httpx.Client`` for Coactive's API through the daemon (``base_url`` is
    :data:`PROXY_BASE_URL`, so ``client.get("/api/v1/datasets")`` works); ``kwargs`` go to
    ``httpx.Client``."""
    import httpx

    return httpx.Client(
        transport=httpx_transport(profile, socket_path=socket_path),
        base_url=PROXY_BASE_URL,
        trust_env=False,
        **kwargs,
    )


HELP = """\
usage: {prog} [--profile P] [--min-ttl SECONDS] [--json | --header]
       {prog} [--profile P] --watch

Print the current Coactive access token held by coactive-credd, and nothing else.
  --profile P        profile name (default: $COACTIVE_PROFILE, else "default")
  --min-ttl SECONDS  the token must stay valid at least this long (default 0)
  --json             print the daemon's JSON answer (profile, access_token, expires_at, expires_in)
  --header           print "Authorization: Bearer <token>"
  --watch            print a JSON line each time the token is replaced or its state changes
                     ({{"profile","state","expires_at","token_sha256"}}, never the token);
                     runs until the daemon stops (then exits 3)
  --version          print the version and exit
  -h, --help         print this help and exit
Exit codes: 0 ok, 2 usage, 3 daemon not reachable, 4 unknown profile, 5 re-login needed,
6 Coactive unavailable, 7 vault locked; errors are one line on stderr.
Environment: COACTIVE_PROFILE; COACTIVE_CREDD_SOCKET (else the daemon's default path, under
COACTIVE_CREDD_HOME when set); COACTIVE_CREDD_AUTOSTART (0: never start a daemon, 1: always
may; unset: unless a user service is installed); COACTIVE_CREDD_COMMAND (the coactive-credd
to start).
"""


def _usage_error(message: str) -> NoReturn:
    sys.stderr.write(f"{PROG}: {message} (see: {PROG} --help)\n")
    raise SystemExit(EXIT_USAGE)


def _parse_args(argv: list[str]) -> tuple[str | None, str, str]:
    """``(profile, min_ttl, format)`` from the command line, read left to right by the rules
    every coactive-token shim follows (tests/vectors/conformance.json); exits on --help,
    --version and usage errors."""
    profile: str | None = None
    min_ttl = "0"
    fmt = {"json": False, "header": False, "watch": False}
    args = iter(argv)
    for arg in args:
        name, eq, value = arg.partition("=")
        if eq and name not in ("--profile", "--min-ttl"):
            name = arg
        if name in ("--profile", "--min-ttl"):
            if not eq:
                following = next(args, None)
                if following is None:
                    _usage_error(
                        "--profile needs a name"
                        if name == "--profile"
                        else "--min-ttl needs a number of seconds"
                    )
                value = following
            if name == "--profile":
                if not value:
                    _usage_error("--profile needs a name")
                profile = value
            else:
                min_ttl = value
        elif name in ("--json", "--header", "--watch"):
            fmt[name[2:]] = True
        elif name in ("-h", "--help"):
            sys.stdout.write(HELP.format(prog=PROG))
            raise SystemExit(EXIT_OK)
        elif name == "--version":
            sys.stdout.write(f"{PROG} {__version__}\n")
            raise SystemExit(EXIT_OK)
        else:
            _usage_error(f"unknown argument: {arg}")
    if not (min_ttl.isascii() and min_ttl.isdigit()):
        _usage_error("--min-ttl must be a whole number of seconds")
    if fmt["json"] and fmt["header"]:
        _usage_error("--json and --header cannot be used together")
    chosen = [f for f in ("watch", "json", "header") if fmt[f]]
    return profile, min_ttl, chosen[0] if chosen else "raw"


def _follow(profile: str | None) -> int:
    """--watch: a JSON line per token rotation or state change until the daemon stops."""
    try:
        for event in watch(profile):
            sys.stdout.write(json.dumps(event, separators=(",", ":")) + "\n")
            sys.stdout.flush()
    except CredddError as exc:
        sys.stderr.write(f"{PROG}: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    sys.stderr.write(
        f"{PROG}: coactive-credd stopped or closed the event stream "
        "(start it with: coactive-credd serve)\n"
    )
    return EXIT_UNREACHABLE


def main(argv: list[str] | None = None) -> int:
    """``coactive-token-py [--profile P] [--min-ttl S] [--json|--header]``: print the token."""
    profile, min_ttl, fmt = _parse_args(sys.argv[1:] if argv is None else argv)
    if fmt == "watch":
        return _follow(profile)
    try:
        token = fetch_token(profile, int(min_ttl))
    except CredddError as exc:
        sys.stderr.write(f"{PROG}: {exc}\n")
        return exc.exit_code
    sys.stdout.write(format_token(token, fmt) + "\n")
    sys.stdout.flush()
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
