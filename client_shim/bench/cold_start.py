"""Cold-start time of every shim, whole process, beside `git credential-cache get`.

    python3 client_shim/bench/cold_start.py [--runs 20]

Starts the fake Coactive and a real daemon in a private temporary home, then runs each shim
as a fresh process ``--runs`` times and prints the median and the spread. The reference is
git's own in-memory helper: ``git credential-cache get`` against a credential-cache daemon
that git started itself on a temporary socket. A second table times the daemon-down path.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHIM = Path(__file__).resolve().parent.parent
PERSONAL_TOKEN = "cpt_bench-only-token"  # noqa: S105 - for the fake upstream only


def wait_for(path: Path, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"{path} did not appear")
        time.sleep(0.02)


def timed(argv: list[str], stdin: str, env: dict[str, str], runs: int) -> list[float]:
    out: list[float] = []
    subprocess.run(argv, input=stdin, capture_output=True, text=True, env=env, check=False)
    for _ in range(runs):
        started = time.perf_counter()
        proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, env=env)
        out.append((time.perf_counter() - started) * 1000)
        if proc.returncode not in (0, 3):
            raise SystemExit(f"{argv} failed: {proc.stderr.strip()}")
    return out


def row(name: str, ms: list[float]) -> str:
    return f"| {name} | {statistics.median(ms):.1f} | {min(ms):.1f} | {max(ms):.1f} |"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()

    home = Path(tempfile.mkdtemp(prefix="ccb-", dir="/tmp"))
    home.chmod(0o700)
    env = {**os.environ, "COACTIVE_CREDD_HOME": str(home)}
    for var in ("COACTIVE_CREDD_SOCKET", "COACTIVE_PROFILE"):
        env.pop(var, None)
    procs: list[subprocess.Popen[str]] = []
    try:
        fake = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "coactive_credd.testing.fakeupstream",
                "--personal-token",
                PERSONAL_TOKEN,
            ],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        procs.append(fake)
        assert fake.stdout is not None
        base_url = fake.stdout.readline().strip()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "coactive_credd",
                "login",
                "--base-url",
                base_url,
                "--personal-token-stdin",
            ],
            input=PERSONAL_TOKEN + "\n",
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "coactive_credd", "serve"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=env,
            )
        )
        wait_for(home / "credd.sock")

        go_bin = home / "coactive-token-go"
        subprocess.run(
            ["go", "build", "-o", str(go_bin), "./cmd/coactive-token"],
            cwd=SHIM / "go",
            check=True,
            env={**env, "CGO_ENABLED": "0"},
        )

        # git's own helper, its daemon started by git on a private socket.
        cache_sock = home / "git-cache" / "sock"
        host = base_url.split("://", 1)[1]
        cred = f"protocol=http\nhost={host}\nusername=u\npassword=p\n\n"
        git_env = {
            **env,
            "HOME": str(home),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": str(home / "gitconfig"),
        }
        subprocess.run(
            ["git", "credential-cache", "--socket", str(cache_sock), "store"],
            input=cred,
            text=True,
            env=git_env,
            check=True,
        )

        get = f"protocol=http\nhost={host}\n\n"
        other = "protocol=https\nhost=github.com\n\n"
        dash = shutil.which("dash") or "sh"
        clis = {
            "sh `coactive-token`": [dash, str(SHIM / "sh" / "coactive-token")],
            "Go `coactive-token`": [str(go_bin)],
            "Node `bin/coactive-token.js`": ["node", str(SHIM / "node/bin/coactive-token.js")],
            "Python `coactive_token.py`": [sys.executable, str(SHIM / "python/coactive_token.py")],
        }
        helper = [dash, str(SHIM / "sh" / "git-credential-coactive"), "get"]
        cache = ["git", "credential-cache", "--socket", str(cache_sock), "get"]

        print(f"Cold start, whole process, {args.runs} runs each (ms)\n")
        print("| command | median | min | max |\n|---|---|---|---|")
        print(row("`git credential-cache get` (reference)", timed(cache, get, git_env, args.runs)))
        print(
            row("`git-credential-coactive get` (Coactive host)", timed(helper, get, env, args.runs))
        )
        print(
            row("`git-credential-coactive get` (other host)", timed(helper, other, env, args.runs))
        )
        for name, argv in clis.items():
            print(row(name, timed(argv, "", env, args.runs)))

        down = {
            **env,
            "COACTIVE_CREDD_SOCKET": str(home / "nobody-here.sock"),
            "COACTIVE_CREDD_AUTOSTART": "0",  # the failure path, not a daemon start per run
        }
        print(f"\nDaemon not running, autostart off: until exit 3, {args.runs} runs (ms)\n")
        print("| command | median | min | max |\n|---|---|---|---|")
        for name, argv in clis.items():
            print(row(name, timed(argv, "", down, args.runs)))
        subprocess.run(
            ["git", "credential-cache", "--socket", str(cache_sock), "exit"],
            env=git_env,
            check=False,
        )
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
