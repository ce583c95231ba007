"""Every environment variable the product reads or sets: its name, default and meaning.

Precedence everywhere is: a command-line flag, else the variable, else the config file, else
the default here. Every ``COACTIVE_*`` name that appears anywhere in the package must be listed
here (``tests/test_walls.py`` fails otherwise); new code names a variable through these
constants.
The client shims (sh, Python, Node, Go) are single files other projects copy, so they spell the
names themselves; ``tests/vectors/`` runs every shim against the same cases.
"""

from __future__ import annotations

from typing import NamedTuple


class Variable(NamedTuple):
    """One variable: ``name``; ``default`` (as text, ``None`` when unset means "not given");
    ``meaning``, one line for ``--help``; ``read_by``: who reads it, or "set for exec's child"."""

    name: str
    default: str | None
    meaning: str
    read_by: str


HOME = "COACTIVE_CREDD_HOME"
SOCKET = "COACTIVE_CREDD_SOCKET"
PROFILE = "COACTIVE_PROFILE"
AUTOSTART = "COACTIVE_CREDD_AUTOSTART"
COMMAND = "COACTIVE_CREDD_COMMAND"
DAEMON_UID = "COACTIVE_CREDD_DAEMON_UID"
LOG_LEVEL = "COACTIVE_CREDD_LOG_LEVEL"
LOG_MAX_BYTES = "COACTIVE_CREDD_LOG_MAX_BYTES"
FAST_PATH = "COACTIVE_CREDD_FAST_PATH"
DEBUG = "COACTIVE_CREDD_DEBUG"
ACCESS_TOKEN = "COACTIVE_ACCESS_TOKEN"  # noqa: S105 (a variable name)
ACCESS_TOKEN_FILE = "COACTIVE_ACCESS_TOKEN_FILE"  # noqa: S105
TOKEN_EXPIRES_AT = "COACTIVE_TOKEN_EXPIRES_AT"  # noqa: S105
BASE_URL = "COACTIVE_BASE_URL"
# Read only by the testing room's entry point (python3 -m coactive_credd.testing.serve).
TEST_CLOCK_FILE = "COACTIVE_CREDD_TEST_CLOCK_FILE"
TEST_PERSIST_DELAY = "COACTIVE_CREDD_TEST_PERSIST_DELAY"

VARIABLES: tuple[Variable, ...] = (
    Variable(HOME, None, "every file of the product under this one folder", "every command"),
    Variable(SOCKET, None, "the daemon's socket path", "the daemon, every client"),
    Variable(PROFILE, "default", "the profile used when none is named", "every client"),
    Variable(
        AUTOSTART,
        None,
        "0: clients never start a daemon; 1: they may; unset: unless a user service is installed",
        "every client",
    ),
    Variable(COMMAND, "coactive-credd", "the coactive-credd executable a client starts", "clients"),
    Variable(
        DAEMON_UID,
        None,
        "clients also trust a daemon of this uid (a sidecar), for tokens, events and status only",
        "every client",
    ),
    Variable(LOG_LEVEL, "info", "the daemon's log level (debug, info, warning, error)", "serve"),
    Variable(LOG_MAX_BYTES, "5242880", "a log file's size before it rotates (0: never)", "serve"),
    Variable(FAST_PATH, "1", "0 hands every connection to aiohttp (a diagnosis switch)", "serve"),
    Variable(DEBUG, None, "set: an internal error prints its traceback", "every command"),
    Variable(
        ACCESS_TOKEN, None, "the access token (or the proxy's placeholder)", "set for exec's child"
    ),
    Variable(
        ACCESS_TOKEN_FILE,
        None,
        "a file holding the current token, kept fresh",
        "set for exec's child",
    ),
    Variable(
        TOKEN_EXPIRES_AT,
        None,
        "when the token handed over stops being served (RFC 3339)",
        "set for exec's child",
    ),
    Variable(
        BASE_URL,
        None,
        "the profile's base URL (or exec --proxy's listener)",
        "set for exec's child",
    ),
    Variable(
        TEST_CLOCK_FILE,
        None,
        "test only: a file holding the wall clock's offset (s)",
        "testing.serve",
    ),
    Variable(
        TEST_PERSIST_DELAY, None, "test only: seconds between batched vault writes", "testing.serve"
    ),
)

BY_NAME: dict[str, Variable] = {v.name: v for v in VARIABLES}
