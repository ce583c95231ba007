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

from . import proxy as proxy_mod
from .cli_common import resolve_paths

NET_TIMEOUT = 5.0  # seconds for each DNS, TCP or TLS step
CLOCK_TOLERANCE = 60.0  # seconds of difference from Coactive's clock that count as a problem


@dataclass
class Finding:
    """One line of the report: ``status`` is ok, note or problem; ``fix`` a command."""

    check: str
    status: str
    message: str
    fix: str = ""


class _Failed(Exception):
    """A step that failed: its finding ends that profile's probe."""

    def __init__(self, finding: Finding) -> None:
        super().__init__(finding.message)
        self.finding = finding


def _problem(message: str, fix: str) -> _Failed:
    return _Failed(Finding("network", "problem", message, fix))


def _through_proxy(where: str, base_url: str, route: proxy_mod.Route) -> Finding:
    """The proxy step: a TCP connection to the proxy."""
    p = urlsplit(route.url or "")
    try:
        socket.create_connection((p.hostname or "", p.port or 80), timeout=NET_TIMEOUT).close()
    except OSError as exc:
        raise _problem(
            f"{where}: the proxy {route.describe()} cannot be reached ({exc})",
            f"curl -sS -o /dev/null --proxy {route.shown()} {base_url}",
        ) from None
    return Finding("network", "ok", f"{where}: through the proxy {route.describe()}")


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


def _head(where: str, base_url: str, conn: socket.socket, host: str) -> str:
    """One ``HEAD /``: the start of Coactive's answer (for its ``Date`` header)."""
    try:
        conn.sendall(f"HEAD / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        return conn.recv(4096).decode("latin-1")
    except OSError as exc:
        raise _problem(f"{where}: no answer ({exc})", f"curl -sS -o /dev/null {base_url}") from None


def _reach(
    name: str, base_url: str, ca_bundle: str | None, proxy_setting: str | None = None
) -> list[Finding]:
    """DNS, TCP (or the proxy) and TLS to one profile's Coactive; Coactive's clock. The
    proxy is chosen by the daemon's own rules (:mod:`proxy`: the profile's ``proxy`` key,
    then NO_PROXY/HTTPS_PROXY as curl reads them), and shown without its password."""
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    where = f"profile {name} ({base_url})"
    try:
        route = proxy_mod.choose(base_url, proxy_setting)
    except ValueError as exc:
        return [Finding("network", "problem", f"{where}: {exc}", "fix or unset that variable")]
    try:
        if route.url:
            return [_through_proxy(where, base_url, route)]
        raw = _connect(where, name, base_url, host, port)
        try:
            raw.settimeout(NET_TIMEOUT)
            conn = _tls(where, name, raw, host, ca_bundle) if parts.scheme == "https" else raw
            head = _head(where, base_url, conn, host)
        finally:
            raw.close()
    except _Failed as failed:
        return [failed.finding]
    found = [
        Finding(
            "network",
            "ok",
            f"{where}: DNS, TCP{' and TLS' if parts.scheme == 'https' else ''} work",
        )
    ]
    found += _clock(where, head)
    return found


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


def network(found: list[Finding]) -> None:
    """Probe every configured profile's Coactive; append the findings."""
    from . import config

    try:
        profiles = list(config.load(resolve_paths().config_file).profiles.values())
    except config.ConfigError:
        return
    # Daemon threads: a resolver that hangs must not hold the command (or its exit) up.
    results: dict[str, list[Finding]] = {}
    threads = []
    for p in profiles:

        def probe(p: config.ProfileConfig = p) -> None:
            results[p.name] = _reach(p.name, p.base_url, p.ca_bundle, p.proxy)

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
