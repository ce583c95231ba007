"""``coactive-credd doctor``'s network checks: DNS, TCP, TLS (or the proxy) to each profile's
Coactive, and this clock against Coactive's ``Date`` header.

Every step is bounded by ``NET_TIMEOUT`` seconds; profiles are probed in daemon threads with
an overall bound, so a resolver that hangs holds neither the command nor its exit.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from coactive_credd.cli.common import resolve_paths
from coactive_credd.core import proxy_choice as proxy_mod
from coactive_credd.core.errors import CreddError

NET_TIMEOUT = 5.0  # seconds for each DNS, TCP or TLS step
CLOCK_TOLERANCE = 60.0  # seconds of difference from Coactive's clock that count as a problem


@dataclass
class Finding:
    """One line of the report: ``status`` is ok, note or problem; ``fix`` a command."""

    check: str
    status: str
    message: str
    fix: str = ""


class _Failed(CreddError):
    """A step that failed: its finding ends that profile's probe."""

    def __init__(self, finding: Finding) -> None:
        super().__init__(finding.message)
        self.finding = finding


def _problem(message: str, fix: str) -> _Failed:
    return _Failed(Finding("network", "problem", message, fix))


def _through_proxy(
    where: str, base_url: str, route: proxy_mod.Route, host: str, port: int
) -> socket.socket:
    """The proxy step: a connection to the proxy, and for https a ``CONNECT host:port`` the
    proxy must accept (a TCP connection alone proves nothing: a proxy that refuses CONNECT
    fails every refresh). Answers the tunnel (https) or the proxy connection (http)."""
    import base64
    from urllib.parse import unquote

    p = urlsplit(route.url or "")
    fix = f"curl -sS -o /dev/null --proxy {route.shown()} {base_url}"
    try:
        conn = socket.create_connection((p.hostname or "", p.port or 80), timeout=NET_TIMEOUT)
    except OSError as exc:
        raise _problem(
            f"{where}: the proxy {route.describe()} cannot be reached ({exc})", fix
        ) from None
    if urlsplit(base_url).scheme != "https":
        return conn
    auth = ""
    if p.username is not None:
        pair = f"{unquote(p.username)}:{unquote(p.password or '')}".encode()
        auth = f"Proxy-Authorization: Basic {base64.b64encode(pair).decode()}\r\n"
    try:
        conn.settimeout(NET_TIMEOUT)
        conn.sendall(
            f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n{auth}\r\n".encode()
        )
        answer = b""
        while b"\r\n\r\n" not in answer and len(answer) < 16384:
            chunk = conn.recv(4096)
            if not chunk:
                break
            answer += chunk
    except OSError as exc:
        conn.close()
        raise _problem(
            f"{where}: the proxy {route.describe()} did not answer CONNECT ({exc})", fix
        ) from None
    status = answer.split(b"\r\n", 1)[0].decode("latin-1").strip()
    if status.split(" ")[1:2] != ["200"]:
        conn.close()
        raise _problem(
            f"{where}: the proxy {route.describe()} refused CONNECT {host}:{port} "
            f"({status or 'no answer'})",
            fix,
        )
    return conn


def _connect(where: str, name: str, base_url: str, host: str, port: int) -> socket.socket:
    """The DNS and TCP steps, direct."""
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise _problem(
            f"{where}: DNS cannot resolve {host} ({exc})",
            f"getent hosts {host}  # or: coactive-credd login --profile {name} --base-url URL",
        ) from None
    try:
        return socket.create_connection((host, port), timeout=NET_TIMEOUT)
    except OSError as exc:
        raise _problem(
            f"{where}: cannot connect to {host}:{port} ({exc})",
            f"curl -sS -o /dev/null {base_url}",
        ) from None


def _tls(
    where: str, name: str, raw: socket.socket, host: str, ca_bundle: str | None
) -> socket.socket:
    """The TLS step over an open connection."""
    import ssl

    ctx = ssl.create_default_context(cafile=ca_bundle)
    try:
        return ctx.wrap_socket(raw, server_hostname=host)
    except (ssl.SSLError, OSError) as exc:
        raise _problem(
            f"{where}: TLS fails ({exc})",
            f"a TLS-inspecting proxy? `coactive-credd login --profile {name} --ca-bundle PEM`",
        ) from None


def _head(where: str, base_url: str, conn: socket.socket, host: str, target: str = "/") -> str:
    """One ``HEAD``: the start of Coactive's answer (for its ``Date`` header). ``target`` is
    ``/``, or the absolute URL when asking an http proxy."""
    try:
        conn.sendall(
            f"HEAD {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
        )
        return conn.recv(4096).decode("latin-1")
    except OSError as exc:
        raise _problem(f"{where}: no answer ({exc})", f"curl -sS -o /dev/null {base_url}") from None


