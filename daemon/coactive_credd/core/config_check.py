"""Reading ``config.toml`` strictly: :func:`parse` checks the file whole.

An unknown section or key, or a value of the wrong type, is a :class:`ConfigError` naming the
file, the line (:class:`Lines`, a map of where each table and key is) and the closest known
name, so a typo is an error, never a silent default.
"""

from __future__ import annotations

import datetime
import functools
import json
import math
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from coactive_credd.core import proxy_choice as proxy
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

# Every key the file may hold, per table: the one list an unknown name is checked against.
DAEMON_KEYS = ("skew", "refresh_fraction", "lock_after_idle", "lock_after_unlock", "allowed_uids")
PROFILE_KEYS = (
    "base_url",
    "auth",
    "ca_bundle",
    "proxy",
    "credential_created",
    "client_id",
    "credential_file",
    "credential_command",
    "token_file",
    "token_file_mode",
)
SECTIONS = ("daemon", "profiles")


_KEY = r"""(?:"(?:[^"\\]|\\.)*"|'[^']*'|[A-Za-z0-9_-]+)"""


def key_parts(text: str) -> tuple[str, ...]:
    """``profiles."my prod"`` as ``("profiles", "my prod")``."""
    import re

    parts = []
    for m in re.finditer(_KEY, text):
        word = m.group(0)
        parts.append(json.loads(word) if word[0] == '"' else word.strip("'"))
    return tuple(parts)


@dataclass
class Lines:
    """Where each table header and key is in the file (1-based lines), for messages and for
    :func:`config_edit.edit`'s edits. Read by line, not by a TOML parser: keys inside a
    multi-line string could mislead it, so only messages and edits use it, never values."""

    source: str
    at: dict[tuple[str, ...], int]  # table path, or table path + key -> line
    tables: list[tuple[tuple[str, ...], int]]  # (table path, header line) in file order

    @classmethod
    def scan(cls, text: str, source: str) -> Lines:
        import re

        header = re.compile(rf"^\s*\[\s*({_KEY}(?:\s*\.\s*{_KEY})*)\s*\]\s*(?:#.*)?$")
        key = re.compile(rf"^\s*({_KEY}(?:\s*\.\s*{_KEY})*)\s*=")
        at: dict[tuple[str, ...], int] = {}
        tables: list[tuple[tuple[str, ...], int]] = []
        table: tuple[str, ...] = ()
        for n, line in enumerate(text.splitlines(), 1):
            if m := header.match(line):
                table = key_parts(m.group(1))
                at.setdefault(table, n)
                tables.append((table, n))
            elif m := key.match(line):
                at.setdefault(table + key_parts(m.group(1)), n)
        return cls(source, at, tables)

    def where(self, *path: str) -> str:
        """``file:LINE [table]`` for a table or a key in it (the nearest line known)."""
        for i in range(len(path), 0, -1):
            if path[:i] in self.at:
                at = f"{self.source}:{self.at[path[:i]]}"
                break
        else:
            at = self.source
        is_table = any(t == path for t, _ in self.tables)
        table = path if is_table or len(path) == 1 else path[:-1]
        shown = ".".join(
            json.dumps(p) if not p.replace("_", "").replace("-", "").isalnum() else p for p in table
        )
        return f"{at} [{shown}]" if shown else at


def _unknown(lines: Lines, path: tuple[str, ...], known: tuple[str, ...], what: str) -> ConfigError:
    import difflib

    close = difflib.get_close_matches(path[-1], known, n=1, cutoff=0.6)
    hint = f"did you mean `{close[0]}`?" if close else f"known: {', '.join(known)}"
    return ConfigError(
        f"{lines.where(*path)}: unknown {what} `{path[-1]}` ({hint}); edit {lines.source}"
    )


def _check_names(raw: dict[str, Any], lines: Lines) -> None:
    """Every section and key is one this version reads: a typo is an error, never a default."""
    for section in raw:
        if section not in SECTIONS:
            raise _unknown(lines, (section,), SECTIONS, "section")
    d = raw.get("daemon")
    if isinstance(d, dict):
        for k in d:
            if k not in DAEMON_KEYS:
                raise _unknown(lines, ("daemon", k), DAEMON_KEYS, "key")
    ptable = raw.get("profiles")
    if isinstance(ptable, dict):
        for name, p in ptable.items():
            if isinstance(p, dict):
                for k in p:
                    if k not in PROFILE_KEYS:
                        raise _unknown(lines, ("profiles", name, k), PROFILE_KEYS, "key")


def _number(
    table: dict[str, Any], key: str, default: float, lo: float, hi: float, where: str
) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{where}: {key} must be a number, got {value!r}")
    if not lo <= value <= hi:
        raise ConfigError(f"{where}: {key} must be between {lo:g} and {hi:g}, got {value!r}")
    return float(value)


