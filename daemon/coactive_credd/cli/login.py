"""``login`` and ``logout``: the commands that write credentials into the vault.

A login for a profile that exists keeps its ``base_url``, ``ca_bundle`` and client id unless
new ones are given, so the re-login a hint asks for never moves the profile.

Who writes the vault: this process when it can open the vault (a key file, or a passphrase
asked on the terminal); otherwise, with a passphrase vault, the running daemon that holds the
unlocked key does it on this command's behalf (``POST /v1/admin/credentials``), so scripts
log in and out without a terminal and without the passphrase in argv or the environment.

The steps live beside: :mod:`login_input` (the credential read, its kind, ``--created``),
:mod:`login_writer` (the vault, here or through the daemon), :mod:`login_verify` (the one
exchange that checks it); this module puts the profile in the config and the secret in the
vault.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from typing import TYPE_CHECKING

from coactive_credd.cli.common import (
    EXIT_UNKNOWN_PROFILE,
    EXIT_USAGE,
    CommandError,
    guard_secret_holder,
    notify_daemon,
    profile_name,
    progress,
    resolve_paths,
)
from coactive_credd.cli.login_input import auth_for, created_day, read_secret
from coactive_credd.cli.login_verify import verify, with_proxy
from coactive_credd.cli.login_writer import Writer, open_writer

if TYPE_CHECKING:
    from coactive_credd.core.config import ProfileConfig


def _same_secret(writer: Writer, name: str, secret: str) -> bool:
    """Whether ``secret`` is already the profile's (so its recorded day stays). Unknown (False)
    when only the running daemon holds the vault's key."""
    if writer.via_daemon:
        return False
    sec = writer.vault.load().profiles.get(name)
    return sec is not None and sec.secret == secret


def cmd_login(args: argparse.Namespace) -> int:
    from coactive_credd.core import config, credage, fsutil

    # Not upstream.exchange: that loads aiohttp, which only the verifying exchange needs.
    from coactive_credd.upstream.credential import validate_base_url

    name = profile_name(args)
    paths = resolve_paths()
    guard_secret_holder(paths)  # before the credential (or passphrase) is read
    old = config.load(paths.config_file).profiles.get(name)
    try:
        base_url = validate_base_url(
            args.base_url or (old.base_url if old else config.DEFAULT_BASE_URL)
        )
    except ValueError as exc:
        raise CommandError(
            f"{exc}; run `coactive-credd login --profile {name} --base-url https://HOST`",
            EXIT_USAGE,
        ) from None
    ca_bundle = args.ca_bundle or (old.ca_bundle if old else None)
    if ca_bundle is not None:
        ca_bundle = os.path.abspath(os.path.expanduser(ca_bundle))
        if not os.path.isfile(ca_bundle):
            raise CommandError(
                f"--ca-bundle {ca_bundle}: no such file; give the PEM file of your proxy's CA",
                EXIT_USAGE,
            )
    # The passphrase (when one is needed) before anything slow: a wrong one fails fast.
    writer = open_writer(paths)
    auth, client_id = auth_for(args, old, writer, name)
    created = created_day(args, auth)
    if getattr(args, "credential_command", None) is not None:
        return _login_command(args, name, old, writer, base_url, ca_bundle, auth, client_id)
    again = config.login_command(name, auth, None, base_url).split(" --client-id")[0]
    if auth == "client_credentials":
        again += f" --client-id {shlex.quote(client_id or 'ID')}"
        secret = read_secret(
            "Client secret: ", args.client_secret_stdin, "--client-secret-stdin", again
        )
    else:
        secret = read_secret(
            "Personal token: ", args.personal_token_stdin, "--personal-token-stdin", again
        )
    pc = config.ProfileConfig(
        name=name,
        base_url=base_url,
        auth="client_credentials" if auth == "client_credentials" else "personal_token",
        ca_bundle=ca_bundle,
    )
    if old is not None:  # keys this command does not set stay as they were
        import dataclasses

        pc = dataclasses.replace(old, base_url=pc.base_url, auth=pc.auth, ca_bundle=ca_bundle)
    pc, route = with_proxy(args, pc)
    same_secret = _same_secret(writer, name, secret)
    cached = None if args.no_verify else verify(pc, secret, client_id, name, route)
    writer.put(name, secret, client_id, cached)
    pc = credage.stamp(pc, old, same_secret=same_secret, created=created, now=time.time())
    with fsutil.locked(paths.config_file.with_name("config.lock")):
        config.update(paths.config_file, lambda c: config.with_profile(c, pc))
    running = notify_daemon(paths)
    kind = "personal token" if auth == "personal_token" else f"client id {client_id}"
    checked = "verified" if cached else "saved without verifying"
    tail = "the running daemon picked it up" if running else _start_tail()
    print(f"profile {name!r} ({kind}) at {base_url}: {checked}; {tail}", file=sys.stderr)
    return 0


