"""The settings ``config.toml`` holds, their defaults, and the error a wrong file raises.

The records here are what :func:`config.parse` returns and :func:`config.render` writes; the
rules for reading them from the file are in :mod:`config_check`. Everyone imports them through
:mod:`config`, the public face; only the config modules import this one directly.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Literal

import coactive_token

from coactive_credd.core.errors import CreddError

DEFAULT_BASE_URL = "https://api.coactive.ai"
DEFAULT_SKEW = 30.0
DEFAULT_REFRESH_FRACTION = 0.25
AUTH_KINDS = ("personal_token", "client_credentials")
Auth = Literal["personal_token", "client_credentials"]


class ConfigError(CreddError):
    """The config file or a value in it is wrong; the message says where and how to fix it."""


def check_profile_name(name: str) -> str:
    """Return ``name`` if it is a valid profile name, else raise ``ValueError``.

    The rule is the client's (:func:`coactive_token.check_profile_name`), so a name the
    daemon accepts is one every shim can send."""
    return coactive_token.check_profile_name(name)


@dataclass(frozen=True)
class ProfileConfig:
    name: str
    base_url: str = DEFAULT_BASE_URL
    auth: Auth = "personal_token"
    ca_bundle: str | None = None
    proxy: str | None = None  # None: from the environment (see :mod:`proxy`)
    credential_created: datetime.date | None = None  # personal tokens: see :mod:`credage`
    # Containers and long-running programs (see :mod:`containers`):
    client_id: str | None = None  # with credential_file and client_credentials
    credential_file: str | None = None  # the secret is read from here, not from the vault
    token_file: str | None = None  # the current token is kept here
    token_file_mode: int = 0o600
    # The secret comes from this program's first line of output (no shell), not the vault.
    credential_command: tuple[str, ...] | None = None


@dataclass(frozen=True)
class DaemonConfig:
    skew: float = DEFAULT_SKEW
    refresh_fraction: float = DEFAULT_REFRESH_FRACTION
    # Auto-lock for passphrase vaults (gpg-agent's default-cache-ttl / max-cache-ttl); 0 = off.
    lock_after_idle: float = 0.0
    lock_after_unlock: float = 0.0
    allowed_uids: frozenset[int] = frozenset()  # pass the peer check besides the daemon's uid


@dataclass(frozen=True)
class Config:
    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    profiles: dict[str, ProfileConfig] = field(default_factory=dict)