def _string(p: dict[str, Any], key: str, where: str, default: str | None = None) -> str | None:
    value = p.get(key, default)
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"{where}: {key} must be a string in quotes, got {value!r}")
    return value


def _command(value: object, where: str) -> tuple[str, ...] | None:
    """credential_command: a program and its arguments, run without a shell."""
    if value is None:
        return None
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(w, str) and w and "\0" not in w for w in value)
    ):
        raise ConfigError(
            f'{where}: credential_command must be a list of strings, like ["pass", "show", "coactive/token"], got {value!r}'
        )
    return tuple(value)


def parse(text: str, source: str = "config.toml") -> Config:
    """Parse and validate the config text; errors name ``source``, the line, the offending
    key and, for an unknown name, the closest known one."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source} is not valid TOML ({exc}); fix or remove the file") from exc
    try:
        return _parse(raw, Lines.scan(text, source))
    except ConfigError as exc:
        if f"edit {source}" in str(exc):
            raise
        raise ConfigError(f"{exc}; edit {source}") from None


def _parse(raw: dict[str, Any], lines: Lines) -> Config:
    _check_names(raw, lines)
    d = raw.get("daemon", {})
    if not isinstance(d, dict):
        raise ConfigError(f"{lines.where('daemon')}: daemon must be a table ([daemon])")

    def dw(key: str) -> str:
        return lines.where("daemon", key)

    daemon = DaemonConfig(
        skew=_number(d, "skew", DEFAULT_SKEW, 0, 3600, dw("skew")),
        refresh_fraction=_number(
            d, "refresh_fraction", DEFAULT_REFRESH_FRACTION, 0.05, 0.9, dw("refresh_fraction")
        ),
        lock_after_idle=_number(d, "lock_after_idle", 0, 0, 10**7, dw("lock_after_idle")),
        lock_after_unlock=_number(d, "lock_after_unlock", 0, 0, 10**7, dw("lock_after_unlock")),
        allowed_uids=_uids(d, dw("allowed_uids")),
    )
    profiles: dict[str, ProfileConfig] = {}
    ptable = raw.get("profiles", {})
    if not isinstance(ptable, dict):
        raise ConfigError(
            f"{lines.where('profiles')}: profiles must be a table of [profiles.NAME] tables"
        )
    for name, p in ptable.items():
        where = lines.where("profiles", name)
        try:
            check_profile_name(name)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from exc
        if not isinstance(p, dict):
            raise ConfigError(f"{where} must be a table")
        profiles[name] = _profile(name, p, functools.partial(lines.where, "profiles", name))
    return Config(daemon=daemon, profiles=profiles)


def _profile(name: str, p: dict[str, Any], at: Callable[[str], str]) -> ProfileConfig:
    auth = p.get("auth", "personal_token")
    if auth not in AUTH_KINDS:
        raise ConfigError(
            f"{at('auth')}: auth must be one of {', '.join(AUTH_KINDS)}, got {auth!r}"
        )
    base_url = _string(p, "base_url", at("base_url"), DEFAULT_BASE_URL) or DEFAULT_BASE_URL
    pc = ProfileConfig(
        name=name,
        base_url=base_url.rstrip("/"),
        auth=cast(Auth, auth),
        ca_bundle=_string(p, "ca_bundle", at("ca_bundle")),
        proxy=parse_proxy(p.get("proxy"), at("proxy")),
        credential_created=_date(p.get("credential_created"), at("credential_created")),
        credential_command=_command(p.get("credential_command"), at("credential_command")),
        **_container_keys(p, cast(Auth, auth), at),
    )
    if pc.credential_command and pc.credential_file:
        raise ConfigError(
            f"{at('credential_command')}: credential_command and credential_file both give "
            f"the credential; keep one"
        )
    if pc.credential_command and pc.auth == "client_credentials" and pc.client_id is None:
        raise ConfigError(
            f"{at('credential_command')}: a client_credentials profile with "
            f'credential_command needs client_id = "..."'
        )
    return pc


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


def _container_keys(p: dict[str, Any], auth: Auth, at: Callable[[str], str]) -> dict[str, Any]:
    """credential_file, client_id, token_file and token_file_mode of a profile table."""
    out: dict[str, Any] = {}
    for key in ("credential_file", "token_file"):
        value = p.get(key)
        if value is None:
            continue
        where = at(key)
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
    where = at("client_id")
    if client_id is not None:
        if not isinstance(client_id, str) or not client_id or any(c in client_id for c in ":\r\n"):
            raise ConfigError(f"{where}: client_id must be a non-empty string without ':'")
        out["client_id"] = client_id
    where = at("credential_file")
    if "credential_file" in out and auth == "client_credentials" and client_id is None:
        raise ConfigError(
            f'{where}: a client_credentials profile with credential_file needs client_id = "..."'
        )
    where = at("token_file_mode")
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
