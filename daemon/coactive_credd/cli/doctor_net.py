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

NET_TIMEOUT = 5.0  # seconds for each DNS, TCP or TLS step
CLOCK_TOLERANCE = 60.0  # seconds of difference from Coactive's clock that count as a problem


@dataclass
class Finding:
    """One line of the report: ``status`` is ok, note or problem; ``fix`` a command."""

    check: str
    status: str
    message: str
    fix: str = ""


def _reach(
    name: str, base_url: str, ca_bundle: str | None, proxy_setting: str | None = None
) -> list[Finding]:
    """DNS, TCP (or the proxy) and TLS to one profile's Coactive; Coactive's clock. The
    proxy is chosen by the daemon's own rules (:mod:`proxy`: the profile's ``proxy`` key,
    then NO_PROXY/HTTPS_PROXY as curl reads them), and shown without its password."""
    import ssl

    from coactive_credd.core import proxy_choice as proxy

    parts = urlsplit(base_url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    where = f"profile {name} ({base_url})"
    try:
        route = proxy.choose(base_url, proxy_setting)
    except ValueError as exc:
        return [Finding("network", "problem", f"{where}: {exc}", "fix or unset that variable")]
    if route.url:
        p = urlsplit(route.url)
        try:
            socket.create_connection((p.hostname or "", p.port or 80), timeout=NET_TIMEOUT).close()
        except OSError as exc:
            return [
                Finding(
                    "network",
                    "problem",
                    f"{where}: the proxy {route.describe()} cannot be reached ({exc})",
                    f"curl -sS -o /dev/null --proxy {route.shown()} {base_url}",
                )
            ]
        return [Finding("network", "ok", f"{where}: through the proxy {route.describe()}")]
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        return [
            Finding(
                "network",
                "problem",
                f"{where}: DNS cannot resolve {host} ({exc})",
                f"getent hosts {host}  # or: coactive-credd login --profile {name} --base-url URL",
            )
        ]
    try:
        raw = socket.create_connection((host, port), timeout=NET_TIMEOUT)
    except OSError as exc:
        return [
            Finding(
                "network",
                "problem",
                f"{where}: cannot connect to {host}:{port} ({exc})",
                f"curl -sS -o /dev/null {base_url}",
            )
        ]
    try:
        raw.settimeout(NET_TIMEOUT)
        conn: socket.socket = raw
        if parts.scheme == "https":
            ctx = ssl.create_default_context(cafile=ca_bundle)
            try:
                conn = ctx.wrap_socket(raw, server_hostname=host)
            except (ssl.SSLError, OSError) as exc:
                return [
                    Finding(
                        "network",
                        "problem",
                        f"{where}: TLS fails ({exc})",
                        f"a TLS-inspecting proxy? `coactive-credd login --profile {name} --ca-bundle PEM`",
                    )
                ]
        conn.sendall(f"HEAD / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        head = conn.recv(4096).decode("latin-1")
    except OSError as exc:
        return [
            Finding(
                "network",
                "problem",
                f"{where}: no answer ({exc})",
                f"curl -sS -o /dev/null {base_url}",
            )
        ]
    finally:
        raw.close()
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
    from coactive_credd.core import config

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
