"""What a newcomer reads and runs: every --help, every error line, the README's front-door
commands verbatim, doctor, and shell completion."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from coactive_credd.testing.fakeupstream import FakeCoactive

from .conftest import PERSONAL_TOKEN, Daemon, login, run_cli

REPO = Path(__file__).resolve().parent.parent
COMMANDS = [
    "login",
    "logout",
    "serve",
    "stop",
    "token",
    "refresh",
    "status",
    "doctor",
    "exec",
    "socket-path",
    "completion",
    "demo",
    "install-service",
    "uninstall-service",
    "service-status",
    "lock",
    "unlock",
    "rekey",
    "watch",
    "audit",
    "setup-git",
]
# What a fix looks like: a command the user can type.
A_COMMAND = re.compile(
    r"coactive-credd [a-z-]+|systemctl --user|launchctl|chmod \d+|pip install|export |kill "
)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_help_has_examples_exit_codes_and_environment(command: str) -> None:
    out = run_cli(command, "--help")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    for part in ("examples:", "exit codes:", "environment:"):
        assert part in text, f"`coactive-credd {command} --help` lacks {part}"
    examples = text.split("examples:", 1)[1].split("exit codes:", 1)[0]
    assert "coactive-credd" in examples


def test_the_top_help_and_serve_help_document_the_environment_and_config_keys() -> None:
    top = run_cli("--help").stdout
    for var in (
        "COACTIVE_CREDD_HOME",
        "COACTIVE_CREDD_SOCKET",
        "COACTIVE_PROFILE",
        "COACTIVE_CREDD_AUTOSTART",
        "COACTIVE_CREDD_LOG_LEVEL",
    ):
        assert var in top
    serve = run_cli("serve", "--help").stdout
    for key in ("skew", "refresh_fraction", "lock_after_idle", "lock_after_unlock"):
        assert key in serve
    assert "COACTIVE_CREDD_LOG_LEVEL" in serve


def test_every_error_path_is_one_line_naming_the_fixing_command(
    home: Path, fake: FakeCoactive
) -> None:
    no_daemon = {"COACTIVE_CREDD_AUTOSTART": "0"}
    cases: list[tuple[list[str], str | None, dict[str, str]]] = [
        (["token"], None, no_daemon),
        (["token", "--profile", "nope"], None, {"COACTIVE_CREDD_AUTOSTART": "1"}),
        (["token", "--min-ttl", "-1"], None, {}),
        (["token", "--profile", "a b"], None, {}),
        (["refresh"], None, no_daemon),
        (["status"], None, {}),
        (["exec"], None, {}),
        (["unlock", "--passphrase-stdin"], "x\n", {}),
        (["lock"], None, {}),
        (["rekey", "--key-file"], None, {}),
        (["logout", "--profile", "nope"], None, {}),
        (["login", "--base-url", "http://api.example.com", "--personal-token-stdin"], "x\n", {}),
        (["login", "--base-url", fake.base_url, "--personal-token-stdin"], "\n", {}),
        (["login", "--base-url", fake.base_url], None, {}),
        (["login", "--base-url", fake.base_url, "--personal-token-stdin"], "cpt_wrong\n", {}),
        (["login", "--client-secret-stdin"], "x\n", {}),
        (["serve", "--socket", str(home / ("s" * 120))], None, {}),
        (["tokn"], None, {}),
    ]
    for argv, stdin, env in cases:
        out = run_cli(*argv, input=stdin, env=env)
        where = f"coactive-credd {' '.join(argv)}"
        assert out.returncode != 0, where
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in out.stderr, (where, out.stderr)
        fix = lines[0].removeprefix("coactive-credd: ")
        assert A_COMMAND.search(fix), (where, out.stderr)
        assert "coactive-credd: coactive-credd " not in out.stderr, (where, out.stderr)
        assert "?min_ttl" not in out.stderr and "?profile" not in out.stderr, (where, out.stderr)


def test_protocol_words_become_flags(daemon: Daemon) -> None:
    out = run_cli("token", "--min-ttl", "99999")
    assert out.returncode == 2
    assert (
        "--min-ttl" in out.stderr and "?min_ttl" not in out.stderr and "min_ttl=" not in out.stderr
    )


def test_readme_front_door_works_without_xdg_runtime_dir(
    daemon: Daemon, fake: FakeCoactive
) -> None:
    """The README's curl line, verbatim, with COACTIVE_CREDD_HOME set and XDG_RUNTIME_DIR
    unset (a newcomer's ssh session); then with the home unset and XDG_RUNTIME_DIR set."""
    line = next(
        ln.split("#")[0].strip()
        for ln in (REPO / "README.md").read_text().splitlines()
        if ln.startswith("curl") and "--unix-socket" in ln
    )
    env = {k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"}
    bindir = daemon.home / "bin"
    bindir.mkdir(exist_ok=True)
    shim = bindir / "coactive-credd"
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m coactive_credd "$@"\n')
    shim.chmod(0o755)
    env["PATH"] = f"{bindir}:{env['PATH']}"
    out = subprocess.run(["sh", "-c", line], capture_output=True, text=True, env=env, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == fake.issued[-1]


def test_doctor_finds_a_wedged_daemon_and_a_rejected_profile(
    daemon: Daemon, fake: FakeCoactive
) -> None:
    healthy = run_cli("doctor")
    assert healthy.returncode == 0, healthy.stdout
    report = json.loads(run_cli("doctor", "--json").stdout)
    assert report["ok"] is True
    checks = {f["check"] for f in report["findings"]}
    assert {"files", "daemon", "tokens", "network"} <= checks
    fake.revoke(PERSONAL_TOKEN)
    assert run_cli("refresh").returncode == 5
    rejected = json.loads(run_cli("doctor", "--json").stdout)
    assert rejected["ok"] is False
    (bad,) = [f for f in rejected["findings"] if f["status"] == "problem"]
    assert bad["fix"] == "coactive-credd login --profile default"
    os.kill(daemon.proc.pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        wedged = run_cli("doctor")
        assert time.monotonic() - t0 < 20
        assert wedged.returncode == 1
        assert (
            f"pid {daemon.proc.pid}" in wedged.stdout
            and "fix: coactive-credd stop" in wedged.stdout
        )
    finally:
        os.kill(daemon.proc.pid, signal.SIGCONT)


def test_doctor_without_anything(home: Path) -> None:
    out = run_cli("doctor", "--json")
    report = json.loads(out.stdout)
    assert out.returncode == (0 if report["ok"] else 1)
    for f in report["findings"]:
        if f["status"] != "ok":
            assert A_COMMAND.search(f["fix"]) or f["fix"].split()[0] in ("curl", "getent"), f


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_bash_completion_completes_commands_and_flags(home: Path) -> None:
    pytest.importorskip("shtab")
    script = run_cli("completion", "bash")
    assert script.returncode == 0, script.stderr
    path = home / "completion.bash"
    path.write_text(script.stdout)
    probe = (
        f"source {path}; "
        "COMP_WORDS=(coactive-credd to); COMP_CWORD=1; COMP_LINE='coactive-credd to'; "
        "COMP_POINT=${#COMP_LINE}; _shtab_coactive_credd coactive-credd to coactive-credd; "
        'echo "${COMPREPLY[@]}"; '
        "COMP_WORDS=(coactive-credd token --mi); COMP_CWORD=2; "
        "COMP_LINE='coactive-credd token --mi'; COMP_POINT=${#COMP_LINE}; "
        '_shtab_coactive_credd coactive-credd --mi token; echo "${COMPREPLY[@]}"'
    )
    out = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, timeout=30)
    assert "token" in out.stdout.splitlines()[0], out
    assert "--min-ttl" in out.stdout.splitlines()[1], out
    zsh = run_cli("completion", "zsh")
    assert zsh.returncode == 0 and "#compdef coactive-credd" in zsh.stdout


def test_completion_without_shtab_says_how_to_get_it(home: Path) -> None:
    code = (
        "import sys; sys.modules['shtab'] = None\n"
        "from coactive_credd.cli.main import main\n"
        "sys.exit(main(['completion', 'bash']))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.returncode == 1 and "pip install 'coactive-credd[completion]'" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_login_after_a_fresh_home_the_way_the_readme_says(home: Path, fake: FakeCoactive) -> None:
    login(fake)
    st = run_cli("status")
    assert st.returncode == 3  # no daemon yet: still lists what the config has
    assert "default" in st.stdout and fake.base_url in st.stdout


def test_every_command_has_help_text_and_builds_alone() -> None:
    """A command missing from cli_help would lack its examples, and would make every run
    build the whole parser (a run builds only its own command's parser)."""
    import argparse

    from coactive_credd.cli.help import HELP
    from coactive_credd.cli.parser import build_parser

    def commands(parser: argparse.ArgumentParser) -> set[str]:
        (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        return set(sub.choices)

    assert commands(build_parser()) == set(HELP) == set(COMMANDS)
    for name in HELP:
        assert commands(build_parser(only=name)) == {name}
