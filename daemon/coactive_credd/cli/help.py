"""The text under each ``--help``: examples, exit codes and the environment it reads.

Kept apart from the parser so the parser reads as a list of flags, and so a test can check
that every command has all three parts.
"""

from __future__ import annotations

ENV = {
    "COACTIVE_CREDD_HOME": "keep every file (config, vault, key, socket) in this one folder",
    "COACTIVE_CREDD_SOCKET": "the socket path (default: $XDG_RUNTIME_DIR/coactive-credd/credd.sock)",
    "COACTIVE_PROFILE": "the profile used when --profile is not given (default: default)",
    "COACTIVE_CREDD_AUTOSTART": "0: never start a daemon from a client; 1: always may",
    "COACTIVE_CREDD_COMMAND": "the coactive-credd executable a client starts",
    "COACTIVE_CREDD_DAEMON_UID": "also trust a daemon of this uid (an app container beside a sidecar)",
    "COACTIVE_CREDD_LOG_LEVEL": "the daemon's log level: debug, info, warning or error",
    "HTTPS_PROXY, NO_PROXY": "honoured by the daemon's calls to Coactive",
}

CLIENT_CODES = (
    "0 ok, 2 usage, 3 daemon not reachable, 4 unknown profile, 5 credentials rejected "
    "(log in again), 6 Coactive unavailable and no valid token, 7 vault locked"
)

DAEMON_KEYS = """\
config.toml [daemon] keys (`coactive-credd status` shows where the file is):
  skew = 30               serve a token only while now < expires_at - skew (seconds)
  refresh_fraction = 0.25 refresh when this share of the token's lifetime is left
  lock_after_idle = 0     passphrase vaults: lock after this many idle seconds (0: never)
  lock_after_unlock = 0   passphrase vaults: lock this many seconds after unlock (0: never)
SIGHUP (or any login) re-reads the file; a failed reload shows in `coactive-credd status`."""

