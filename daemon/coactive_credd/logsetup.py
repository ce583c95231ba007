"""Logging to stderr, one line per event.

Under systemd (stderr is the journal) lines carry a ``<N>`` severity prefix and no timestamp,
since the journal adds its own; elsewhere an RFC 3339 UTC timestamp and the level name.
"""

from __future__ import annotations

import logging
import sys
import time

from . import service

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


def configure(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    formatter: logging.Formatter
    if service.journal_logging_wanted():
        formatter = _JournalFormatter("%(message)s")
    else:
        formatter = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%SZ")
        formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's own access and server logs stay quiet unless something is wrong.
    logging.getLogger("aiohttp").setLevel(logging.WARNING)
