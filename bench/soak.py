"""Soak: the real daemon, many profiles on short tokens, every kind of caller, a fault schedule,
and every answer checked against the fake Coactive's ledger.

    python bench/soak.py                                  # 10 minutes, 50 profiles
    nice python bench/soak.py --duration 900 --json /tmp/soak.json
    python bench/soak.py --short --lifetime 16            # the CI-sized run, ~70 s

What runs (loopback and Unix sockets only; every loop bounded by ``--duration``):

* ``coactive-credd serve`` as shipped (uvloop when installed, default configuration), its
  wall clock offset through ``COACTIVE_CREDD_TEST_CLOCK_FILE`` (see coactive_credd.testing.hooks);
* the fake Coactive in this process, issuing ``--lifetime``-second tokens (30 by default:
  a refresh every 10-11 s per profile) and recording each one in its ledger;
* steady callers: keep-alive HTTP threads on the socket, and in turn every shim kind — the
  sh shim under dash, the Python shim, the Node shim, the Go shim (built once), git through
  ``git credential fill`` and the sh helper — plus bursts of the C load generator;
* the fault schedule (``SCHEDULE``, repeated until the time is up): Coactive slow, 429 with
  Retry-After, 500/502/503, connection resets, malformed answers, an outage longer than a
  token's life, 401 for one profile until it logs in again, login/logout churn, the wall clock
  stepped an hour forwards and back, SIGSTOP/SIGCONT, SIGHUP, slowloris and never-reading
  clients;
* the verdict (bench/soak_check.py): zero tokens served past their deadline, zero callers
  failed while a servable token existed, logins within the politeness rules, RSS and open
  descriptors flat. Exit 0 only when all hold; the figures go to stdout as JSON.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness
import soak_callers
import soak_check
from soak_check import Answer, Window

# (seconds, fault phase). "ok" is a healthy Coactive; other names are applied by Soak.phase.
SCHEDULE: list[tuple[float, str]] = [
    (15, "ok"),
    (10, "slow"),
    (12, "429"),
    (8, "ok"),
    (10, "503"),
    (8, "500"),
    (8, "502"),
    (8, "ok"),
    (10, "reset"),
    (10, "malformed"),
    (10, "ok+hup"),
    (15, "revoke-one"),
    (15, "churn"),
    (10, "clock+3600"),
    (10, "clock-back"),
    (10, "clock-3600"),
    (10, "clock-back"),
    (6, "sigstop-3"),
    (1, "sigstop-long"),  # stopped for 0.6 of a token's life: longer than its usable window
    (10, "hostile"),
    (35, "outage"),  # longer than the default 30 s lifetime
    (20, "ok"),
]
# The CI-sized run (with --lifetime 16): one of each kind that matters most, ~70 s.
SHORT: list[tuple[float, str]] = [
    (3, "ok"),
    (6, "revoke-one"),  # first, while no backoff from another fault is running
    (5, "churn"),
    (4, "429"),
    (3, "503+hup"),
    (3, "reset"),
    (3, "clock+3600"),
    (3, "clock-back"),
    (1, "sigstop-long"),
    (3, "hostile"),
    (18, "outage"),  # longer than a 16 s token's whole life
    (3, "ok"),
]
RETRY_AFTER = "3"


@dataclass
class Plan:
    duration: float
    profiles: int
    lifetime: int
    schedule: list[tuple[float, str]]
    raw_threads: int = 3
    seed: int = 1
    shims: bool = True
    loadgen: bool = True
    clock_steps: bool = True
    daemon_path: Path | None = None  # serve from this copy of the package (a planted fault)
    max_cycles: int | None = None  # stop after this many passes, each run in full

    def phases(self) -> list[tuple[float, str]]:
        return [(s, n) for s, n in self.schedule if self.clock_steps or not n.startswith("clock")]


class Soak:
    def __init__(self, plan: Plan, *, verbose: bool = True) -> None:
        from coactive_credd.testing.fakeupstream import FakeCoactiveThread, credential_id

        self.plan = plan
        self.verbose = verbose
        self.rng = random.Random(plan.seed)
        self.home = harness.short_tmpdir("soak-")
        self.sock = self.home / "credd.sock"
        self.clock_file = self.home / "clock-offset"
        self.clock_file.write_text("0")
        self.cmd = harness.credd_command() or [sys.executable, "-m", "coactive_credd"]
        self._fake_cm = FakeCoactiveThread(expires_in=plan.lifetime)
        self.fake = self._fake_cm.__enter__()
        self.fake.retry_after = RETRY_AFTER
        self.credential_id = credential_id
        self.names = [f"p{i:02d}" for i in range(plan.profiles)]
        self.secrets: dict[str, str] = {}
        self.credentials: dict[str, set[str]] = {n: set() for n in self.names}
        self.rejected_until: dict[str, float] = {}
        self.answers: list[Answer] = []
        self.windows: list[Window] = []
        self.samples: list[tuple[float, int, int]] = []
        self.faults: dict[str, int] = {}
        self.stop = threading.Event()
        self.proc: subprocess.Popen[bytes] | None = None
        self.notes: list[str] = []
        self.loadgen_runs: list[dict[str, Any]] = []
        self.hostile_figures: dict[str, int] = {}
        self.current = "ok"  # the phase running now
        self.longest_outage = 0.0
        self.timeline: list[tuple[float, str]] = []  # (epoch start, phase name)
        self.env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("COACTIVE_") and k not in ("NOTIFY_SOCKET", "LISTEN_FDS")
        }
        self.env.update(
            COACTIVE_CREDD_HOME=str(self.home),
            COACTIVE_CREDD_SOCKET=str(self.sock),
            COACTIVE_CREDD_AUTOSTART="0",
        )
        self.daemon_env = dict(self.env, COACTIVE_CREDD_TEST_CLOCK_FILE=str(self.clock_file))
        if plan.daemon_path is not None:
            path = os.pathsep.join(
                filter(None, [str(plan.daemon_path), self.env.get("PYTHONPATH")])
            )
            self.daemon_env["PYTHONPATH"] = path

    def log(self, msg: str) -> None:
        if self.verbose:
            print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    # ---- setup -------------------------------------------------------------------------

    def new_secret(self, name: str) -> str:
        secret = f"pt-{name}-{secrets.token_hex(8)}"
        self.fake.add_personal_token(secret)
        self.secrets[name] = secret
        self.credentials[name].add(self.credential_id(secret))
        return secret

    def setup(self) -> None:
        """Every profile's credentials straight into the vault and config (as `login
        --no-verify` would write them, without 50 CLI starts)."""
        from coactive_credd.core import config, fsutil
        from coactive_credd.vault import ProfileSecrets, Vault, VaultData

        for name in self.names:
            self.new_secret(name)
        vault = Vault(self.home / "vault.bin", self.home / "vault.key", self.home / "vault.lock")

        def put(d: VaultData) -> None:
            for name in self.names:
                d.profiles[name] = ProfileSecrets(secret=self.secrets[name])

        vault.update(put)
        base = self.fake.base_url
        with fsutil.locked(self.home / "config.lock"):
            config.update(
                self.home / "config.toml",
                lambda c: config.Config(
                    daemon=c.daemon,
                    profiles={n: config.ProfileConfig(name=n, base_url=base) for n in self.names},
                ),
            )

    def start_daemon(self) -> None:
        log = (self.home / "serve.log").open("ab")
        self.proc = subprocess.Popen(
            # the testing room's serve: the shipped one reads no COACTIVE_CREDD_TEST_* switch
            [sys.executable, "-m", "coactive_credd.testing.serve", "--socket", str(self.sock)],
            env=self.daemon_env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        log.close()
        harness.wait_until_answers(self.sock, self.proc, 60)

    def cli(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.cmd, *args],
            input=stdin,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    # ---- faults ------------------------------------------------------------------------

    def count(self, kind: str) -> None:
        self.faults[kind] = self.faults.get(kind, 0) + 1

    def set_fault(self, fault: str | None, delay: float = 0.0) -> None:
        self.fake.fault, self.fake.delay = fault, delay

    def phase(self, seconds: float, name: str) -> None:
        """Run one phase of the schedule; returns when it is over (or the soak is)."""
        end = time.monotonic() + seconds
        self.log(f"phase {name} for {seconds:g} s")
        base = name.removesuffix("+hup")
        self.current = base
        self.timeline.append((time.time(), name))
        if base != name:
            self.sighup()
        if base in ("429", "500", "502", "503", "reset", "malformed"):
            self.count(base)
            self.set_fault(base)
        elif base == "slow":
            self.count("slow")
            self.set_fault(None, delay=2.0)
        elif base == "outage":
            self.count("outage (resets) longer than a token's life")
            self.set_fault("reset")
            self.longest_outage = max(self.longest_outage, seconds)
        elif base == "revoke-one":
            self.revoke_one(end)
        elif base == "churn":
            self.churn(end)
        elif base.startswith("clock"):
            self.count("wall clock step")
            offset = 0.0 if base == "clock-back" else float(base[len("clock") :])
            self.clock_file.write_text(str(offset))
        elif base.startswith("sigstop"):
            self.sigstop(3.0 if base == "sigstop-3" else self.plan.lifetime * 0.6)
            end = max(end, time.monotonic())
        elif base == "hostile":
            self.count("hostile clients")
            for k, n in soak_callers.hostile(self.sock, end, self.stop).items():
                self.hostile_figures[k] = self.hostile_figures.get(k, 0) + n
        self.sleep_until(end)
        self.set_fault(None)

    def sleep_until(self, end: float) -> None:
        while not self.stop.is_set() and time.monotonic() < end:
            time.sleep(min(0.2, max(0.0, end - time.monotonic())))

    def sighup(self) -> None:
        if self.proc is not None:
            self.count("SIGHUP")
            self.proc.send_signal(signal.SIGHUP)

    def sigstop(self, seconds: float) -> None:
        assert self.proc is not None
        self.count("SIGSTOP")
        t0 = time.time()
        self.proc.send_signal(signal.SIGSTOP)
        time.sleep(seconds)
        self.proc.send_signal(signal.SIGCONT)
        # Callers that waited through the stop may time out: not the daemon's failure.
        self.windows.append(Window(t0, time.time() + 1.0, None, "SIGSTOP"))

    def login(self, name: str) -> None:
        secret = self.new_secret(name)
        done = self.cli(
            "login",
            "--profile",
            name,
            "--base-url",
            self.fake.base_url,
            "--personal-token-stdin",
            stdin=secret + "\n",
        )
        if done.returncode != 0:
            self.notes.append(f"login {name} failed: {done.stderr.strip()[-200:]}")

    def revoke_one(self, end: float) -> None:
        """Coactive starts answering 401 for one profile's credentials; near the end of the
        phase its user logs in again with new ones."""
        self.count("401 for one profile")
        name = self.rng.choice(self.names[1:])
        old = self.secrets[name]
        t0 = time.time()
        self.fake.revoke(old)
        # The user's `coactive-credd refresh`, so the 401 comes now rather than at the
        # profile's next refresh (which may fall after the phase); again each second while a
        # backoff from an earlier fault answers it from the state instead of a login.
        cred = self.credential_id(old)
        while time.monotonic() < end - 4 and not self.rejected(cred):
            with contextlib.suppress(OSError, RuntimeError):
                harness.http_get(self.sock, f"/v1/token/refresh?profile={name}", method="POST")
            self.stop.wait(1.0)
        self.sleep_until(end - 4)
        self.login(name)
        self.rejected_until[self.credential_id(old)] = time.time()
        self.windows.append(Window(t0, time.time() + 1.0, name, "revoked"))

    def rejected(self, cred: str) -> bool:
        with self.fake._lock:
            return any(r.credential == cred and r.status == 401 for r in self.fake.requests)

    def churn(self, end: float) -> None:
        self.count("logout/login churn")
        name = self.rng.choice(self.names[1:])
        t0 = time.time()
        done = self.cli("logout", "--profile", name)
        if done.returncode != 0:
            self.notes.append(f"logout {name} failed: {done.stderr.strip()[-200:]}")
        self.sleep_until(end - 5)
        self.login(name)
        self.windows.append(Window(t0, time.time() + 1.0, name, "logged out"))

    # ---- measurement -------------------------------------------------------------------

    def sample(self) -> tuple[float, int, int]:
        assert self.proc is not None
        pid = self.proc.pid
        return (time.time(), harness.rss_kib(pid), len(os.listdir(f"/proc/{pid}/fd")))

    def sampler(self) -> None:
        while not self.stop.wait(2.0):
            with contextlib.suppress(OSError, RuntimeError):
                self.samples.append(self.sample())

    # ---- the run -----------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        t_start = time.time()
        self.setup()
        self.start_daemon()
        self.log(f"daemon pid {self.proc.pid if self.proc else '?'}; {len(self.names)} profiles")
        callers = soak_callers.Callers(self)
        threads = [threading.Thread(target=self.sampler, daemon=True)]
        threads += callers.threads()
        for t in threads:
            t.start()
        time.sleep(5.0)  # warm-up: every profile's first token, caches, the shims' first runs
        baseline = self.sample()
        deadline = time.monotonic() + self.plan.duration
        cycles = 0
        try:
            while time.monotonic() < deadline and cycles != self.plan.max_cycles:
                for seconds, name in self.plan.phases():
                    left = deadline - time.monotonic()
                    if left <= 1:
                        break
                    full = self.plan.max_cycles is not None  # a counted pass runs whole
                    self.phase(seconds if full else min(seconds, left), name)
                cycles += 1
        finally:
            self.clock_file.write_text("0")
            self.set_fault(None)
            self.stop.set()
            for t in threads:
                t.join(timeout=60)
        time.sleep(2.0)  # let the daemon close what the hostile clients left
        final = self.sample()
        return self.verdict(t_start, cycles, baseline, final, callers)

    def verdict(
        self,
        t_start: float,
        cycles: int,
        baseline: tuple[float, int, int],
        final: tuple[float, int, int],
        callers: soak_callers.Callers,
    ) -> dict[str, Any]:
        v = soak_check.Verdict()
        with self.fake._lock:
            ledger = list(self.fake.ledger)
            requests = list(self.fake.requests)
        soak_check.check_answers(self.answers, ledger, self.credentials, self.windows, v)
        steps = [t for t, name in self.timeline if name.startswith("clock")]
        polite = soak_check.check_politeness(requests, ledger, self.rejected_until, v, steps)
        flat = soak_check.check_flat([baseline, *self.samples, final], v)
        by_kind: dict[str, dict[str, int]] = {}
        for a in self.answers:
            k = by_kind.setdefault(a.kind, {"answers": 0, "tokens": 0})
            k["answers"] += 1
            k["tokens"] += a.token is not None
        loadgen = _sum_loadgen(self.loadgen_runs)
        return {
            "ok": v.ok and not callers.broken,
            "duration_s": round(time.time() - t_start, 1),
            "cycles": cycles,
            "profiles": len(self.names),
            "token_lifetime_s": self.plan.lifetime,
            "event_loop": _event_loop(self.home / "serve.log"),
            "rotations": len(ledger),
            "longest_outage_s": round(self.longest_outage, 1),
            "login_requests": sum(1 for r in requests if r.path == "/api/v0/login"),
            "faults": self.faults,
            "callers": by_kind,
            "loadgen": loadgen,
            "hostile": self.hostile_figures,
            "verdict": v.summary(),
            "breaches_by_phase": self.by_phase(v.when),
            "politeness": polite,
            "flat": flat,
            "excused_windows": len(self.windows),
            "caller_kinds_missing": callers.broken,
            "notes": self.notes,
        }

    def by_phase(self, when: dict[str, list[float]]) -> dict[str, dict[str, int]]:
        """Each rule's breaches, counted by the phase running when the request was sent
        (a breach in "clock-back" is one the step before it set up)."""
        out: dict[str, dict[str, int]] = {}
        starts = [t for t, _ in self.timeline]
        for rule, times in when.items():
            counts: dict[str, int] = {}
            for t in times:
                i = bisect.bisect_right(starts, t) - 1
                phase = f"#{i} {self.timeline[i][1]}" if i >= 0 else "warm-up"
                counts[phase] = counts.get(phase, 0) + 1
            out[rule] = counts
        return out

    def close(self) -> None:
        if self.proc is not None:
            harness.stop_process(self.proc)
        self._fake_cm.__exit__(None, None, None)
        shutil.rmtree(self.home, ignore_errors=True)


def _event_loop(log: Path) -> str:
    with contextlib.suppress(OSError):
        text = log.read_text(errors="replace")
        if "(event loop: " in text:
            return text.split("(event loop: ", 1)[1].split(")", 1)[0].split(";")[0]
    return "unknown"


def _sum_loadgen(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "runs": len(runs),
        "requests": sum(int(r.get("requests", 0)) for r in runs),
        "errors_in_ok_phases": sum(int(r.get("errors", 0)) for r in runs),
    }


def run(plan: Plan, *, verbose: bool = True) -> dict[str, Any]:
    soak = Soak(plan, verbose=verbose)
    try:
        return soak.run()
    finally:
        soak.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=600, help="seconds (default 600)")
    ap.add_argument("--profiles", type=int, default=50)
    ap.add_argument("--lifetime", type=int, default=30, help="token lifetime, seconds")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--short", action="store_true", help="the CI-sized schedule (~70 s, with --lifetime 16)"
    )
    ap.add_argument("--no-shims", action="store_true", help="socket callers only")
    ap.add_argument(
        "--no-clock-steps", action="store_true", help="leave the daemon's wall clock alone"
    )
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args(argv)
    schedule = SHORT if args.short else SCHEDULE
    plan = Plan(
        duration=args.duration,
        profiles=args.profiles,
        lifetime=args.lifetime,
        schedule=schedule,
        seed=args.seed,
        shims=not args.no_shims,
        clock_steps=not args.no_clock_steps,
    )
    if args.short:
        plan.max_cycles = 1  # one whole pass; --duration still bounds it
    figures = run(plan, verbose=not args.quiet)
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0 if figures["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
