"""``coactive-credd demo``: the real daemon against an embedded fake Coactive, in about a minute.

A temporary home, a fake Coactive issuing 20-second tokens, ``coactive-credd login`` and
``coactive-credd serve`` run as real processes, and a timeline: tokens fetched with ``curl``
and with the Python client, refreshes as the daemon makes them, an upstream outage ridden out
on the still-valid token, then recovery. Nothing is left behind.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO

import coactive_token
from coactive_credd.testing.fakeupstream import FakeCoactiveThread

DEMO_TOKEN = "demo-personal-token"  # noqa: S105 - the fake's own credential, not a real one
LIFETIME = 30
OUTAGE_START = 12.0  # seconds after a fresh token, so the outage covers its refresh
OUTAGE = 10.0


class Timeline:
    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.lock = threading.Lock()

    def say(self, who: str, text: str) -> None:
        with self.lock:
            print(f"t+{time.monotonic() - self.t0:5.1f}s  {who:<7} {text}", flush=True)


def _pump(stream: IO[str], timeline: Timeline) -> None:
    for line in stream:
        # The daemon's own lines, without its timestamp and level: the timeline has one.
        parts = line.rstrip("\n").split(" ", 2)
        timeline.say(
            "daemon", parts[2] if len(parts) == 3 and parts[0][:2] == "20" else line.rstrip()
        )


def _curl(sock: Path) -> str:
    if shutil.which("curl") is None:
        return "curl is not installed; skipped"
    out = subprocess.run(
        [
            "curl",
            "-q",  # not the user's ~/.curlrc
            "-s",
            "--noproxy",
            "*",
            "--unix-socket",
            str(sock),
            "http://localhost/v1/token?profile=default",
            "-H",
            "Accept: text/plain",
            "-w",
            " HTTP %{http_code}",
        ],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    ).stdout
    token, _, status = out.rpartition(" HTTP ")
    return (
        f"HTTP {status}, token …{token[-4:]}"
        if status == "200"
        else f"HTTP {status}: {token[:120]}"
    )


# Settings of the user's own that would point the demo elsewhere: it owns its environment.
_PROXY_VARIABLES = ("https_proxy", "http_proxy", "all_proxy", "no_proxy")


def demo_environment(home: Path) -> dict[str, str]:
    """The environment of the demo's processes: the user's, without any ``COACTIVE_*``
    setting (a ``COACTIVE_PROFILE=prod`` would send every fetch to a profile the demo does
    not have) or proxy (the fake Coactive is on loopback), with the demo's own home."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("COACTIVE_") and k.lower() not in _PROXY_VARIABLES
    }
    env["COACTIVE_CREDD_HOME"] = str(home)
    env["COACTIVE_CREDD_AUTOSTART"] = "0"  # the demo starts its daemon itself, in view
    return env


def main(duration: float = 60.0) -> int:
    home = Path(tempfile.mkdtemp(prefix="ccd-demo-", dir="/tmp"))
    env = demo_environment(home)
    sock = home / "credd.sock"
    tl = Timeline()
    daemon: subprocess.Popen[str] | None = None
    print(
        f"coactive-credd demo: a fake Coactive issuing {LIFETIME}-second tokens, the real daemon, "
        f"about {int(duration)} seconds (Ctrl-C ends it). Files in {home}, removed at the end.\n"
    )
    try:
        with FakeCoactiveThread(expires_in=LIFETIME) as fake:
            fake.add_personal_token(DEMO_TOKEN)
            # Short tokens want a short skew; real ones keep the 30 s default.
            (home / "config.toml").write_text("[daemon]\nskew = 5\n")
            (home / "config.toml").chmod(0o600)
            tl.say("demo", f"fake Coactive listening at {fake.base_url}")
            tl.say(
                "demo",
                "$ coactive-credd login --profile default --base-url URL --personal-token-stdin",
            )
            login = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "coactive_credd",
                    "login",
                    "--profile",
                    "default",
                    "--base-url",
                    fake.base_url,
                    "--personal-token-stdin",
                ],
                input=DEMO_TOKEN + "\n",
                capture_output=True,
                text=True,
                env=env,
                check=False,
            )
            tl.say("login", login.stderr.strip().removeprefix("coactive-credd: "))
            if login.returncode != 0:
                return login.returncode
            tl.say("demo", "$ coactive-credd serve")
            daemon = subprocess.Popen(
                [sys.executable, "-m", "coactive_credd", "serve"],
                stderr=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                text=True,
                env=env,
            )
            assert daemon.stderr is not None
            threading.Thread(target=_pump, args=(daemon.stderr, tl), daemon=True).start()
            client = coactive_token.Client(str(sock), timeout=10)
            deadline = time.monotonic() + 15
            while not sock.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            outage_at: float | None = None
            outage_done = False
            logins_seen = fake.logins
            end = time.monotonic() + duration
            step = 0
            while time.monotonic() < end:
                if step % 2 == 0:
                    tl.say("curl", _curl(sock))
                else:
                    try:
                        tok = client.token("default")
                        tl.say(
                            "python",
                            f"get_token() -> …{tok.access_token[-4:]}, expires in {tok.expires_in} s",
                        )
                    except coactive_token.CredddError as exc:
                        tl.say("python", f"{type(exc).__name__}: {exc}")
                if fake.logins != logins_seen:
                    logins_seen = fake.logins
                    tl.say("fake", f"login #{fake.logins} answered (tokens last {LIFETIME} s)")
                    # Plan the outage to cover the next refresh, so it is ridden out on the
                    # still-valid token.
                    if outage_at is None and time.monotonic() - tl.t0 > duration / 4:
                        outage_at = time.monotonic() + OUTAGE_START
                if (
                    outage_at is not None
                    and fake.fault is None
                    and not outage_done
                    and time.monotonic() >= outage_at
                ):
                    fake.fault = "503"
                    tl.say("fake", f"OUTAGE: Coactive now answers 503 for {OUTAGE:.0f} s")
                if (
                    outage_at is not None
                    and not outage_done
                    and time.monotonic() - outage_at > OUTAGE
                ):
                    fake.fault = None
                    outage_done = True
                    tl.say("fake", "outage over: Coactive answers again")
                step += 1
                time.sleep(1.0)
            client.close()
            tl.say(
                "demo", f"done: {fake.logins} login(s) to the fake Coactive, every caller served"
            )
    except KeyboardInterrupt:
        print()
        tl.say("demo", "interrupted")
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.terminate()
            try:
                daemon.wait(10)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
        shutil.rmtree(home, ignore_errors=True)
    return 0
