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

Containers: ``[daemon] allowed_uids = [1001]`` lets those uids use the socket too; see
docs/KUBERNETES.md and :mod:`containers`.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, cast

import coactive_token
from coactive_credd.core import fsutil
from coactive_credd.core import proxy_choice as proxy

DEFAULT_BASE_URL = "https://api.coactive.ai"
DEFAULT_SKEW = 30.0
DEFAULT_REFRESH_FRACTION = 0.25
AUTH_KINDS = ("personal_token", "client_credentials")
Auth = Literal["personal_token", "client_credentials"]


class ConfigError(Exception):
    """The config file or a value in it is wrong; the message says where and how to fix it."""


def check_profile_name(name: str) -> str:
    """Return ``name`` if it is a valid profile name, else raise ``ValueError``.

    The rule is the client's (:func:`coactive_token.check_profile_name`), so a name the
    daemon accepts is one every shim can send."""
    return coactive_token.check_profile_name(name)


def login_command(name: str, auth: str, client_id: str | None) -> str:
    """The command that logs profile ``name`` in again, as it is (same id; base URL kept)."""
    import shlex

    if auth == "client_credentials":
        cid = shlex.quote(client_id) if client_id else "ID"
        return f"coactive-credd login --profile {name} --client-id {cid} --client-secret-stdin"
    return f"coactive-credd login --profile {name}"


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


def _number(
    table: dict[str, Any], key: str, default: float, lo: float, hi: float, where: str
) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{where}: {key} must be a number, got {value!r}")
    if not lo <= value <= hi:
        raise ConfigError(f"{where}: {key} must be between {lo:g} and {hi:g}, got {value!r}")
    return float(value)


