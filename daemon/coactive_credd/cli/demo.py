"""``coactive-credd demo``: the real daemon against an embedded fake Coactive, in about a minute.

A temporary home, a fake Coactive issuing 20-second tokens, ``coactive-credd login`` and
``coactive-credd serve`` run as real processes, and a timeline: tokens fetched with ``curl``
and with the Python client, one API call through the daemon's API proxy, refreshes as the
daemon makes them, an upstream outage ridden out on the still-valid token, then recovery. Nothing is left behind, however it ends: Ctrl-C,
a closed terminal (SIGHUP, which the daemon itself takes as "reload"), SIGTERM (``timeout``).
The closing line counts what was served; the demo exits 1 when a caller went unserved.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import FrameType
from typing import IO, Any

import coactive_token

from coactive_credd.core.errors import CreddError
from coactive_credd.testing.fakeupstream import FakeCoactive, FakeCoactiveThread

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


def _proxied(sock: Path) -> str:
    """One Coactive API call through the daemon's API proxy: the caller holds no token."""
    if shutil.which("curl") is None:
        return "curl is not installed; skipped"
    out = subprocess.run(
        [
            "curl",
            "-q",
            "-s",
            "--noproxy",
            "*",
            "--unix-socket",
            str(sock),
            "-w",
            "\n%{http_code}",
            "http://localhost/api/v1/datasets",
        ],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    ).stdout
    body, _, status = out.rpartition("\n")
    return f"GET /api/v1/datasets through the daemon (no token held): HTTP {status} {body[:60]}"


def _login(home: Path, env: dict[str, str], fake: FakeCoactive, tl: Timeline) -> int:
    """Step 1: the demo's config and ``coactive-credd login``, as a user runs it; its exit code."""
    # Short tokens want a short skew; real ones keep the 30 s default.
    (home / "config.toml").write_text("[daemon]\nskew = 5\n")
    (home / "config.toml").chmod(0o600)
    tl.say("demo", f"fake Coactive listening at {fake.base_url}")
    tl.say("demo", "$ coactive-credd login --profile default --base-url URL --personal-token-stdin")
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
    return login.returncode


