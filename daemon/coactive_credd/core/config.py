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
"""

from __future__ import annotations

import datetime
import functools
import json
import math
import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, cast

import coactive_token

from coactive_credd.core import fsutil, safeopen
from coactive_credd.core import proxy_choice as proxy
from coactive_credd.core.errors import CreddError

DEFAULT_BASE_URL = "https://api.coactive.ai"
DEFAULT_SKEW = 30.0
DEFAULT_REFRESH_FRACTION = 0.25
AUTH_KINDS = ("personal_token", "client_credentials")
Auth = Literal["personal_token", "client_credentials"]


class ConfigError(CreddError):
    """The config file or a value in it is wrong; the message says where and how to fix it."""


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


def check_profile_name(name: str) -> str:
    """Return ``name`` if it is a valid profile name, else raise ``ValueError``.

    The rule is the client's (:func:`coactive_token.check_profile_name`), so a name the
    daemon accepts is one every shim can send."""
    return coactive_token.check_profile_name(name)


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


_KEY = r"""(?:"(?:[^"\\]|\\.)*"|'[^']*'|[A-Za-z0-9_-]+)"""


def _key_parts(text: str) -> tuple[str, ...]:
    """``profiles."my prod"`` as ``("profiles", "my prod")``."""
    import re

    parts = []
    for m in re.finditer(_KEY, text):
        word = m.group(0)
        parts.append(json.loads(word) if word[0] == '"' else word.strip("'"))
    return tuple(parts)


@dataclass
class _Lines:
    """Where each table header and key is in the file (1-based lines), for messages and for
    :func:`update`'s edits. Read by line, not by a TOML parser: keys inside a multi-line
    string could mislead it, so only messages and edits use it, never values."""

    source: str
    at: dict[tuple[str, ...], int]  # table path, or table path + key -> line
    tables: list[tuple[tuple[str, ...], int]]  # (table path, header line) in file order

    @classmethod
    def scan(cls, text: str, source: str) -> _Lines:
        import re

        header = re.compile(rf"^\s*\[\s*({_KEY}(?:\s*\.\s*{_KEY})*)\s*\]\s*(?:#.*)?$")
        key = re.compile(rf"^\s*({_KEY}(?:\s*\.\s*{_KEY})*)\s*=")
        at: dict[tuple[str, ...], int] = {}
        tables: list[tuple[tuple[str, ...], int]] = []
        table: tuple[str, ...] = ()
        for n, line in enumerate(text.splitlines(), 1):
            if m := header.match(line):
                table = _key_parts(m.group(1))
                at.setdefault(table, n)
                tables.append((table, n))
            elif m := key.match(line):
                at.setdefault(table + _key_parts(m.group(1)), n)
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


def _unknown(
    lines: _Lines, path: tuple[str, ...], known: tuple[str, ...], what: str
) -> ConfigError:
    import difflib

    close = difflib.get_close_matches(path[-1], known, n=1, cutoff=0.6)
    hint = f"did you mean `{close[0]}`?" if close else f"known: {', '.join(known)}"
    return ConfigError(
        f"{lines.where(*path)}: unknown {what} `{path[-1]}` ({hint}); edit {lines.source}"
    )


def _check_names(raw: dict[str, Any], lines: _Lines) -> None:
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
        return _parse(raw, _Lines.scan(text, source))
    except ConfigError as exc:
        if f"edit {source}" in str(exc):
            raise
        raise ConfigError(f"{exc}; edit {source}") from None


def _parse(raw: dict[str, Any], lines: _Lines) -> Config:
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
        if p.credential_command is not None:
            words = ", ".join(json.dumps(w) for w in p.credential_command)
            lines.append(f"credential_command = [{words}]")
    return "\n".join(lines) + "\n"


def _table_lines(cfg: Config) -> dict[tuple[str, ...], dict[str, str]]:
    """Each table :func:`render` writes, as ``{table path: {key: "key = value"}}``."""
    out: dict[tuple[str, ...], dict[str, str]] = {}
    text = render(cfg)
    lines = _Lines.scan(text, "")
    rows = text.splitlines()
    for path, n in lines.at.items():
        if len(path) >= 2 and path[:-1] in {t for t, _ in lines.tables}:
            out.setdefault(path[:-1], {})[path[-1]] = rows[n - 1]
    for table, _ in lines.tables:
        out.setdefault(table, {})
    return out


def edit(text: str, old: Config, new: Config) -> str:
    """``text`` (which parses as ``old``) changed to say ``new``, line by line: a key whose
    value changes is rewritten in place, a new one goes at the end of its table, a new table
    at the end of the file, a removed profile's table goes; every other line (comments,
    ``45`` rather than ``45.0``, the order) stays as the user wrote it. When the file is laid
    out in a way these edits cannot follow (inline tables, dotted keys), the whole file is
    rendered afresh, as before."""
    if not text.strip():
        return render(new)
    before, after = _table_lines(old), _table_lines(new)
    lines = _Lines.scan(text, "")
    rows = text.splitlines(keepends=True)
    if rows and not rows[-1].endswith("\n"):
        rows[-1] += "\n"
    spans: dict[tuple[str, ...], tuple[int, int]] = {}  # table -> (header index, end index)
    for i, (table, n) in enumerate(lines.tables):
        end = lines.tables[i + 1][1] - 1 if i + 1 < len(lines.tables) else len(rows)
        spans[table] = (n - 1, end)
    replace_at: dict[int, str | None] = {}  # row index -> new text (None: remove)
    inserts: dict[int, list[str]] = {}  # insert before this row index
    appended: list[str] = []
    for table in dict.fromkeys([*before, *after]):
        old_kv, new_kv = before.get(table, {}), after.get(table, {})
        if old_kv == new_kv:
            continue
        if table not in spans:
            if table in before:  # written some other way (inline, dotted): render whole
                return render(new)
            appended += ["\n", f"{_header(table)}\n", *(v + "\n" for v in new_kv.values())]
            continue
        start, end = spans[table]
        if table not in after:
            for i in range(start, end):
                replace_at[i] = None
            continue
        last = start  # the table's last key line
        for i in range(start + 1, end):
            if rows[i].strip() and not rows[i].lstrip().startswith("#"):
                last = i
        for key in dict.fromkeys([*old_kv, *new_kv]):
            if old_kv.get(key) == new_kv.get(key):
                continue
            at = lines.at.get((*table, key))
            if at is None and key in old_kv:
                return render(new)
            if at is None:
                inserts.setdefault(last + 1, []).append(new_kv[key] + "\n")
                continue
            row = rows[at - 1]
            if key in new_kv:
                replace_at[at - 1] = row[: len(row) - len(row.lstrip())] + new_kv[key] + "\n"
            else:
                replace_at[at - 1] = None
    out: list[str] = []
    for i, row in enumerate(rows):
        out += inserts.get(i, [])
        new_row = replace_at.get(i, row)
        if new_row is not None:
            out.append(new_row)
    out += inserts.get(len(rows), [])
    result = "".join(out).rstrip("\n") + "\n" + "".join(appended)
    try:
        if parse(result) == new:
            return result
    except ConfigError:
        pass
    return render(new)  # the edits did not say what was meant: say it whole


def _header(table: tuple[str, ...]) -> str:
    if table[0] == "profiles" and len(table) == 2:
        return f"[profiles.{json.dumps(table[1])}]"
    return "[" + ".".join(table) + "]"


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
