"""How soon a program learns of a new token: rotation -> token file replaced, and rotation
-> event at a ``coactive_token.watch()`` follower, on a real daemon and the fake Coactive.

    python3 bench/rotation.py [--seconds 60] [--lifetime 24]

The fake issues tokens of ``--lifetime`` seconds, so the daemon rotates about every 10 s;
each delay is measured from the moment the fake answered the login (its ledger).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "daemon"), str(REPO / "client_shim" / "python")]

import coactive_token  # noqa: E402
from coactive_credd.testing.fakeupstream import FakeCoactiveThread  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--lifetime", type=int, default=24)
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="ccd-rot-", dir="/tmp"))
    home.chmod(0o700)
    env = dict(
        os.environ,
        COACTIVE_CREDD_HOME=str(home),
        COACTIVE_CREDD_AUTOSTART="0",
        PYTHONPATH=f"{REPO / 'daemon'}:{REPO / 'client_shim' / 'python'}",
    )
    env.pop("COACTIVE_CREDD_SOCKET", None)
    token_file, sock = home / "run" / "token", home / "credd.sock"
    with FakeCoactiveThread(expires_in=args.lifetime) as fake:
        fake.add_personal_token("pt_bench")
        cli = [sys.executable, "-m", "coactive_credd"]
        login = [*cli, "login", "--base-url", fake.base_url, "--personal-token-stdin"]
        subprocess.run(
            login, input="pt_bench\n", text=True, env=env, check=True, capture_output=True
        )
        with open(home / "config.toml", "a") as cfg:
            cfg.write(f'token_file = "{token_file}"\n')
        daemon = subprocess.Popen(
            [*cli, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            while not sock.exists():
                time.sleep(0.05)
            events: dict[str, float] = {}

            def follow() -> None:
                for ev in coactive_token.watch(socket_path=str(sock)):
                    if ev["state"] == "valid":
                        events.setdefault(ev["token_sha256"], time.time())

            threading.Thread(target=follow, daemon=True).start()
            files: dict[str, float] = {}
            end = time.time() + args.seconds
            while time.time() < end:
                with contextlib.suppress(FileNotFoundError):
                    files.setdefault(token_file.read_text(), time.time())
                time.sleep(0.001)
        finally:
            daemon.terminate()
            daemon.wait()
        to_file, to_event = [], []
        for issued in fake.ledger[1:]:
            sha = hashlib.sha256(issued.access_token.encode()).hexdigest()
            if issued.access_token in files:
                to_file.append((files[issued.access_token] - issued.issued_at) * 1000)
            if sha in events:
                to_event.append((events[sha] - issued.issued_at) * 1000)
    for name, ms in (("token file replaced", to_file), ("event at a follower", to_event)):
        print(
            f"{name}: median {statistics.median(ms):.1f} ms, max {max(ms):.1f} ms ({len(ms)} rotations)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