def _serve(
    sock: Path, env: dict[str, str], tl: Timeline
) -> tuple[subprocess.Popen[str], threading.Thread]:
    """Step 2: ``coactive-credd serve``, its log lines on the timeline; back once its socket is
    there (or after 15 s)."""
    tl.say("demo", "$ coactive-credd serve")
    daemon = subprocess.Popen(
        [sys.executable, "-m", "coactive_credd", "serve"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    assert daemon.stderr is not None
    pump = threading.Thread(target=_pump, args=(daemon.stderr, tl), daemon=True)
    pump.start()
    deadline = time.monotonic() + 15
    while not sock.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return daemon, pump


class _Outage:
    """Step 3's fault plan: once a quarter of the run has passed, the next login plans an
    outage to cover the refresh after it, so it is ridden out on the still-valid token."""

    def __init__(self, fake: FakeCoactive, tl: Timeline, duration: float) -> None:
        self.fake, self.tl, self.duration = fake, tl, duration
        self.at: float | None = None
        self.done = False
        self.logins_seen = fake.logins

    def tick(self) -> None:
        fake, tl = self.fake, self.tl
        if fake.logins != self.logins_seen:
            self.logins_seen = fake.logins
            tl.say("fake", f"login #{fake.logins} answered (tokens last {LIFETIME} s)")
            if self.at is None and time.monotonic() - tl.t0 > self.duration / 4:
                self.at = time.monotonic() + OUTAGE_START
        if self.at is None or self.done:
            return
        if fake.fault is None and time.monotonic() >= self.at:
            fake.fault = "503"
            tl.say("fake", f"OUTAGE: Coactive now answers 503 for {OUTAGE:.0f} s")
        if time.monotonic() - self.at > OUTAGE:
            fake.fault = None
            self.done = True
            tl.say("fake", "outage over: Coactive answers again")


def _callers(
    sock: Path, fake: FakeCoactive, tl: Timeline, duration: float, daemon: subprocess.Popen[str]
) -> tuple[int, int]:
    """Step 3: a caller each second, curl and the Python client in turn, while the fault plan
    runs; ends early if the daemon dies. Answers (served, failed)."""
    # Never a daemon of its own: one started here would not have the demo's home.
    client = coactive_token.Client(str(sock), timeout=10, autostart=False)
    outage = _Outage(fake, tl, duration)
    end = time.monotonic() + duration
    step = served = failed = 0
    while time.monotonic() < end:
        if daemon.poll() is not None:
            tl.say("demo", f"the daemon exited (status {daemon.returncode}); stopping")
            failed += 1
            break
        if step == 2:
            line = _proxied(sock)
            ok = " HTTP 200 " in line
            tl.say("curl", line)
        elif step % 2 == 0:
            line = _curl(sock)
            ok = line.startswith("HTTP 200")
            tl.say("curl", line)
        else:
            try:
                tok = client.token("default")
                ok = True
                tl.say(
                    "python",
                    f"get_token() -> …{tok.access_token[-4:]}, expires in {tok.expires_in} s",
                )
            except coactive_token.CredddError as exc:
                ok = False
                tl.say("python", f"{type(exc).__name__}: {exc}")
        served, failed = served + ok, failed + (not ok)
        outage.tick()
        step += 1
        time.sleep(1.0)
    client.close()
    return served, failed


def _closing(tl: Timeline, logins: int, served: int, failed: int) -> None:
    """The closing line, from what happened, and the three commands that start real use."""
    calls = served + failed
    if failed == 0:
        result = f"all {calls} callers served"
    else:
        result = f"{served} of {calls} callers served, {failed} not (see above)"
    tl.say("demo", f"done: {logins} login(s) to the fake Coactive; {result}")
    print(
        "\nTo use it for real (a personal token from Coactive > Settings > Credentials):\n"
        "  coactive-credd login             # paste the token; it is checked with Coactive\n"
        "  coactive-credd install-service   # the daemon at every login (or: coactive-credd serve &)\n"
        "  coactive-credd token             # the access token, kept fresh; or: coactive-credd exec -- CMD"
    )


class _Ended(CreddError):
    """SIGHUP or SIGTERM reached the demo: end it, cleaning up as Ctrl-C does."""


def _end_on_signals() -> dict[int, Any]:
    """SIGHUP (the terminal closed) and SIGTERM (``timeout``) end the demo through its
    ``finally``; answers the handlers they replace."""

    def ended(signum: int, frame: FrameType | None) -> None:
        raise _Ended(signal.Signals(signum).name)

    return {sig: signal.signal(sig, ended) for sig in (signal.SIGHUP, signal.SIGTERM)}


def _stop(daemon: subprocess.Popen[str] | None) -> None:
    """The last step, on every way out: the demo's daemon ends."""
    if daemon is not None and daemon.poll() is None:
        daemon.terminate()
        try:
            daemon.wait(10)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()


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
    previous = _end_on_signals()
    code = 0
    try:
        with FakeCoactiveThread(expires_in=LIFETIME) as fake:
            fake.add_personal_token(DEMO_TOKEN)
            code = _login(home, env, fake, tl)
            if code != 0:
                return code
            daemon, pump = _serve(sock, env, tl)
            served, failed = _callers(sock, fake, tl, duration, daemon)
            _stop(daemon)
            pump.join(5)  # the daemon's last lines before the closing ones
            _closing(tl, fake.logins, served, failed)
            code = 1 if failed else 0
    except KeyboardInterrupt:
        print()
        tl.say("demo", "interrupted; cleaning up")
        code = 130
    except _Ended as exc:
        tl.say("demo", f"{exc} received; cleaning up")
        code = 128 + getattr(signal, str(exc))
    finally:
        # A second signal must not cut the clean-up short.
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)
        _stop(daemon)
        shutil.rmtree(home, ignore_errors=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return code
