"""Writing ``config.toml``: :func:`render` a whole file, or :func:`edit` the user's file line
by line so their comments and spelling stay (``login`` and ``logout`` write through
:func:`config.update`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from coactive_credd.core.config_check import Lines, parse
from coactive_credd.core.config_types import Config, ConfigError, DaemonConfig


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
    lines = Lines.scan(text, "")
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
    lines = Lines.scan(text, "")
    rows = text.splitlines(keepends=True)
    if rows and not rows[-1].endswith("\n"):
        rows[-1] += "\n"
    edits = _plan(lines, rows, before, after)
    if edits is None:
        return render(new)
    result = edits.apply(rows)
    try:
        if parse(result) == new:
            return result
    except ConfigError:
        pass
    return render(new)  # the edits did not say what was meant: say it whole


@dataclass
class _Edits:
    """What :func:`edit` changes in the user's file, by row index (0-based)."""

    replace_at: dict[int, str | None] = field(default_factory=dict)  # new text (None: remove)
    inserts: dict[int, list[str]] = field(default_factory=dict)  # insert before this row index
    appended: list[str] = field(default_factory=list)  # new tables, at the end of the file

    def apply(self, rows: list[str]) -> str:
        out: list[str] = []
        for i, row in enumerate(rows):
            out += self.inserts.get(i, [])
            new_row = self.replace_at.get(i, row)
            if new_row is not None:
                out.append(new_row)
        out += self.inserts.get(len(rows), [])
        return "".join(out).rstrip("\n") + "\n" + "".join(self.appended)


_Tables = dict[tuple[str, ...], dict[str, str]]  # as :func:`_table_lines` gives them


def _plan(lines: Lines, rows: list[str], before: _Tables, after: _Tables) -> _Edits | None:
    """The edits that turn ``rows`` (saying ``before``) into ``after``; None when the file is
    laid out in a way they cannot follow."""
    spans: dict[tuple[str, ...], tuple[int, int]] = {}  # table -> (header index, end index)
    for i, (table, n) in enumerate(lines.tables):
        end = lines.tables[i + 1][1] - 1 if i + 1 < len(lines.tables) else len(rows)
        spans[table] = (n - 1, end)
    edits = _Edits()
    for table in dict.fromkeys([*before, *after]):
        old_kv, new_kv = before.get(table, {}), after.get(table, {})
        if old_kv == new_kv:
            continue
        if table not in spans:
            if table in before:  # written some other way (inline, dotted): render whole
                return None
            edits.appended += ["\n", f"{_header(table)}\n", *(v + "\n" for v in new_kv.values())]
            continue
        start, end = spans[table]
        if table not in after:
            for i in range(start, end):
                edits.replace_at[i] = None
            continue
        if not _plan_keys(edits, lines, rows, table, spans[table], old_kv, new_kv):
            return None
    return edits


def _plan_keys(
    edits: _Edits,
    lines: Lines,
    rows: list[str],
    table: tuple[str, ...],
    span: tuple[int, int],
    old_kv: dict[str, str],
    new_kv: dict[str, str],
) -> bool:
    """Add to ``edits`` the key lines that change in one table the file keeps; False when a
    key to change or remove is not on a line of its own (inline, dotted)."""
    start, end = span
    last = start  # the table's last key line
    for i in range(start + 1, end):
        if rows[i].strip() and not rows[i].lstrip().startswith("#"):
            last = i
    for key in dict.fromkeys([*old_kv, *new_kv]):
        if old_kv.get(key) == new_kv.get(key):
            continue
        at = lines.at.get((*table, key))
        if at is None and key in old_kv:
            return False
        if at is None:
            edits.inserts.setdefault(last + 1, []).append(new_kv[key] + "\n")
            continue
        row = rows[at - 1]
        if key in new_kv:
            edits.replace_at[at - 1] = row[: len(row) - len(row.lstrip())] + new_kv[key] + "\n"
        else:
            edits.replace_at[at - 1] = None
    return True


def _header(table: tuple[str, ...]) -> str:
    if table[0] == "profiles" and len(table) == 2:
        return f"[profiles.{json.dumps(table[1])}]"
    return "[" + ".".join(table) + "]"
