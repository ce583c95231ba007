"""Where the product's files live.

Precedence: ``COACTIVE_CREDD_HOME`` puts every file in one folder (tests and the demo use it);
otherwise platformdirs' per-user locations. The socket path follows its own rule, shared by
every shim and kept in one place, :func:`coactive_token.default_socket_path`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import coactive_token

APP = "coactive-credd"
ENV_HOME = "COACTIVE_CREDD_HOME"
ENV_SOCKET = "COACTIVE_CREDD_SOCKET"
ENV_PROFILE = "COACTIVE_PROFILE"


@dataclass(frozen=True)
class Paths:
    """Every file of the product, resolved once."""

    config_file: Path
    key_file: Path
    vault_file: Path
    lock_file: Path
    socket: Path

    @property
    def private_dirs(self) -> list[Path]:
        """Folders that must exist with mode 0700 before anything is written."""
        seen: list[Path] = []
        for p in (self.config_file, self.key_file, self.vault_file, self.lock_file):
            if p.parent not in seen:
                seen.append(p.parent)
        return seen


def resolve(socket: str | None = None) -> Paths:
    """Resolve every path from the environment (and an explicit ``--socket``)."""
    sock = Path(socket) if socket else Path(coactive_token.default_socket_path())
    home = os.environ.get(ENV_HOME)
    if home:
        h = Path(home).expanduser().absolute()
        return Paths(
            config_file=h / "config.toml",
            key_file=h / "vault.key",
            vault_file=h / "vault.bin",
            lock_file=h / "vault.lock",
            socket=sock,
        )
    import platformdirs

    config = Path(platformdirs.user_config_dir(APP, appauthor=False))
    data = Path(platformdirs.user_data_dir(APP, appauthor=False))
    return Paths(
        config_file=config / "config.toml",
        key_file=config / "vault.key",
        vault_file=data / "vault.bin",
        lock_file=data / "vault.lock",
        socket=sock,
    )
