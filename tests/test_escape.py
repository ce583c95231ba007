"""Nothing another program controls reaches the log, a terminal or JSON unescaped.

The other program is real: a copy of curl under a path that holds a newline and a forged log
line, ESC and BEL, or a byte that is not UTF-8, taking a token from the real daemon; the
kernel's ``/proc/PID/exe`` is what the daemon reads.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from coactive_credd.core.escape import controls, escape

from .conftest import Daemon, run_cli

FORGED = "2026-12-07T00:00:00Z WARNING forged: vault unlocked by root"
EVIL_NAME = f"evil\n{FORGED}\x1b]0;pwned\x07\x1b[2J"
ESCAPED_NAME = "evil\\x0a" + FORGED + "\\x1b]0;pwned\\x07\\x1b[2J"


def test_escape_is_printable_ascii_and_reads_back_to_one_string() -> None:
    assert escape("caf\udce9") == "caf\\xe9"  # os.fsdecode of b"caf\xe9"
    assert escape(b"caf\xe9") == "caf\\xe9" and escape("café") == "caf\\xe9"
    assert escape("a\\x0a") == "a\\\\x0a"  # a backslash doubles: not the escape of a newline
    assert escape("\u202eevil\u2028x\U0001f600") == "\\u202eevil\\u2028x\\U0001f600"
    assert escape("a\nb" * 50, 20) == "a\\x0ab" * 2 + "a\\x0a" + "..."
    assert controls("token …tpaY\nX\x1b") == "token …tpaY\\x0aX\\x1b"


def _curl_at(folder: Path, name: str | bytes) -> bytes:
    """A copy of curl at ``folder/name``; its path as bytes."""
    curl = shutil.which("curl")
    assert curl is not None, "curl is not installed: .ci/setup installs it"
    path = os.path.join(os.fsencode(folder), os.fsencode(name))
    shutil.copy(os.path.realpath(curl), path)
    os.chmod(path, 0o700)
    return path


def test_a_path_with_a_forged_line_and_terminal_codes_is_escaped_everywhere(
    daemon: Daemon, tmp_path: Path
) -> None:
    """Issue 23: a program whose path holds a newline and a forged line, ESC and BEL."""
    evil = _curl_at(tmp_path, EVIL_NAME)
    subprocess.run(
        [evil, "-sf", "--unix-socket", str(daemon.socket), "-o", "/dev/null",
         "http://localhost/v1/token"],
        check=True, timeout=30,
    )  # fmt: skip
    env = {"COACTIVE_CREDD_SOCKET": str(daemon.socket)}
    proc = run_cli("audit", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    exes = [c["exe"] for c in json.loads(proc.stdout)["clients"]]
    want = str(tmp_path).replace("\\", "\\\\") + "/" + ESCAPED_NAME
    assert want in exes, exes
    table = run_cli("audit", env=env)
    assert table.returncode == 0, table.stderr
    assert "\x1b" not in table.stdout and "\x07" not in table.stdout
    assert not any(line.startswith(FORGED) for line in table.stdout.splitlines())
    assert want in table.stdout


@pytest.mark.parametrize("sink", ["file", "journal"])
@pytest.mark.parametrize("name", [EVIL_NAME, b"caf\xe9"], ids=["forged-line", "not-utf-8"])
def test_the_audit_log_line_is_one_record_whatever_the_path(
    tmp_path: Path, sink: str, name: str | bytes
) -> None:
    """Issue 23: the forged line became its own record (and, on the journal's stream, its
    own priority); a path that is not UTF-8 printed ``--- Logging error ---`` and the record
    was lost. The daemon's own audit and logging, on a real process of that path."""
    prog = _curl_at(tmp_path, name)
    listener = tmp_path / "l.sock"
    # curl waits on a Unix socket nobody answers: a live process of that path
    import socket

    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(listener))
    srv.listen(1)
    held = subprocess.Popen(
        [prog, "-s", "-m", "20", "--unix-socket", str(listener), "http://localhost/"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        conn, _ = srv.accept()
        err = tmp_path / "err.log"
        err.touch()
        st = os.stat(err)
        env = {**os.environ}
        for var in ("INVOCATION_ID", "XPC_SERVICE_NAME", "JOURNAL_STREAM"):
            env.pop(var, None)
        if sink == "journal":
            env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        script = (
            "import time\n"
            "from coactive_credd.server import audit, logsetup\n"
            "logsetup.configure('info')\n"
            f"a = audit.Audit(time.time)\n"
            f"a.connected(0, {held.pid})\n"
            "a.log_changes()\n"
        )
        with open(err, "ab") as f:
            subprocess.run(
                [sys.executable, "-c", script], env=env, stderr=f, check=True, timeout=30
            )
        conn.close()
    finally:
        held.kill()
        held.wait()
        srv.close()
    raw = err.read_bytes()
    text = raw.decode("utf-8")  # valid UTF-8: every byte that was not is escaped
    assert "Logging error" not in text, text
    lines = text.splitlines()
    assert len(lines) == 1, lines
    assert "audit: uid=0" in lines[0] and escape(os.fsdecode(prog)) in lines[0]
    if sink == "journal":
        assert lines[0].startswith("<6>")
    assert "\x1b" not in text and "\x07" not in text
