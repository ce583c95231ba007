"""The daemon process: its socket, signals and systemd/launchd integration.

The socket is ``0600`` in a ``0700`` folder; a stale socket is replaced only after a connect
shows nobody answers, and an exclusive lock beside it keeps two daemons from starting at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import socket
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from aiohttp import web

from coactive_credd import __version__
from coactive_credd.core import config, fsutil, pidfile, request
from coactive_credd.core.errors import CreddError
from coactive_credd.core.paths import Paths
from coactive_credd.server import containers, fastpath, keywatch, logguard, logsetup, service
from coactive_credd.server.api import Api
from coactive_credd.server.fastpath import FastSite, Shares
from coactive_credd.server.httpserver import ProtocolServer
from coactive_credd.server.refresh import Daemon
from coactive_credd.vault import VaultError

log = logging.getLogger("coactive_credd")


class StartupError(CreddError):
    """The daemon cannot start; the message says why and what to do."""


def _socket_alive(path: Path) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(1.0)
    try:
        s.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        return False
    except OSError:
        return False
    finally:
        s.close()
    return True


def bind_socket(path: Path, shared: bool = False) -> socket.socket:
    """Create the listening socket: 0600 in a 0700 folder, replacing only a stale socket.
    ``shared`` (``allowed_uids``): 0666 in a 0711 folder, see :mod:`containers`."""
    try:
        containers.ensure_socket_dir(path.parent, shared)
    except fsutil.InsecurePathError as exc:
        raise StartupError(f"cannot serve on {path}: {exc}") from exc
    if path.exists() or path.is_symlink():
        if _socket_alive(path):
            raise StartupError(
                f"coactive-credd is already running on {path}{pidfile.describe(path)}; "
                f"`coactive-credd stop` ends it, or pass --socket PATH"
            )
        if not path.is_socket():
            raise StartupError(f"{path} exists and is not a socket; move it away or pass --socket")
        path.unlink()  # nobody answers: a stale socket left by a crash
        log.info("removed a stale socket at %s", path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(str(path))
    except OSError as exc:
        sock.close()
        size = len(os.fsencode(str(path)))
        why = f"the path is {size} bytes, over the 107 a Unix socket allows" if size > 107 else exc
        raise StartupError(
            f"cannot serve on {path}: {why}; run `coactive-credd serve --socket SHORTER_PATH`, "
            f"or `export COACTIVE_CREDD_SOCKET=SHORTER_PATH` (or a shorter COACTIVE_CREDD_HOME)"
        ) from None
    finally:
        os.umask(old)
    os.chmod(path, containers.SHARED_SOCKET_MODE if shared else 0o600)
    sock.listen(512)
    return sock




MAX_CONNECTIONS = 4096  # connections open at once, fast path and aiohttp together
FD_RESERVE = 64  # descriptors kept for the vault, upstream logins, logs and the like


def connection_cap() -> int:
    """How many connections to keep open at once: MAX_CONNECTIONS, or fewer when the
    open-files limit is lower, leaving FD_RESERVE descriptors for everything else.

    The soft limit is raised to the hard one first (as Go programs do at start), so a
    default soft limit of 1024 does not stand in the way when the hard limit allows more."""
    import resource

    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = MAX_CONNECTIONS + FD_RESERVE
        if soft != resource.RLIM_INFINITY and soft < wanted:
            new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
            if new > soft:
                resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
                soft = new
    except (ValueError, OSError):
        return MAX_CONNECTIONS
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(8, min(MAX_CONNECTIONS, soft - FD_RESERVE))


async def make_runner(api: Api) -> web.ServerRunner:
    """aiohttp's server for ``api``, set up with the limits the daemon serves with.

    The fast path hands aiohttp every request it does not answer itself, so both must agree
    on the limits of a request head (:data:`request.MAX_LINE`, :data:`request.MAX_HEADERS`)
    and on how long an idle keep-alive connection is kept (:data:`fastpath.IDLE`, seconds).
    The caller cleans the runner up. The tests serve through this too, so they cannot drift
    from production.
    """
    server = ProtocolServer(
        api.handle,
        access_log=None,
        keepalive_timeout=fastpath.IDLE,
        tcp_keepalive=False,
        max_line_size=request.MAX_LINE,
        max_field_size=request.MAX_LINE,
        max_headers=request.MAX_HEADERS,
    )
    runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=2.0)
    await runner.setup()
    return runner


async def start_sites(
    runner: web.ServerRunner,
    api: Api,
    sockets: list[socket.socket],
    *,
    fast: bool = True,
    max_connections: int = 0,
) -> list[FastSite]:
    """Serve ``runner`` on each listening socket, every connection starting on the fast path
    (``fast=False``: handed to aiohttp at once), at most ``max_connections`` open at once
    (0: no cap; see :class:`fastpath.FastSite`)."""
    sites: list[FastSite] = []
    shares = Shares()  # one uid's share counts its connections on every socket
    for s in sockets:
        site = FastSite(
            runner,
            s,
            api,
            fast=fast,
            max_connections=max_connections,
            shares=shares,
            backlog=1024,
        )
        await site.start()
        sites.append(site)
    server = runner.server
    assert isinstance(server, web.Server)
    # Those still on the fast path, and those aiohttp owns (handed over).
    api.d.stats.open_connections = lambda: (
        sum(len(x._live) for x in sites) + len(server.connections)
    )
    return sites


@dataclasses.dataclass
class _Claim:
    """The listening sockets and what start-up took to own them."""

    sockets: list[socket.socket]
    own_socket: bool  # False: inherited from systemd/launchd
    startup_lock: int | None  # the lock file beside the socket, held while we serve
    inode: int  # of our own socket file (0 when inherited), to see it removed or replaced


async def run(
    paths: Paths,
    *,
    ready: Callable[[Daemon], None] | None = None,
    prepare: Callable[[Daemon], list[Coroutine[Any, Any, None]]] | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT. SIGHUP re-reads the config and the vault.

    ``ready`` is called once the sockets serve; ``prepare`` (the testing room's start-up
    switches, :mod:`coactive_credd.testing.serve`) is called with the daemon before it loads,
    and returns coroutines to run beside the scheduler. Production passes neither."""
    claim = _claim_socket(paths)
    daemon, extra_tasks = _load_daemon(paths, claim, prepare)
    api = Api(daemon)
    extras = containers.Extras(daemon, api)
    runner = await make_runner(api)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    logguard.install_loop_handler(loop)
    malformed = logguard.MalformedRequestFilter()
    logging.getLogger("aiohttp.server").addFilter(malformed)
    cap = connection_cap()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, _reload, daemon)
    background = _start_background(paths, claim, daemon, api, stop, extra_tasks)
    try:
        await _serve(paths, claim, daemon, api, runner, extras, stop, cap, ready)
    finally:
        await _clean_up(paths, claim, daemon, api, runner, extras, background)
        logging.getLogger("aiohttp.server").removeFilter(malformed)


