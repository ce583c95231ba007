"""doctor's checks of the files: the folders and files and their modes, the config, the
vault (opened as serve opens it), its key source, and each personal token's age.

Each check appends :class:`~coactive_credd.cli.doctor_net.Finding` s to ``found``; none
prints a secret.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from coactive_credd.cli.common import resolve_paths
from coactive_credd.cli.doctor_net import Finding

if TYPE_CHECKING:
    from coactive_credd.core.paths import Paths


_WRITABLE_FIX = "set COACTIVE_CREDD_HOME to a writable folder of yours (or remount it read-write)"


def _unwritable(folder: Path) -> str | None:
    """Why serve could not write in ``folder`` (its lock, socket, vault), or None: tried for
    real, with a file made and removed at once, since a read-only mount passes every mode
    check."""
    import errno
    import tempfile

    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".doctor-"):
            pass
    except OSError as exc:
        if exc.errno == errno.EROFS:
            return "it is on a read-only file system: serve can write no lock, socket or vault"
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return f"no room to write there ({exc.strerror}): free some space (`df -h {folder}`)"
        return f"cannot write there ({exc.strerror})"
    return None


def check_files(found: list[Finding]) -> None:
    from coactive_credd.core import config, fsutil

    paths = resolve_paths()
    folders = list(dict.fromkeys([*paths.private_dirs, paths.socket.parent]))
    for folder in folders:
        try:
            fsutil.check_private_dir(folder)
        except FileNotFoundError:
            found.append(
                Finding("files", "note", f"{folder} does not exist yet", "coactive-credd login")
            )
            continue
        except fsutil.InsecurePathError as exc:
            found.append(Finding("files", "problem", f"{folder}: {exc.problem}", exc.fix))
            continue
        problem = _unwritable(folder)
        if problem:
            found.append(Finding("files", "problem", f"{folder}: {problem}", _WRITABLE_FIX))
            continue
        found.append(Finding("files", "ok", f"{folder} is private (0700, yours)"))
    for f in (paths.config_file, paths.vault_file, paths.key_file):
        try:
            fsutil.check_private_file(f)
        except FileNotFoundError:
            if f == paths.vault_file:
                found.append(
                    Finding(
                        "files",
                        "note",
                        f"no vault at {f}: no credentials stored yet",
                        "coactive-credd login",
                    )
                )
            continue
        except fsutil.InsecurePathError as exc:
            found.append(Finding("files", "problem", f"{f}: {exc.problem}", exc.fix))
            continue
        found.append(Finding("files", "ok", f"{f} is private (0600, yours)"))
    try:
        config.load(paths.config_file)
    except config.ConfigError as exc:
        found.append(Finding("config", "problem", str(exc), f"edit {paths.config_file}"))
    _vault(found, paths)


def _vault(found: list[Finding], paths: Paths) -> None:
    """Open the vault as serve does: one it cannot decrypt (a wrong or missing key, a damaged
    file) is a problem here too, with the vault's own fix, never "no problems found"."""
    import re

    from coactive_credd.cli.common import open_vault
    from coactive_credd.vault import VaultError, VaultLocked

    if not paths.vault_file.exists():
        return
    try:
        vault = open_vault(paths)
        if vault.locked:
            found.append(Finding("vault", "ok", "the vault is protected by a passphrase"))
            return
        vault.load()
    except VaultLocked:
        found.append(Finding("vault", "ok", "the vault is protected by a passphrase"))
        return
    except OSError as exc:
        found.append(
            Finding("vault", "problem", f"the daemon cannot open the vault: {exc}", _WRITABLE_FIX)
        )
        return
    except VaultError as exc:
        message = " ".join(str(exc).split())
        fix = re.findall(r"`([^`]+)`", message)
        found.append(
            Finding(
                "vault",
                "problem",
                f"the daemon cannot open the vault: {message}",
                " && ".join(fix)
                or f"coactive-credd login  # after moving {paths.vault_file} aside",
            )
        )
        return
    found.append(
        Finding("vault", "ok", f"{paths.vault_file} opens with its key ({vault.key_source})")
    )


def check_key_source(found: list[Finding]) -> None:
    """Name the vault's key source (from its header: no secret is read); for the Secret
    Service, check that it answers and that the vault's item is there and unlocked."""
    from coactive_credd.core import fsutil
    from coactive_credd.vault import SOURCE_NAMES, SOURCE_SECRET_SERVICE, Vault, VaultError

    paths = resolve_paths()
    vault = Vault(paths.vault_file, paths.key_file, paths.lock_file)
    try:
        header = vault.header()
    except (VaultError, fsutil.InsecurePathError, OSError):
        return  # the files check reports it
    if header is None:
        return
    name = SOURCE_NAMES[header.source]
    if header.source != SOURCE_SECRET_SERVICE:
        found.append(Finding("vault key", "ok", f"the vault's key source is {name}"))
        return
    try:
        state = vault.secret_service.state(header.params)
    except VaultError as exc:
        found.append(
            Finding("vault key", "problem", f"the vault's key source is secret-service: {exc}")
        )
        return
    if state == "missing":
        found.append(
            Finding(
                "vault key",
                "problem",
                f"the vault's key source is secret-service, but its item is not in the Secret "
                f"Service (application=coactive-credd key-id={header.params.hex()})",
                "restore the login keyring, or set the vault aside and `coactive-credd login`",
            )
        )
    elif state == "locked":
        found.append(
            Finding(
                "vault key",
                "problem",
                "the vault's key source is secret-service, and its collection is locked",
                "unlock the login keyring (log in to the desktop); the daemon serves again by itself",
            )
        )
    else:
        found.append(
            Finding(
                "vault key",
                "ok",
                "the vault's key source is secret-service: it answers and holds the vault's item",
            )
        )


def check_credential_age(found: list[Finding]) -> None:
    """Personal tokens near or past Coactive's 3-month limit (from config.toml: works without
    the daemon). A note from 14 days before; a problem once past."""
    from coactive_credd.core import config, credage

    try:
        profiles = config.load(resolve_paths().config_file).profiles.values()
    except config.ConfigError:
        return
    now = time.time()
    for p in profiles:
        left = credage.days_left(p, now)
        if left is None:
            continue
        text = credage.warning(p, now)
        if text is None:
            found.append(
                Finding(
                    "credential",
                    "ok",
                    f"profile {p.name}: personal token good for {int(left)} more days",
                )
            )
        else:
            message, _, fix = text.partition("; ")
            found.append(Finding("credential", "problem" if left <= 0 else "note", message, fix))
