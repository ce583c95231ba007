"""Profiles and daemon settings, read from ``config.toml``.

Precedence: command-line flags > environment (``COACTIVE_*``, see :mod:`paths`) > the file >
the defaults below. The file holds nothing secret; secrets live in the vault.

::

    [daemon]
    skew = 30               # a token is served only while now < expires_at - skew
    refresh_fraction = 0.25 # refresh when this share of the token's lifetime is left

    [profiles.default]
    base_url = "https://api.coactive.ai"
    auth = "personal_token"          # or "client_credentials"
    # ca_bundle = "/etc/ssl/corp.pem"  # for TLS-inspecting proxies
    # proxy = "http://proxy.corp:3128" # wins over HTTPS_PROXY/NO_PROXY; "direct" for none
    # credential_created = 2026-09-01  # when the personal token was made (`login --created`)
    # credential_file = "/var/run/secrets/coactive/secret"  # instead of the vault (containers)
    # client_id = "..."                # with credential_file, for client credentials
    # token_file = "/var/run/coactive/token"  # the daemon keeps the current token here
    # token_file_mode = "0640"         # default 0600
    # credential_command = ["pass", "show", "coactive/token"]  # the secret from a program

Checked whole (:func:`parse`): an unknown section or key, or a value of the wrong type, is a
:class:`ConfigError` naming the file, the line and the closest known name. :func:`update`
rewrites only the lines whose values change, so the user's comments and spelling stay.

Containers: ``[daemon] allowed_uids = [1001]`` lets those uids use the socket too; see
docs/KUBERNETES.md and :mod:`containers`.

This module is the public face: import every config name from here. Behind it,
:mod:`config_types` holds the records and their defaults, :mod:`config_check` the strict
reading, :mod:`config_edit` the rendering and line-preserving edits.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from coactive_credd.core import fsutil, safeopen
from coactive_credd.core.config_check import (
    DAEMON_KEYS,
    PROFILE_KEYS,
    SECTIONS,
    parse,
    parse_proxy,
)
from coactive_credd.core.config_edit import edit, render
from coactive_credd.core.config_types import (
    AUTH_KINDS,
    DEFAULT_BASE_URL,
    DEFAULT_REFRESH_FRACTION,
    DEFAULT_SKEW,
    Auth,
    Config,
    ConfigError,
    DaemonConfig,
    ProfileConfig,
    check_profile_name,
)

__all__ = [
    "AUTH_KINDS",
    "DAEMON_KEYS",
    "DEFAULT_BASE_URL",
    "DEFAULT_REFRESH_FRACTION",
    "DEFAULT_SKEW",
    "PROFILE_KEYS",
    "SECTIONS",
    "Auth",
    "Config",
    "ConfigError",
    "DaemonConfig",
    "ProfileConfig",
    "check_profile_name",
    "edit",
    "load",
    "login_command",
    "parse",
    "parse_proxy",
    "reauth_fix",
    "render",
    "update",
    "with_profile",
    "without_profile",
]


def login_command(
    name: str, auth: str, client_id: str | None, base_url: str | None = None, *, stdin: bool = False
) -> str:
    """The command that logs profile ``name`` in again, as it is: the same profile, the same
    client id, and its ``--base-url`` when not the default, so following a hint never sends
    the credential anywhere else (even when the profile is not saved yet). ``stdin``: the
    personal token from standard input rather than a prompt."""
    import shlex

    where = ""
    if base_url and base_url.rstrip("/") != DEFAULT_BASE_URL:
        where = f" --base-url {shlex.quote(base_url.rstrip('/'))}"
    if auth == "client_credentials":
        cid = shlex.quote(client_id) if client_id else "ID"
        return (
            f"coactive-credd login --profile {name}{where} --client-id {cid} --client-secret-stdin"
        )
    return f"coactive-credd login --profile {name}{where}" + (
        " --personal-token-stdin" if stdin else ""
    )


def reauth_fix(
    name: str, auth: str, client_id: str | None, base_url: str | None, *, stdin: bool = False
) -> str:
    """What to do when Coactive refuses a profile's credential. A personal token dies after 3
    months, or 30 days unused, and logging in with it again fails again: say to make a new
    one first. System credentials: log in again (:func:`login_command`)."""
    cmd = login_command(name, auth, client_id, base_url, stdin=stdin)
    if auth == "personal_token":
        return (
            "generate a new personal token (Coactive > Settings > Credentials; one stops working "
            f"after 3 months, or 30 days unused), then run `{cmd}`"
        )
    return f"run `{cmd}`"


def load(path: Path) -> Config:
    """Load the config file; a missing file is an empty config.

    The file decides where credentials are sent, so it is read only if nobody else could
    have written it (:func:`fsutil.check_safe_file`: not a symlink, owned by the user or
    root, not group/other-writable, in safe folders); otherwise ConfigError names the path
    and the command that fixes it."""
    try:
        fd = fsutil.open_nofollow(path, os.O_RDONLY)
    except FileNotFoundError:
        return Config()
    except fsutil.InsecurePathError as exc:
        # Only a mounted ConfigMap (the kubelet's layout: the file in a `..<timestamp>`
        # folder that `..data` points to) is read through symlinks, each hop checked.
        if not path.is_symlink() or not Path(os.path.realpath(path)).parent.name.startswith(".."):
            raise ConfigError(str(exc).replace(" private ", " safe ", 1)) from None
        try:
            fd = safeopen.open_checked(os.path.abspath(path), "config")
        except safeopen.SafeOpenError as bad:
            raise ConfigError(str(bad)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "rb") as f:
            fsutil.check_safe_file(path, os.fstat(f.fileno()))
            text = f.read().decode("utf-8")
    except fsutil.InsecurePathError as exc:
        raise ConfigError(str(exc)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    return parse(text, str(path))


def update(path: Path, fn: Callable[[Config], Config]) -> Config:
    """Read-modify-write the config file atomically, changing only the lines whose values
    change (:func:`edit`). Callers hold the config lock (``config.lock`` beside it), so
    temporaries a killed writer left can be removed."""
    fsutil.ensure_private_dir(path.parent)
    fsutil.remove_stale_temps(path)
    old = load(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = ""
    new = fn(old)
    fsutil.atomic_write(path, edit(text, old, new).encode(), mode=0o600)
    return new


def with_profile(cfg: Config, profile: ProfileConfig) -> Config:
    return replace(cfg, profiles={**cfg.profiles, profile.name: profile})


def without_profile(cfg: Config, name: str) -> Config:
    return replace(cfg, profiles={k: v for k, v in cfg.profiles.items() if k != name})