def _login_command(
    args: argparse.Namespace,
    name: str,
    old: ProfileConfig | None,
    writer: Writer,
    base_url: str,
    ca_bundle: str | None,
    auth: str,
    client_id: str | None,
) -> int:
    """``login --credential-command CMD``: the profile's credential comes from CMD (split like
    a shell, kept in the config as a list); CMD runs once here and its credential is checked
    with one exchange (unless --no-verify). Nothing of the credential is written."""
    import dataclasses
    import shlex

    from coactive_credd.core import config, fsutil
    from coactive_credd.vault import credcommand

    paths = writer.paths
    if args.personal_token_stdin or args.client_secret_stdin:
        raise CommandError(
            "--credential-command gives the credential; leave out --personal-token-stdin and "
            "--client-secret-stdin",
            EXIT_USAGE,
        )
    try:
        argv = tuple(shlex.split(args.credential_command))
    except ValueError as exc:
        raise CommandError(
            f"--credential-command cannot be split like a shell command ({exc}); quote it as "
            f"you would in sh, e.g. --credential-command 'pass show coactive/token'",
            EXIT_USAGE,
        ) from None
    if not argv:
        raise CommandError(
            "--credential-command is empty; e.g. --credential-command 'pass show coactive/token'",
            EXIT_USAGE,
        )
    system = auth == "client_credentials"
    base = old or config.ProfileConfig(name=name)
    pc = dataclasses.replace(
        base,
        base_url=base_url,
        auth="client_credentials" if system else "personal_token",
        ca_bundle=ca_bundle,
        client_id=client_id if system else None,
        credential_file=None,
        credential_command=argv,
    )
    pc, route = with_proxy(args, pc)
    checked, cached = "saved without verifying", None
    if not args.no_verify:
        progress(f"running `{credcommand.describe(argv)}`")
        try:
            secret = credcommand.run(argv)
        except credcommand.CommandFailed as exc:
            raise CommandError(f"{exc}; nothing was saved; fix it and log in again") from None
        cached = verify(pc, secret, client_id, name, route)
        checked = "verified"
    with fsutil.locked(paths.config_file.with_name("config.lock")):
        config.update(paths.config_file, lambda c: config.with_profile(c, pc))
    # A credential stored before is no longer the profile's: the vault keeps only its token
    # (the daemon keeps later ones there too). Through the daemon, only the removal.
    if not writer.via_daemon:
        writer.put(name, credcommand.NO_SECRET, client_id, cached)
    elif writer.vault.exists():
        writer.remove([name])
    running = notify_daemon(paths)
    tail = "the running daemon picked it up" if running else _start_tail()
    print(
        f"profile {name!r} at {base_url}: credential from `{credcommand.describe(argv)}`, "
        f"{checked}; {tail}",
        file=sys.stderr,
    )
    return 0


def _start_tail() -> str:
    import coactive_token

    manager = coactive_token.installed_service()
    if manager == "systemd":
        return "start the daemon with `systemctl --user start coactive-credd.socket`"
    if manager == "launchd":
        return "start the daemon with `launchctl kickstart gui/$(id -u)/ai.coactive.credd`"
    return "start the daemon with `coactive-credd serve` (clients also start it when needed)"


def cmd_logout(args: argparse.Namespace) -> int:
    from coactive_credd.core import config, fsutil

    paths = resolve_paths()
    guard_secret_holder(paths)  # it may read the passphrase and opens the vault
    configured = config.load(paths.config_file).profiles
    names = sorted(configured) if args.all else [profile_name(args)]
    writer = open_writer(paths)
    if args.all:
        # Secrets of profiles no longer in the config go too.
        names = sorted(set(names) | set(_vault_names(writer)))
    removed = writer.remove(names)
    known = [n for n in names if n in configured or n in removed]
    if not known:
        if args.all:
            print("no profiles to log out of", file=sys.stderr)
            return 0
        raise CommandError(
            f"no profile named {names[0]!r}; `coactive-credd status` lists them",
            EXIT_UNKNOWN_PROFILE,
        )
    with fsutil.locked(paths.config_file.with_name("config.lock")):

        def drop(c: config.Config) -> config.Config:
            for n in known:
                c = config.without_profile(c, n)
            return c

        config.update(paths.config_file, drop)
    notify_daemon(paths)
    for n in known:
        print(f"profile {n!r}: credentials and cached token removed", file=sys.stderr)
    return 0


def _vault_names(writer: Writer) -> list[str]:
    if writer.via_daemon:
        return []  # the daemon's profiles are the config's
    return list(writer.vault.load().profiles)
