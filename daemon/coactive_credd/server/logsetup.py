"""Where the daemon's log goes, one line per event.

- Under systemd with stderr connected to the journal (``$JOURNAL_STREAM``): stderr, each line
  with an sd-daemon(3) ``<N>`` priority prefix and no timestamp (the journal adds its own), so
  ``journalctl -p warning`` works.
- Under launchd (``$XPC_SERVICE_NAME``) or systemd writing elsewhere (``$INVOCATION_ID``):
  stderr as given; the service manager owns that file.
- Otherwise, when stderr is a regular file (a client's autostart appends to ``credd.log``
  beside the socket; ``coactive-credd serve >>FILE 2>&1 &`` does the same), that file is
  rotated by size with the stdlib ``RotatingFileHandler``: at
  ``$COACTIVE_CREDD_LOG_MAX_BYTES`` (default 5 MiB; 0 never rotates) it becomes ``FILE.1``
  (then ``.2``, ``.3``; the oldest is dropped), every file mode 0600. After a rotation the
  process's stdout and stderr are pointed at the new file too, so nothing written outside
  logging (a crash's traceback) lands in an old one.
- On a terminal or a pipe: stderr, with an RFC 3339 UTC timestamp and the level name.

The level is ``--log-level``, else ``$COACTIVE_CREDD_LOG_LEVEL`` (debug, info, warning,
error), else info.
"""

from __future__ import annotations

import contextlib
import io
import logging
import logging.handlers
import os
import stat
import sys
import time

from coactive_credd.server import service

LOG_MAX_BYTES_ENV = "COACTIVE_CREDD_LOG_MAX_BYTES"
LOG_LEVEL_ENV = "COACTIVE_CREDD_LOG_LEVEL"
DEFAULT_MAX_BYTES = 5 * 1024 * 1024
BACKUP_COUNT = 3

_SYSLOG_LEVEL = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}


class _JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        # Every line of a multi-line record (a traceback) keeps the record's severity.
        prefix = f"<{_SYSLOG_LEVEL.get(record.levelno, 6)}>"
        return "\n".join(prefix + line for line in super().format(record).splitlines())


class PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """A RotatingFileHandler whose files are 0600, never opened through a symlink, and, when
    ``follow_stdio``, with stdout and stderr moved onto each new file after a rotation."""

    def __init__(self, filename: str, max_bytes: int, *, follow_stdio: bool) -> None:
        self.follow_stdio = follow_stdio
        super().__init__(filename, maxBytes=max_bytes, backupCount=BACKUP_COUNT, encoding="utf-8")

    def _open(self) -> io.TextIOWrapper:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(self.baseFilename, flags, 0o600)
        os.fchmod(fd, 0o600)  # a file made by an older version, or with another umask
        return open(fd, "a", encoding="utf-8")

    def doRollover(self) -> None:
        super().doRollover()
        if self.follow_stdio and self.stream is not None:
            self.stream.flush()
            for fd in (1, 2):
                with contextlib.suppress(OSError):
                    os.dup2(self.stream.fileno(), fd, inheritable=True)


def stderr_log_file() -> str | None:
    """The path of the regular file stderr appends to, or None (a terminal, a pipe, the
    journal, a file that cannot be named or was replaced since)."""
    try:
        st = os.fstat(2)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    path: str | None = None
    try:
        if sys.platform.startswith("linux"):
            path = os.readlink("/proc/self/fd/2")
        elif sys.platform == "darwin":
            import fcntl

            raw = fcntl.fcntl(2, fcntl.F_GETPATH, bytes(1024))
            path = raw.split(b"\0", 1)[0].decode()
    except (OSError, AttributeError, UnicodeDecodeError):
        return None
    if not path or not os.path.isabs(path):
        return None
    try:
        same = os.stat(path, follow_symlinks=False)
    except OSError:
        return None
    return path if (same.st_dev, same.st_ino) == (st.st_dev, st.st_ino) else None


def _max_bytes() -> int:
    raw = os.environ.get(LOG_MAX_BYTES_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_BYTES
    try:
        return max(0, int(raw))
    except ValueError:
        print(
            f"coactive-credd: ${LOG_MAX_BYTES_ENV}={raw[:20]!r} is not a number of bytes; "
            f"using {DEFAULT_MAX_BYTES}",
            file=sys.stderr,
        )
        return DEFAULT_MAX_BYTES


def _under_service_manager() -> bool:
    launchd = os.environ.get("XPC_SERVICE_NAME", "0") not in ("", "0")
    return launchd or bool(os.environ.get("INVOCATION_ID"))


def configure(level: str = "info") -> None:
    """Send the root logger where the module docstring says, at ``level``."""
    handler: logging.Handler
    formatter: logging.Formatter
    timestamped = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%SZ")
    timestamped.converter = time.gmtime
    formatter = timestamped
    if service.journal_logging_wanted():
        handler = logging.StreamHandler(sys.stderr)
        formatter = _JournalFormatter("%(message)s")
    elif (
        not _under_service_manager()
        and (max_bytes := _max_bytes()) > 0
        and (path := stderr_log_file()) is not None
    ):
        try:
            handler = PrivateRotatingFileHandler(path, max_bytes, follow_stdio=True)
        except OSError:
            handler = logging.StreamHandler(sys.stderr)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    if level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        root.warning(
            "log level %r is not one of debug, info, warning, error (check --log-level and "
            "$%s); using info",
            level[:20],
            LOG_LEVEL_ENV,
        )
        level = "info"
    root.setLevel(level.upper())
    # aiohttp's own access and server logs stay quiet unless something is wrong.
    logging.getLogger("aiohttp").setLevel(logging.WARNING)