def parse(text: str, source: str = "config.toml") -> Config:
    """Parse and validate the config text; errors name ``source`` and the offending key."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source} is not valid TOML ({exc}); fix or remove the file") from exc
    d = raw.get("daemon", {})
    if not isinstance(d, dict):
        raise ConfigError(f"{source}: [daemon] must be a table")
    daemon = DaemonConfig(
        skew=_number(d, "skew", DEFAULT_SKEW, 0, 3600, f"{source} [daemon]"),
        refresh_fraction=_number(
            d, "refresh_fraction", DEFAULT_REFRESH_FRACTION, 0.05, 0.9, f"{source} [daemon]"
        ),
        lock_after_idle=_number(d, "lock_after_idle", 0, 0, 10**7, f"{source} [daemon]"),
        lock_after_unlock=_number(d, "lock_after_unlock", 0, 0, 10**7, f"{source} [daemon]"),
        allowed_uids=_uids(d, f"{source} [daemon]"),
    )
    profiles: dict[str, ProfileConfig] = {}
    ptable = raw.get("profiles", {})
    if not isinstance(ptable, dict):
        raise ConfigError(f"{source}: [profiles] must be a table of [profiles.NAME] tables")
    for name, p in ptable.items():
        where = f"{source} [profiles.{name}]"
        try:
            check_profile_name(name)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from exc
        if not isinstance(p, dict):
            raise ConfigError(f"{where} must be a table")
        auth = p.get("auth", "personal_token")
        if auth not in AUTH_KINDS:
            raise ConfigError(f"{where}: auth must be one of {', '.join(AUTH_KINDS)}, got {auth!r}")
        base_url = p.get("base_url", DEFAULT_BASE_URL)
        ca_bundle = p.get("ca_bundle")
        if not isinstance(base_url, str) or (
            ca_bundle is not None and not isinstance(ca_bundle, str)
        ):
            raise ConfigError(f"{where}: base_url and ca_bundle must be strings")
        profiles[name] = ProfileConfig(
            name=name,
            base_url=base_url.rstrip("/"),
            auth=cast(Auth, auth),
            ca_bundle=ca_bundle,
            proxy=parse_proxy(p.get("proxy"), where),
            credential_created=_date(p.get("credential_created"), where),
            **_container_keys(p, cast(Auth, auth), where),
        )
    return Config(daemon=daemon, profiles=profiles)


def parse_proxy(value: object, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(f'{where}: proxy must be a string like "http://proxy.corp:3128"')
    if value.strip().lower() in proxy.DIRECT_WORDS:
        return "direct"
    try:
        return proxy.check_proxy_url(value)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _date(value: object, where: str) -> datetime.date | None:
    if value is None or (
        isinstance(value, datetime.date) and not isinstance(value, datetime.datetime)
    ):
        return value
    if isinstance(value, str):
        try:
            return datetime.date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise ConfigError(f"{where}: credential_created must be a date like 2026-09-01")


def _uids(table: dict[str, Any], where: str) -> frozenset[int]:
    uids = table.get("allowed_uids", [])
    if not isinstance(uids, list) or not all(
        isinstance(u, int) and not isinstance(u, bool) and 0 <= u < 2**32 - 1 for u in uids
    ):
        raise ConfigError(f"{where}: allowed_uids must be a list of numeric uids, e.g. [1001]")
    return frozenset(uids)


def _container_keys(p: dict[str, Any], auth: Auth, where: str) -> dict[str, Any]:
    """credential_file, client_id, token_file and token_file_mode of a profile table."""
    out: dict[str, Any] = {}
    for key in ("credential_file", "token_file"):
        value = p.get(key)
        if value is None:
            continue
        absolute = isinstance(value, str) and (
            value.startswith("/")
            or (key == "credential_file" and value.startswith("$CREDENTIALS_DIRECTORY/"))
        )
        if not isinstance(value, str) or not absolute or "\0" in value:
            raise ConfigError(
                f"{where}: {key} must be an absolute path"
                + (" or $CREDENTIALS_DIRECTORY/NAME" if key == "credential_file" else "")
                + f", got {value!r}"
            )
        out[key] = value
    client_id = p.get("client_id")
    if client_id is not None:
        if not isinstance(client_id, str) or not client_id or any(c in client_id for c in ":\r\n"):
            raise ConfigError(f"{where}: client_id must be a non-empty string without ':'")
        out["client_id"] = client_id
    if "credential_file" in out and auth == "client_credentials" and client_id is None:
        raise ConfigError(
            f'{where}: a client_credentials profile with credential_file needs client_id = "..."'
        )
    raw = p.get("token_file_mode", "0600")
    try:
        mode = int(raw, 8) if isinstance(raw, str) else raw
    except ValueError:
        mode = None
    # The daemon writes the file; others may at most read it.
    if not isinstance(mode, int) or isinstance(mode, bool) or mode & ~0o644 or not mode & 0o400:
        raise ConfigError(
            f'{where}: token_file_mode must be an octal string like "0600" or "0640" '
            f"(owner read and write, group/others read at most), got {raw!r}"
        )
    out["token_file_mode"] = mode
    return out


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
        raise ConfigError(str(exc).replace(" private ", " safe ", 1)) from None
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


def _toml_value(v: str | float | bool) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    return json.dumps(v)  # a JSON string is a valid TOML basic string


def render(cfg: Config) -> str:
    """Render ``cfg`` as TOML, leaving out values equal to their defaults."""
    lines = ["# coactive-credd configuration; `coactive-credd login` and `logout` rewrite it."]
    dd = DaemonConfig()
    d = [
        f"{k} = {_toml_value(getattr(cfg.daemon, k))}"
        for k in ("skew", "refresh_fraction", "lock_after_idle", "lock_after_unlock")
        if getattr(cfg.daemon, k) != getattr(dd, k)
    ]
    if cfg.daemon.allowed_uids:
        d.append(f"allowed_uids = [{', '.join(map(str, sorted(cfg.daemon.allowed_uids)))}]")
    if d:
        lines += ["", "[daemon]", *d]
    for name in sorted(cfg.profiles):
        p = cfg.profiles[name]
        lines += ["", f"[profiles.{json.dumps(name)}]", f"base_url = {_toml_value(p.base_url)}"]
        lines.append(f"auth = {_toml_value(p.auth)}")
        if p.ca_bundle:
            lines.append(f"ca_bundle = {_toml_value(p.ca_bundle)}")
        if p.proxy is not None:
            lines.append(f"proxy = {_toml_value(p.proxy)}")
        if p.credential_created is not None:
            lines.append(f"credential_created = {p.credential_created.isoformat()}")
        for key in ("client_id", "credential_file", "token_file"):
            if getattr(p, key):
                lines.append(f"{key} = {_toml_value(getattr(p, key))}")
        if p.token_file_mode != 0o600:
            lines.append(f'token_file_mode = "{p.token_file_mode:04o}"')
    return "\n".join(lines) + "\n"


def update(path: Path, fn: Callable[[Config], Config]) -> Config:
    """Read-modify-write the config file atomically. Callers hold the config lock
    (``config.lock`` beside it), so temporaries a killed writer left can be removed."""
    fsutil.ensure_private_dir(path.parent)
    fsutil.remove_stale_temps(path)
    new = fn(load(path))
    fsutil.atomic_write(path, render(new).encode(), mode=0o600)
    return new


def with_profile(cfg: Config, profile: ProfileConfig) -> Config:
    return replace(cfg, profiles={**cfg.profiles, profile.name: profile})


def without_profile(cfg: Config, name: str) -> Config:
    return replace(cfg, profiles={k: v for k, v in cfg.profiles.items() if k != name})