def _claim_socket(paths: Paths) -> _Claim:
    """Take the sockets to serve on: those systemd/launchd passed, or our own, bound only
    once the start-up lock beside it shows no other daemon is starting."""
    inherited = service.inherited_sockets()
    if inherited:
        # best effort: for `coactive-credd stop`
        return _Claim(inherited, False, pidfile.claim(paths.socket), 0)
    shared = containers.socket_shared(paths)
    try:
        containers.ensure_socket_dir(paths.socket.parent, shared)
    except fsutil.InsecurePathError as exc:
        raise StartupError(f"cannot serve on {paths.socket}: {exc}") from None
    lock_path = paths.socket.with_name(paths.socket.name + ".lock")
    try:
        startup_lock = fsutil.open_lock_file(lock_path)
    except fsutil.InsecurePathError as exc:
        raise StartupError(f"cannot serve on {paths.socket}: {exc}") from None
    import fcntl

    try:
        fcntl.flock(startup_lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(startup_lock)
        raise StartupError(
            f"coactive-credd is already running on {paths.socket}"
            f"{pidfile.describe(paths.socket)}; `coactive-credd stop` ends it"
        ) from None
    pidfile.record(startup_lock)  # so `coactive-credd stop` finds us even when we hang
    sockets = [bind_socket(paths.socket, shared)]
    return _Claim(sockets, True, startup_lock, os.stat(paths.socket).st_ino)


def _load_daemon(
    paths: Paths,
    claim: _Claim,
    prepare: Callable[[Daemon], list[Coroutine[Any, Any, None]]] | None,
) -> tuple[Daemon, list[Coroutine[Any, Any, None]]]:
    """The daemon with its config and vault loaded, and the testing room's extra coroutines;
    a config or vault that cannot load gives up the sockets and raises StartupError."""
    daemon = Daemon(paths)
    extra_tasks = prepare(daemon) if prepare is not None else []
    try:
        daemon.load()
    except BaseException as exc:
        # Whatever stops the start (a config or vault that cannot load, a read-only or full
        # disk under the vault's lock), the socket is not left behind for clients to find.
        for s in claim.sockets:
            s.close()
        if claim.own_socket:
            paths.socket.unlink(missing_ok=True)
        if isinstance(exc, config.ConfigError | VaultError):
            raise StartupError(str(exc)) from exc
        raise
    return daemon, extra_tasks


def _start_background(
    paths: Paths,
    claim: _Claim,
    daemon: Daemon,
    api: Api,
    stop: asyncio.Event,
    extra_tasks: list[Coroutine[Any, Any, None]],
) -> list[asyncio.Task[None]]:
    """The tasks that run beside the sites: the scheduler, the key watch, the testing room's
    coroutines, the service watchdog, the socket watch and the audit log."""
    background = [asyncio.create_task(daemon.scheduler())]
    background.append(asyncio.create_task(keywatch.watch(daemon)))
    background += [asyncio.create_task(c) for c in extra_tasks]
    interval = daemon.notifier.watchdog_interval()
    if interval:
        background.append(asyncio.create_task(_watchdog(daemon.notifier, interval)))
    if claim.own_socket:
        background.append(asyncio.create_task(watch_socket(paths.socket, claim.inode, stop)))
    background.append(asyncio.create_task(_audit_log(api)))
    return background


async def _serve(
    paths: Paths,
    claim: _Claim,
    daemon: Daemon,
    api: Api,
    runner: web.ServerRunner,
    extras: containers.Extras,
    stop: asyncio.Event,
    cap: int,
    ready: Callable[[Daemon], None] | None,
) -> None:
    """Start the sites, tell the service manager we are ready, and serve until ``stop``."""
    fast = os.environ.get("COACTIVE_CREDD_FAST_PATH", "1") != "0"
    await start_sites(runner, api, claim.sockets, fast=fast, max_connections=cap)
    log.info(
        "coactive-credd %s serving %d profile(s) on %s%s (event loop: %s)%s, at most %d connections",
        __version__,
        len(daemon.profiles),
        paths.socket if claim.own_socket else "an inherited socket",
        " (vault locked)" if daemon.locked else "",
        type(asyncio.get_running_loop()).__module__.split(".")[0],
        "" if fast else ", fast path off (COACTIVE_CREDD_FAST_PATH=0)",
        cap,
    )
    extras.start()
    daemon.notifier.ready(daemon.status_line())
    if ready is not None:
        ready(daemon)
    await stop.wait()
    log.info("shutting down")
    daemon.notifier.stopping()


async def _clean_up(
    paths: Paths,
    claim: _Claim,
    daemon: Daemon,
    api: Api,
    runner: web.ServerRunner,
    extras: containers.Extras,
    background: list[asyncio.Task[None]],
) -> None:
    """Stop the background tasks and the sites, write what is pending, and give up our
    socket (only if it is still ours) and the start-up lock."""
    for t in background:
        t.cancel()
    for t in background:
        with contextlib.suppress(asyncio.CancelledError):
            await t
    await extras.close()
    await runner.cleanup()
    await api.proxy.close()
    await daemon.flush()
    await daemon.upstream.close()
    if claim.own_socket and _same_socket(paths.socket, claim.inode):
        paths.socket.unlink()
    if claim.startup_lock is not None:
        os.close(claim.startup_lock)


def _reload(daemon: Daemon) -> None:
    """SIGHUP: reopen a log file renamed since (logrotate), then reload the config, vault
    and CA bundles."""
    logsetup.reopen()
    daemon.reload()


async def _audit_log(api: Api, interval: float = 60.0) -> None:
    """Who took tokens: one line per client whose count changed, at most once a minute."""
    try:
        while True:
            await asyncio.sleep(interval)
            api.audit.log_changes()
    finally:
        api.audit.log_changes()  # and what the last minute before a stop saw


async def _watchdog(notifier: service.Notifier, interval: float) -> None:
    while True:
        notifier.watchdog()
        await asyncio.sleep(interval)


def _same_socket(path: Path, inode: int) -> bool:
    try:
        return os.stat(path).st_ino == inode
    except OSError:
        return False


async def watch_socket(path: Path, inode: int, stop: asyncio.Event, interval: float = 30.0) -> None:
    """Shut down when our socket file is removed or replaced: nobody can reach us any more
    (a cleaned-up folder, or a newer daemon bound the path), so stay no longer."""
    while not stop.is_set():
        await asyncio.sleep(interval)
        if not _same_socket(path, inode):
            log.warning("the socket %s was removed or replaced; shutting down", path)
            stop.set()