def _reach(
    name: str,
    base_url: str,
    ca_bundle: str | None,
    proxy_setting: str | None = None,
    daemon_proxy: str | bool | None = False,
) -> list[Finding]:
    """DNS, TCP (or the proxy's CONNECT) and TLS to one profile's Coactive; Coactive's clock,
    behind a proxy too. The proxy is chosen by the daemon's own rules (:mod:`proxy`: the
    profile's ``proxy`` key, then NO_PROXY/HTTPS_PROXY as curl reads them), and shown without
    its password. ``daemon_proxy``: the proxy a running daemon reports for the profile (its
    ``proxy`` status field; None: direct), which wins over this command's environment, since
    the daemon is the one that refreshes (False: no daemon answered)."""
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    where = f"profile {name} ({base_url})"
    try:
        route = proxy_mod.choose(base_url, proxy_setting)
    except ValueError as exc:
        return [Finding("network", "problem", f"{where}: {exc}", "fix or unset that variable")]
    route = _as_daemon_sees(route, daemon_proxy)
    tls = " and TLS" if parts.scheme == "https" else ""
    try:
        if route.url:
            raw = _through_proxy(where, base_url, route, host, port)
            said = f"through the proxy {route.describe()}: CONNECT{tls} work"
            if parts.scheme != "https":
                said = f"through the proxy {route.describe()}: it answers"
        else:
            raw = _connect(where, name, base_url, host, port)
            said = f"DNS, TCP{tls} work"
        try:
            raw.settimeout(NET_TIMEOUT)
            conn = _tls(where, name, raw, host, ca_bundle) if parts.scheme == "https" else raw
            target = base_url.rstrip("/") + "/" if route.url and parts.scheme != "https" else "/"
            head = _head(where, base_url, conn, host, target)
        finally:
            raw.close()
    except _Failed as failed:
        return [failed.finding]
    found = [Finding("network", "ok", f"{where}: {said}")]
    found += _clock(where, head)
    return found


def _as_daemon_sees(route: proxy_mod.Route, daemon_proxy: str | bool | None) -> proxy_mod.Route:
    """This command's route, or the running daemon's when they differ: a proxy set only in
    the service's environment (docs/OPERATIONS.md) is one this shell does not see."""
    if daemon_proxy is False or daemon_proxy == route.shown():
        return route
    if daemon_proxy is None or daemon_proxy is True:
        return proxy_mod.Route(None, "the daemon's environment")
    return proxy_mod.Route(str(daemon_proxy), "the daemon's environment")


def _clock(where: str, head: str) -> list[Finding]:
    from email.utils import parsedate_to_datetime

    for line in head.split("\r\n"):
        if line.lower().startswith("date:"):
            try:
                theirs = parsedate_to_datetime(line[5:].strip()).timestamp()
            except (TypeError, ValueError):
                return []
            off = time.time() - theirs
            if abs(off) > CLOCK_TOLERANCE:
                return [
                    Finding(
                        "clock",
                        "problem",
                        f"this clock is {off:+.0f} s off {where}'s",
                        "sudo timedatectl set-ntp true",
                    )
                ]
            return [
                Finding("clock", "ok", f"this clock agrees with {where} (within {abs(off):.0f} s)")
            ]
    return []


def network(found: list[Finding], daemon_status: dict[str, object] | None = None) -> None:
    """Probe every configured profile's Coactive; append the findings. ``daemon_status``: a
    running daemon's ``/v1/status``, whose per-profile ``proxy`` is the route it uses."""
    from coactive_credd.core import config

    try:
        profiles = list(config.load(resolve_paths().config_file).profiles.values())
    except config.ConfigError:
        return
    # Daemon threads: a resolver that hangs must not hold the command (or its exit) up.
    seen: dict[str, str | None] = {}
    listed = (daemon_status or {}).get("profiles")
    for entry in listed if isinstance(listed, list) else []:
        if isinstance(entry, dict) and "proxy" in entry:
            seen[str(entry.get("name"))] = entry["proxy"]
    results: dict[str, list[Finding]] = {}
    threads = []
    for p in profiles:

        def probe(p: config.ProfileConfig = p) -> None:
            results[p.name] = _reach(
                p.name, p.base_url, p.ca_bundle, p.proxy, seen.get(p.name, False)
            )

        t = threading.Thread(target=probe, daemon=True)
        t.start()
        threads.append(t)
    deadline = time.monotonic() + 3 * NET_TIMEOUT
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    for p in profiles:
        found.extend(
            results.get(p.name)
            or [
                Finding(
                    "network",
                    "problem",
                    f"profile {p.name} ({p.base_url}): no answer within {3 * NET_TIMEOUT:g} s",
                    f"curl -sS -o /dev/null {p.base_url}",
                )
            ]
        )
