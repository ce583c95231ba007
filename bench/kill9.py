"""kill -9 loops: the real daemon (and a concurrent CLI) killed at random points while they
write the vault, then restarted, hundreds of times.

    python bench/kill9.py                         # 300 kills, ~6 minutes on 2 busy cores
    python bench/kill9.py --iterations 40 --seed 7 --json /tmp/k9.json

Each iteration starts ``coactive-credd serve`` (the shipped command, uvloop when installed)
on a vault whose tokens live 3 s, with vault writes batched every 20 ms
(``COACTIVE_CREDD_TEST_PERSIST_DELAY``), so refreshed tokens are written all the time; starts
one CLI at random (``login`` of a new or an existing profile, ``logout``, ``rekey --key-file``,
or nothing); sleeps a random 0-600 ms; then SIGKILLs the daemon, and half the time the CLI too
(otherwise the CLI is left to finish). After every kill it checks, from outside:

* the vault opens (never a decryption failure, never a missing key);
* every completed ``login`` is there with exactly its secret, every completed ``logout`` is
  gone; an interrupted one is either wholly done or wholly not; no profile holds a secret
  nobody gave it;
* config and vault agree on the profiles (a torn login/logout is counted and reported);
* no temporary file is left growing beside the vault, config or key;
* the restarted daemon answers, and serves a token for every profile with credentials.

Everything runs on a Unix socket and a loopback fake Coactive; the loop is bounded by its
iteration count. Exits 1 when any check failed, printing what failed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness

LIFETIME = 3  # seconds: a token every ~1 s per profile, so batches are written all the time
PERSIST_DELAY = "0.02"
STRAY_AGE = 10.0  # seconds: a temporary file older than this is no write in flight


@dataclass
class Model:
    """What must be on disk: for each profile, the secrets it may hold (None: may be absent).
    A completed operation narrows a profile to one outcome; an interrupted one allows both."""

    allowed: dict[str, set[str | None]] = field(default_factory=dict)

    def settle(self, name: str, secret: str | None) -> None:
        self.allowed[name] = {secret}

    def either(self, name: str, secret: str | None) -> None:
        self.allowed.setdefault(name, {None}).add(secret)


@dataclass
class Figures:
    iterations: int = 0
    kills_daemon: int = 0
    kills_cli: int = 0
    ops: dict[str, int] = field(default_factory=dict)
    ops_completed: int = 0
    ops_interrupted: int = 0
    restarts_ok: int = 0
    aimed: int = 0  # kills aimed at the moment a temporary file exists
    aimed_hits: int = 0  # ... that saw one (the kill landed inside a write)
    temp_files_seen_after_kill: int = 0  # evidence the kills land inside writes
    max_temp_files: int = 0
    torn: int = 0
    tokens_checked: int = 0
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0


class Loop:
    def __init__(self, *, profiles: int, seed: int, verbose: bool) -> None:
        from coactive_credd.testing.fakeupstream import FakeCoactiveThread

        self.rng = random.Random(seed)
        self.seed = seed
        self.verbose = verbose
        self.home = harness.short_tmpdir("k9-")
        self.sock = self.home / "credd.sock"
        self.cmd = harness.credd_command() or [sys.executable, "-m", "coactive_credd"]
        self._fake_cm = FakeCoactiveThread(expires_in=LIFETIME)
        self.fake = self._fake_cm.__enter__()
        self.model = Model()
        self.fig = Figures()
        self.proc: subprocess.Popen[bytes] | None = None
        self.names = [f"p{i:02d}" for i in range(profiles)]
        self.env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("COACTIVE_") and k not in ("NOTIFY_SOCKET", "LISTEN_FDS")
        }
        self.env.update(
            COACTIVE_CREDD_HOME=str(self.home),
            COACTIVE_CREDD_SOCKET=str(self.sock),
            COACTIVE_CREDD_AUTOSTART="0",
            COACTIVE_CREDD_TEST_PERSIST_DELAY=PERSIST_DELAY,
        )

    def close(self) -> None:
        self.kill_daemon()
        self._fake_cm.__exit__(None, None, None)
        shutil.rmtree(self.home, ignore_errors=True)

    # ---- the world ---------------------------------------------------------------------

    def new_secret(self, name: str) -> str:
        secret = f"pt-{name}-{secrets.token_hex(8)}"
        self.fake.add_personal_token(secret)
        return secret

    def cli(self, *args: str, stdin: str = "") -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [*self.cmd, *args],
            env=self.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        assert proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.write(stdin.encode())
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.close()
        proc.stdin = None  # communicate() must not flush it again
        return proc

    def login(self, name: str, *, verify: bool) -> tuple[subprocess.Popen[bytes], str]:
        secret = self.new_secret(name)
        args = ["login", "--profile", name, "--base-url", self.fake.base_url]
        args += ["--personal-token-stdin"] + ([] if verify else ["--no-verify"])
        return self.cli(*args, stdin=secret + "\n"), secret

    def setup(self) -> None:
        procs = [self.login(name, verify=False) for name in self.names[: len(self.names) // 2]]
        for (proc, secret), name in zip(procs, self.names, strict=False):
            _, err = proc.communicate(timeout=120)
            if proc.returncode != 0:
                raise RuntimeError(f"setup login failed: {err.decode(errors='replace')}")
            self.model.settle(name, secret)

    def start_daemon(self) -> None:
        log = (self.home / "serve.log").open("ab")
        self.proc = subprocess.Popen(
            [*self.cmd, "serve", "--socket", str(self.sock)],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        log.close()
        harness.wait_until_answers(self.sock, self.proc, 60)

    def kill_daemon(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)
            self.fig.kills_daemon += 1
        self.proc = None

    # ---- checks ------------------------------------------------------------------------

    def fail(self, what: str) -> None:
        self.fig.failures.append(f"iteration {self.fig.iterations}: {what}")
        if self.verbose:
            print("FAIL", self.fig.failures[-1], file=sys.stderr, flush=True)

    def wait_for_temp(self, deadline: float) -> bool:
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                if any(n.endswith(".tmp") for n in os.listdir(self.home)):
                    return True
        return False

    def temp_files(self) -> list[Path]:
        return [p for p in self.home.iterdir() if p.name.endswith(".tmp")]

    def check_disk(self) -> dict[str, str]:
        """Open vault and config as a restarting daemon would; compare with the model.
        Returns the profiles with credentials in both (the ones the daemon must serve)."""
        from coactive_credd.core import config
        from coactive_credd.vault import Vault, VaultError

        vault = Vault(self.home / "vault.bin", self.home / "vault.key", self.home / "vault.lock")
        try:
            data = vault.load()
        except VaultError as exc:
            self.fail(f"the vault does not open: {exc}")
            return {}
        try:
            cfg = config.load(self.home / "config.toml")
        except config.ConfigError as exc:
            self.fail(f"the config does not load: {exc}")
            return {}
        on_disk = {name: p.secret for name, p in data.profiles.items()}
        for name in set(on_disk) | set(self.model.allowed):
            have = on_disk.get(name)
            if have not in self.model.allowed.get(name, {None}):
                self.fail(f"profile {name}: vault holds {'a wrong secret' if have else 'nothing'}")
            tok = data.profiles[name].token if name in data.profiles else None
            if tok is not None and not (tok.access_token and tok.expires_at > tok.obtained_at):
                self.fail(f"profile {name}: a half-written cached token")
        torn = set(on_disk) ^ set(cfg.profiles)
        self.fig.torn += len(torn)
        # What is on disk now is the truth the next iteration builds on.
        for name in set(self.model.allowed) | set(on_disk):
            self.model.settle(name, on_disk.get(name))
        return {n: s for n, s in on_disk.items() if n in cfg.profiles}

    def check_restart(self, servable: dict[str, str]) -> None:
        try:
            self.start_daemon()
        except Exception as exc:
            self.fail(f"the daemon did not restart: {exc}: {self.log_tail()}")
            return
        self.fig.restarts_ok += 1
        for name in servable:
            status, body = harness.http_get(self.sock, f"/v1/token?profile={name}", timeout=30)
            self.fig.tokens_checked += 1
            if status != 200:
                self.fail(f"profile {name}: restarted daemon answered {status} {body[:200]!r}")
        now = time.time()
        temps = self.temp_files()
        self.fig.max_temp_files = max(self.fig.max_temp_files, len(temps))
        for t in temps:  # a write in flight lasts milliseconds; older ones were left behind
            with contextlib.suppress(FileNotFoundError):
                if now - t.stat().st_mtime > STRAY_AGE:
                    self.fail(f"a temporary file left behind by a killed write: {t.name}")

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return (self.home / "serve.log").read_text(errors="replace")[-800:]
        return ""

    # ---- one iteration -----------------------------------------------------------------

    def iteration(self) -> None:
        self.fig.iterations += 1
        op = self.rng.choice(["refresh-only", "login", "login", "logout", "rekey"])
        self.fig.ops[op] = self.fig.ops.get(op, 0) + 1
        proc: subprocess.Popen[bytes] | None = None
        name = self.rng.choice(self.names)
        secret: str | None = None
        if op == "login":
            proc, secret = self.login(name, verify=self.rng.random() < 0.3)
        elif op == "logout":
            present = sorted(n for n, ok in self.model.allowed.items() if ok != {None})
            name = self.rng.choice(present or self.names)
            proc = self.cli("logout", "--profile", name)
        elif op == "rekey":
            proc = self.cli("rekey", "--key-file")
        window = self.rng.uniform(0.0, 0.6)
        if self.rng.random() < 0.5:
            time.sleep(window)
        else:  # aim: kill the moment a write's temporary file appears (or at the window's end)
            self.fig.aimed += 1
            self.fig.aimed_hits += self.wait_for_temp(time.monotonic() + window)
        kill_cli = proc is not None and self.rng.random() < 0.5
        if kill_cli and proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            self.fig.kills_cli += 1
        self.kill_daemon()
        if proc is not None:
            try:
                _, err = proc.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
                self.fail(f"{op} hung after the daemon died")
            completed = proc.returncode == 0
            if op in ("login", "logout"):
                value = secret if op == "login" else None
                if completed:
                    self.fig.ops_completed += 1
                    self.model.settle(name, value)
                else:
                    self.fig.ops_interrupted += 1
                    self.model.either(name, value)
                    if proc.returncode > 0:  # not killed by us: it refused, say why
                        self.fail(f"{op} {name} exited {proc.returncode}: {err.decode()[-300:]}")
            elif completed:
                self.fig.ops_completed += 1
            else:
                self.fig.ops_interrupted += 1
                if proc.returncode > 0:
                    self.fail(f"{op} exited {proc.returncode}: {err.decode()[-300:]}")
        if self.temp_files():
            self.fig.temp_files_seen_after_kill += 1
        servable = self.check_disk()
        self.check_restart(servable)


def run(
    iterations: int, *, seed: int = 1, profiles: int = 12, verbose: bool = False
) -> dict[str, Any]:
    loop = Loop(profiles=profiles, seed=seed, verbose=verbose)
    t0 = time.monotonic()
    try:
        loop.setup()
        loop.start_daemon()
        for i in range(iterations):
            loop.iteration()
            if verbose and (i + 1) % 10 == 0:
                print(
                    f"  {i + 1}/{iterations} kills, {len(loop.fig.failures)} failures",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        loop.fig.seconds = round(time.monotonic() - t0, 1)
        loop.close()
    out = dict(loop.fig.__dict__)
    out.update(
        seed=seed,
        profiles=profiles,
        token_lifetime_s=LIFETIME,
        persist_delay_s=float(PERSIST_DELAY),
        fake_logins=loop.fake.logins,
    )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--profiles", type=int, default=12)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args(argv)
    figures = run(args.iterations, seed=args.seed, profiles=args.profiles, verbose=not args.quiet)
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 1 if figures["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
