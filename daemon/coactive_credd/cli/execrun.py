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

The parts: :mod:`execchild` (the command's process and the signals relayed to it),
:mod:`execkeeper` (the token file, its keeper thread and the process that removes it); this
module puts them together. ``watch`` lives in :mod:`watch`.

Standard library only: this runs on every ``exec``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys

import coactive_token

from coactive_credd.cli import execchild, execkeeper
from coactive_credd.core import tokenfile


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
    path, made = execkeeper.token_path(token_file)
    keeping = -1
    try:
        keeper = execkeeper.Keeper(
            sock, token.profile, path, token, execkeeper.serve_until(status, token.profile)
        )
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
        waited = {*execchild.RELAYED, signal.SIGCHLD}
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, waited)
        try:
            keeping = execkeeper.keep(keeper, made)
            try:
                pid = execchild.spawn(command, env, old_mask)
            except OSError as exc:
                print(
                    f"coactive-credd: cannot run {command[0]!r}: {exc.strerror}; check the command and PATH",
                    file=sys.stderr,
                )
                return 127 if isinstance(exc, FileNotFoundError) else 126
            status_code = execchild.wait(pid)
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