# command -> (examples, exit codes, environment variables read)
HELP: dict[str, tuple[list[str], str, list[str]]] = {
    "login": (
        [
            "coactive-credd login                                  # prompts for a personal token",
            'echo "$PT" | coactive-credd login --personal-token-stdin',
            'echo "$SECRET" | coactive-credd login --profile prod --client-id ID --client-secret-stdin',
            "coactive-credd login --profile prod                   # again: same URL, CA and client id",
        ],
        "0 saved, 2 usage, 5 credentials rejected, 6 Coactive unreachable (nothing saved; "
        "--no-verify saves anyway), 7 passphrase vault locked (`coactive-credd unlock`)",
        [
            "COACTIVE_CREDD_HOME",
            "COACTIVE_CREDD_SOCKET",
            "COACTIVE_PROFILE",
            "HTTPS_PROXY, NO_PROXY",
        ],
    ),
    "logout": (
        ["coactive-credd logout --profile staging", "coactive-credd logout --all"],
        "0 removed, 4 no such profile, 7 passphrase vault locked (`coactive-credd unlock`)",
        ["COACTIVE_CREDD_HOME", "COACTIVE_CREDD_SOCKET", "COACTIVE_PROFILE"],
    ),
    "serve": (
        [
            "coactive-credd serve                                  # foreground; Ctrl-C ends it",
            "COACTIVE_CREDD_LOG_LEVEL=debug coactive-credd serve",
        ],
        "0 ended by SIGTERM/SIGINT, 1 cannot start (the message says why)",
        [
            "COACTIVE_CREDD_HOME",
            "COACTIVE_CREDD_SOCKET",
            "COACTIVE_CREDD_LOG_LEVEL",
            "HTTPS_PROXY, NO_PROXY",
        ],
    ),
    "stop": (
        ["coactive-credd stop"],
        "0 stopped (or none running), 1 it could not be ended",
        ["COACTIVE_CREDD_HOME", "COACTIVE_CREDD_SOCKET"],
    ),
    "token": (
        [
            "coactive-credd token",
            "coactive-credd token --profile prod --min-ttl 600",
            'curl -H "$(coactive-credd token --format header)" https://api.coactive.ai/api/v1/...',
            'eval "$(coactive-credd token --format env)"          # export COACTIVE_ACCESS_TOKEN',
            "coactive-credd token --wait=120                      # ride out an outage",
        ],
        CLIENT_CODES,
        [
            "COACTIVE_PROFILE",
            "COACTIVE_CREDD_SOCKET",
            "COACTIVE_CREDD_HOME",
            "COACTIVE_CREDD_AUTOSTART",
            "COACTIVE_CREDD_COMMAND",
        ],
    ),
    "refresh": (
        [
            "coactive-credd refresh",
            "coactive-credd refresh --profile prod",
            "coactive-credd refresh --all",
        ],
        CLIENT_CODES + "; during an outage with a valid token: 0, and the token is still served",
        [
            "COACTIVE_PROFILE",
            "COACTIVE_CREDD_SOCKET",
            "COACTIVE_CREDD_HOME",
            "COACTIVE_CREDD_AUTOSTART",
        ],
    ),
    "status": (
        ["coactive-credd status", "coactive-credd status --json | jq '.profiles[].state'"],
        "0 every profile can serve, 3 no daemon (the config's profiles are still listed), "
        "5 a profile needs a new login, 6 a profile has no usable token, 7 vault locked",
        ["COACTIVE_CREDD_HOME", "COACTIVE_CREDD_SOCKET"],
    ),
    "doctor": (
        ["coactive-credd doctor", "coactive-credd doctor --json"],
        "0 nothing wrong, 1 at least one problem (each with the command that fixes it)",
        [
            "COACTIVE_CREDD_HOME",
            "COACTIVE_CREDD_SOCKET",
            "COACTIVE_CREDD_DAEMON_UID",
            "HTTPS_PROXY, NO_PROXY",
        ],
    ),
    "exec": (
        [
            "coactive-credd exec -- python my_script.py",
            "coactive-credd exec --profile prod -- ./job.sh",
        ],
        CLIENT_CODES + " (before CMD runs); then CMD's own, 126/127 when it cannot run",
        [
            "COACTIVE_PROFILE",
            "COACTIVE_CREDD_SOCKET",
            "COACTIVE_CREDD_HOME",
            "COACTIVE_CREDD_AUTOSTART",
        ],
    ),
    "watch": (
        ["coactive-credd watch", "coactive-credd watch --profile prod --json"],
        "3 no daemon, or it stopped (the stream ended), 130 interrupted",
        ["COACTIVE_PROFILE", "COACTIVE_CREDD_SOCKET", "COACTIVE_CREDD_HOME"],
    ),
    "audit": (
        ["coactive-credd audit", "coactive-credd audit --json"],
        "0 printed, 1 the daemon could not answer, 3 no daemon",
        ["COACTIVE_CREDD_HOME", "COACTIVE_CREDD_SOCKET"],
    ),
    "setup-git": (
        [
            "coactive-credd setup-git",
            "coactive-credd setup-git --profile prod",
            "git config --global --get-regexp '^credential\\.'   # what it wrote",
        ],
        "0 configured, 1 git failed, 4 unknown profile (or one git cannot be set up for)",
        ["COACTIVE_PROFILE", "COACTIVE_CREDD_HOME"],
    ),
    "socket-path": (
        [
            "coactive-credd socket-path",
            "curl -s --unix-socket \"$(coactive-credd socket-path)\" -H 'Accept: text/plain' http://localhost/v1/token",
        ],
        "0 always (the path may not exist yet)",
        ["COACTIVE_CREDD_HOME", "COACTIVE_CREDD_SOCKET"],
    ),
    "completion": (
        [
            "coactive-credd completion bash > ~/.local/share/bash-completion/completions/coactive-credd",
            "coactive-credd completion zsh > ~/.zfunc/_coactive-credd",
        ],
        "0 printed, 1 the shtab package is missing (`pip install 'coactive-credd[completion]'`)",
        ["(none)"],
    ),
    "demo": (
        ["coactive-credd demo"],
        "0 done, 130 interrupted",
        ["(none: the demo runs in its own temporary home and ignores COACTIVE_*)"],
    ),
    "install-service": (
        ["coactive-credd install-service --dry-run", "coactive-credd install-service"],
        "0 installed, 1 failed (the message names the step)",
        ["COACTIVE_CREDD_HOME", "COACTIVE_CREDD_SOCKET", "XDG_CONFIG_HOME"],
    ),
    "uninstall-service": (
        ["coactive-credd uninstall-service"],
        "0 removed, 1 failed",
        ["XDG_CONFIG_HOME"],
    ),
    "service-status": (
        ["coactive-credd service-status"],
        "0 installed and running, 1 otherwise",
        ["XDG_CONFIG_HOME"],
    ),
    "lock": (
        ["coactive-credd lock"],
        "0 locked, 1 the vault has no passphrase, 3 no daemon",
        ["COACTIVE_CREDD_HOME", "COACTIVE_CREDD_SOCKET"],
    ),
    "unlock": (
        ["coactive-credd unlock", "coactive-credd unlock --passphrase-stdin < passphrase.txt"],
        "0 unlocked, 3 no daemon, 7 wrong passphrase",
        ["COACTIVE_CREDD_HOME", "COACTIVE_CREDD_SOCKET"],
    ),
    "rekey": (
        ["coactive-credd rekey --passphrase", "coactive-credd rekey --key-file"],
        "0 re-encrypted, 2 usage, 7 wrong current passphrase",
        ["COACTIVE_CREDD_HOME", "COACTIVE_CREDD_SOCKET"],
    ),
}


def epilog(command: str) -> str:
    """The text under ``coactive-credd COMMAND --help``."""
    examples, codes, env = HELP.get(command, ([], "0 ok, 1 failure, 2 usage", []))
    parts = []
    if examples:
        parts.append("examples:\n" + "\n".join(f"  {e}" for e in examples))
    parts.append(f"exit codes:\n  {codes}")
    if env:
        lines = [f"  {name:<26} {ENV.get(name, '')}".rstrip() for name in env]
        parts.append("environment:\n" + "\n".join(lines))
    if command == "serve":
        parts.append(DAEMON_KEYS)
    return "\n\n".join(parts)


def main_epilog() -> str:
    """The text under ``coactive-credd --help``."""
    lines = [f"  {name:<26} {text}" for name, text in ENV.items()]
    return "\n\n".join(
        [
            "examples:\n"
            "  coactive-credd login                 # store a personal token (prompted)\n"
            "  coactive-credd token                 # the current access token\n"
            "  coactive-credd exec -- python my_script.py\n"
            "  coactive-credd status                # every profile's state\n"
            "  coactive-credd doctor                # what is wrong, and the fix",
            f"exit codes (token, exec, refresh):\n  {CLIENT_CODES}",
            "environment:\n" + "\n".join(lines),
            "`coactive-credd COMMAND --help` shows each command's examples, exit codes and "
            "environment; `coactive-credd serve --help` the config file's [daemon] keys.",
        ]
    )
