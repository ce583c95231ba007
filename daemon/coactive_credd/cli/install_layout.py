"""What ``install-service`` writes, for either service manager: where the daemon's files are
(:class:`Layout`), one change at a time (:class:`Step`), and where a manager keeps its files
(:class:`Target`). The systemd and launchd specifics live in :mod:`install_systemd` and
:mod:`install_launchd`; the commands in :mod:`install`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from coactive_credd.core.errors import CreddError

PROG = "coactive-credd"
SOCKET_UNIT = "coactive-credd.socket"
SERVICE_UNIT = "coactive-credd.service"
LAUNCHD_LABEL = "ai.coactive.credd"
SHIPPED_EXECUTABLE = "/usr/bin/coactive-credd"

Manager = Literal["systemd", "launchd"]


class InstallError(CreddError):
    """Something the user must fix before the service can be installed."""


@dataclass(frozen=True)
class Layout:
    """Where the daemon keeps its files, as the service unit must see them."""

    home: Path
    config_dir: Path
    data_dir: Path
    socket: Path | None  # None: the default, %t/coactive-credd/credd.sock
    environment: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, environ: dict[str, str] | os._Environ[str] | None = None) -> Layout:
        """The locations ``coactive-credd`` itself would use with this environment.

        Variables that move files (``COACTIVE_CREDD_HOME``, ``XDG_CONFIG_HOME``,
        ``XDG_DATA_HOME``) are passed on to the service, which would not see them otherwise,
        so the daemon and the commands run in a shell agree on where things are.
        """
        env = os.environ if environ is None else environ
        home = Path(env.get("HOME") or Path.home())
        passed = {
            k: env[k]
            for k in ("COACTIVE_CREDD_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME")
            if env.get(k)
        }
        sock = env.get("COACTIVE_CREDD_SOCKET") or None
        product_home = passed.get("COACTIVE_CREDD_HOME")
        if product_home:
            h = Path(product_home).expanduser().absolute()
            return cls(home, h, h, Path(sock) if sock else h / "credd.sock", passed)
        config = Path(passed.get("XDG_CONFIG_HOME") or home / ".config") / PROG
        data = Path(passed.get("XDG_DATA_HOME") or home / ".local" / "share") / PROG
        return cls(home, config, data, Path(sock) if sock else None, passed)


@dataclass
class Step:
    """One change: write a file, make a folder, remove one, or run a command."""

    kind: Literal["write", "mkdir", "remove", "rmdir", "run"]
    path: Path | None = None
    content: bytes = b""
    mode: int = 0o644
    argv: tuple[str, ...] = ()
    may_fail: bool = False  # e.g. `launchctl bootout` of a job that is not loaded

    def describe(self) -> str:
        if self.kind == "run":
            return (
                "run: " + " ".join(self.argv) + ("  (a failure is fine)" if self.may_fail else "")
            )
        if self.kind == "write":
            return f"write {self.path} (mode {self.mode:04o}):\n" + _indent(self.content)
        if self.kind == "mkdir":
            return f"create folder {self.path} (mode {self.mode:04o})"
        if self.kind == "rmdir":
            return f"remove folder {self.path} if nothing else is in it"
        return f"remove {self.path}"


def _indent(content: bytes) -> str:
    return "".join("    " + line + "\n" for line in content.decode().splitlines())


@dataclass(frozen=True)
class Target:
    """Where one service manager keeps what install writes."""

    manager: Manager
    files: dict[Path, bytes]
    folders: list[Path]  # created by install if missing (parents first), pruned by uninstall
    leftovers: tuple[Path, ...] = ()  # made by the service manager; pruned by uninstall if empty


def folders_below(home: Path, *needed: Path) -> list[Path]:
    """``needed`` and their ancestors below ``home``, parents first: what install may create."""
    out: list[Path] = []
    for folder in needed:
        chain = [folder, *folder.parents]
        below = chain[: chain.index(home)] if home in chain else [folder]
        out += [p for p in reversed(below) if p not in out]
    return out
