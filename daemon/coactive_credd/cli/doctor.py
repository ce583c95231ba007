"""``coactive-credd doctor [--json]``: what is wrong here, and the command that fixes each.

Checks, in order: the files and their modes, the socket and its owner, the user service, the
daemon answering, every profile's token, each personal token's age (:mod:`credage`), the
clock (against Coactive's ``Date``), DNS and TLS reachability of each profile's Coactive
(through the proxy the daemon would use: :mod:`proxy`, shown without its password), and
git's credential helper. Every network step is bounded (``NET_TIMEOUT`` seconds) and the
profiles are probed in parallel, so the whole run takes seconds even with Coactive down.

Each finding is ``{"check", "status": "ok"|"note"|"problem", "message", "fix"}``; exit 1
when any is a problem. Never prints a secret (it reads no vault).

The checks live by what they look at: :mod:`doctor_files` (files, config, vault, key source,
credential age), :mod:`doctor_daemon` (socket, service, daemon, tokens), :mod:`doctor_net`
(clock, DNS, TLS, proxy) and :mod:`doctor_git` (git's credential helper); this module runs
them in order and prints what they found.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from coactive_credd.cli import doctor_daemon, doctor_files, doctor_git, doctor_net
from coactive_credd.cli.doctor_net import Finding


def diagnose() -> list[Finding]:
    found: list[Finding] = []
    doctor_files.check_files(found)
    doctor_files.check_key_source(found)
    sock, present = doctor_daemon.check_socket(found)
    service = doctor_daemon.check_service(found)
    st = doctor_daemon.check_daemon(found, sock, present, service)
    if st is not None:
        doctor_daemon.check_tokens(found, st)
    doctor_files.check_credential_age(found)
    doctor_net.network(found, st)
    doctor_git.check_git(found)
    return found


def cmd_doctor(args: argparse.Namespace) -> int:
    found = diagnose()
    bad = any(f.status == "problem" for f in found)
    if args.json:
        print(json.dumps({"ok": not bad, "findings": [asdict(f) for f in found]}, indent=2))
    else:
        mark = {"ok": "ok     ", "note": "note   ", "problem": "PROBLEM"}
        for f in found:
            fix = f"\n          fix: {f.fix}" if f.fix and f.status != "ok" else ""
            print(f"{mark[f.status]}  {f.check}: {f.message}{fix}")
        print(
            "no problems found"
            if not bad
            else "problems found: run each fix above, then `coactive-credd doctor` again"
        )
    return 1 if bad else 0
