"""``login`` and ``logout``: the commands that write credentials into the vault.

A login for a profile that exists keeps its ``base_url``, ``ca_bundle`` and client id unless
new ones are given, so the re-login a hint asks for never moves the profile.

Who writes the vault: this process when it can open the vault (a key file, or a passphrase
asked on the terminal); otherwise, with a passphrase vault, the running daemon that holds the
unlocked key does it on this command's behalf (``POST /v1/admin/credentials``), so scripts
log in and out without a terminal and without the passphrase in argv or the environment.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from typing import TYPE_CHECKING, Any

from coactive_credd.cli.common import (
    EXIT_LOCKED,
    EXIT_REJECTED,
    EXIT_UNAVAILABLE,
    EXIT_UNKNOWN_PROFILE,
    EXIT_USAGE,
    PROBE_TIMEOUT,
    CommandError,
    admin,
    error_line,
    guard_secret_holder,
    notify_daemon,
    open_vault,
    profile_name,
    progress,
    resolve_paths,
)

if TYPE_CHECKING:
    from coactive_credd.core.config import ProfileConfig
    from coactive_credd.core.paths import Paths
    from coactive_credd.vault import CachedToken, Vault


def read_secret(prompt: str, from_stdin: bool, flag: str) -> str:
    """One credential: a line of stdin, or typed on the terminal without echo."""
    if from_stdin:
        secret = sys.stdin.readline().rstrip("\r\n")
    elif sys.stdin.isatty():
        import getpass

        secret = getpass.getpass(prompt)
    else:
        raise CommandError(
            f"no credential given and standard input is not a terminal; pipe it in: "
            f'`echo "$SECRET" | coactive-credd login {flag}`',
            EXIT_USAGE,
        )
    secret = secret.strip()
    if not secret:
        raise CommandError(
            f"the credential is empty; pass the personal token or client secret "
            f"(`coactive-credd login {flag}`)",
            EXIT_USAGE,
        )
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in secret):
        raise CommandError(
            f"the credential contains spaces or control characters; check what you pasted "
            f"and run `coactive-credd login {flag}` again",
            EXIT_USAGE,
        )
    return secret


class _Writer:
    """Writes the vault here, or through the running daemon when only it holds the key."""

    def __init__(self, paths: Paths, vault: Vault, via_daemon: bool) -> None:
        self.paths, self.vault, self.via_daemon = paths, vault, via_daemon

    def client_id(self, name: str) -> str | None:
        """The client id stored for profile ``name`` (None if none)."""
        if self.via_daemon:
            import coactive_token

            try:
                with coactive_token.Client(
                    str(self.paths.socket), timeout=PROBE_TIMEOUT, autostart=False
                ) as client:
                    st = client.status()
            except coactive_token.CredddError:
                return None
            for p in st.get("profiles", []):
                if p.get("name") == name and isinstance(p.get("client_id"), str):
                    return str(p["client_id"])
            return None
        sec = self.vault.load().profiles.get(name)
        return sec.client_id if sec else None

    def put(
        self, name: str, secret: str, client_id: str | None, cached: CachedToken | None
    ) -> None:
        if self.via_daemon:
            token = None
            if cached is not None:
                token = {
                    "access_token": cached.access_token,
                    "token_type": cached.token_type,
                    "expires_at": cached.expires_at,
                    "obtained_at": cached.obtained_at,
                }
            body = {"profile": name, "secret": secret, "client_id": client_id, "token": token}
            self._daemon("/v1/admin/credentials", body)
            return
        from coactive_credd.vault import ProfileSecrets, VaultData

        def put(data: VaultData) -> None:
            data.profiles[name] = ProfileSecrets(secret=secret, client_id=client_id, token=cached)

        self.vault.update(put)

    def remove(self, names: list[str]) -> list[str]:
        """Drop these profiles' secrets; answers the names that had any."""
        if self.via_daemon:
            answer = self._daemon("/v1/admin/credentials/remove", {"profiles": names})
            return [str(n) for n in answer.get("removed", [])]
        from coactive_credd.vault import VaultData

        removed: list[str] = []

        def drop(data: VaultData) -> None:
            removed.extend(n for n in names if data.profiles.pop(n, None) is not None)

        self.vault.update(drop)
        return removed

    def _daemon(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        status, answer = admin(self.paths, path, body)
        if status == 423:
            raise CommandError(f"{error_line(answer)}", EXIT_LOCKED)
        if status != 200:
            raise CommandError(error_line(answer))
        return answer


def open_writer(paths: Paths) -> _Writer:
    """How this command gets at the vault; asks the passphrase first when it must."""
    from coactive_credd.core import fsutil

    for d in paths.private_dirs:
        fsutil.ensure_private_dir(d)
    vault = open_vault(paths)
    if not vault.locked:
        return _Writer(paths, vault, via_daemon=False)
    if _daemon_unlocked(paths):
        return _Writer(paths, vault, via_daemon=True)
    from coactive_credd.cli.vault import has_terminal, read_passphrase
    from coactive_credd.vault import WrongPassphrase

    if not has_terminal():
        raise CommandError(
            "the vault is protected by a passphrase, no unlocked daemon holds it and there is "
            "no terminal to ask on; run `coactive-credd unlock` with the daemon running, "
            "then this command again",
            EXIT_LOCKED,
        )
    try:
        vault.unlock(read_passphrase("Vault passphrase: ", False))
    except WrongPassphrase as exc:
        raise CommandError(str(exc), EXIT_LOCKED) from None
    return _Writer(paths, vault, via_daemon=False)


def _daemon_unlocked(paths: Paths) -> bool:
    import coactive_token

    try:
        with coactive_token.Client(
            str(paths.socket), timeout=PROBE_TIMEOUT, autostart=False
        ) as client:
            return client.status().get("locked") is False
    except coactive_token.CredddError:
        return False


def _auth_for(
    args: argparse.Namespace, old: ProfileConfig | None, writer: _Writer, name: str
) -> tuple[str, str | None]:
    """(auth, client id): what the flags say, else what the profile already has."""
    if args.client_id is not None:
        if not args.client_id.strip():
            raise CommandError("--client-id is empty; give the system client's id", EXIT_USAGE)
        return "client_credentials", args.client_id.strip()
    if args.personal_token_stdin:
        return "personal_token", None
    if old is not None and old.auth == "client_credentials":
        client_id = writer.client_id(name)
        if client_id:
            return "client_credentials", client_id
        raise CommandError(
            f"profile {name!r} uses system credentials but no client id is stored; run "
            f"`coactive-credd login --profile {name} --client-id ID --client-secret-stdin`",
            EXIT_USAGE,
        )
    if args.client_secret_stdin:
        raise CommandError(
            f"--client-secret-stdin needs the client id: "
            f"`coactive-credd login --profile {name} --client-id ID --client-secret-stdin`",
            EXIT_USAGE,
        )
    return "personal_token", None


def _created(args: argparse.Namespace, auth: str) -> datetime.date | None:
    """The ``--created`` day, checked; None when not given."""
    from coactive_credd.core import credage

    if args.created is None:
        return None
    if auth != "personal_token":
        raise CommandError(
            "--created is for personal tokens; system credentials do not expire", EXIT_USAGE
        )
    try:
        return credage.parse_created(args.created, time.time())
    except ValueError as exc:
        raise CommandError(str(exc), EXIT_USAGE) from None


def _with_proxy(args: argparse.Namespace, pc: ProfileConfig) -> tuple[ProfileConfig, str | None]:
    """The profile with ``--proxy`` applied (else its proxy as it was), and the proxy URL the
    verifying exchange goes through (None: direct)."""
    import dataclasses

    from coactive_credd.core import config
    from coactive_credd.core import proxy_choice as proxy

    if args.proxy is not None:
        try:
            setting = config.parse_proxy(args.proxy, "--proxy")
        except config.ConfigError as exc:
            raise CommandError(str(exc), EXIT_USAGE) from None
        pc = dataclasses.replace(pc, proxy=setting)
    try:
        return pc, proxy.choose(pc.base_url, pc.proxy).url
    except ValueError as exc:
        raise CommandError(f"{exc}; fix or unset it", EXIT_USAGE) from None


def _same_secret(writer: _Writer, name: str, secret: str) -> bool:
    """Whether ``secret`` is already the profile's (so its recorded day stays). Unknown (False)
    when only the running daemon holds the vault's key."""
    if writer.via_daemon:
        return False
    sec = writer.vault.load().profiles.get(name)
    return sec is not None and sec.secret == secret


def cmd_login(args: argparse.Namespace) -> int:
    from coactive_credd.core import config, credage, fsutil
    from coactive_credd.upstream import exchange as upstream

    name = profile_name(args)
    paths = resolve_paths()
    guard_secret_holder(paths)  # before the credential (or passphrase) is read
    old = config.load(paths.config_file).profiles.get(name)
    try:
        base_url = upstream.validate_base_url(
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
    auth, client_id = _auth_for(args, old, writer, name)
    created = _created(args, auth)
    if auth == "client_credentials":
        secret = read_secret("Client secret: ", args.client_secret_stdin, "--client-secret-stdin")
    else:
        secret = read_secret(
            "Personal token: ", args.personal_token_stdin, "--personal-token-stdin"
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
    pc, route = _with_proxy(args, pc)
    same_secret = _same_secret(writer, name, secret)
    cached = None if args.no_verify else _verify(pc, secret, client_id, name, route)
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


def _start_tail() -> str:
    import coactive_token

    manager = coactive_token.installed_service()
    if manager == "systemd":
        return "start the daemon with `systemctl --user start coactive-credd.socket`"
    if manager == "launchd":
        return "start the daemon with `launchctl kickstart gui/$(id -u)/ai.coactive.credd`"
    return "start the daemon with `coactive-credd serve` (clients also start it when needed)"


def _verify(
    pc: ProfileConfig, secret: str, client_id: str | None, name: str, route: str | None
) -> CachedToken:
    """One exchange with Coactive; the token it gives is kept, so the daemon needs no login."""
    import asyncio

    from coactive_credd.upstream import exchange as upstream
    from coactive_credd.vault import CachedToken

    cred = upstream.Credential(auth=pc.auth, secret=secret, client_id=client_id)

    async def verify() -> upstream.Grant:
        up = upstream.Upstream()
        try:
            return await up.login(pc.base_url, cred, ca_bundle=pc.ca_bundle, proxy=route)
        finally:
            await up.close()

    progress(f"verifying the credentials with {pc.base_url}")
    sent_at = time.time()
    flag = "--client-secret-stdin" if pc.auth == "client_credentials" else "--personal-token-stdin"
    try:
        grant = asyncio.run(verify())
    except upstream.CredentialsRejected as exc:
        raise CommandError(
            f"Coactive rejected these credentials ({exc.detail}); nothing was saved; check them "
            f"and run `coactive-credd login --profile {name} {flag}` again",
            EXIT_REJECTED,
        ) from None
    except upstream.UpstreamError as exc:
        raise CommandError(
            f"could not verify the credentials: {exc.detail}; nothing was saved; retry, "
            f"or add --no-verify to save them unchecked",
            EXIT_UNAVAILABLE,
        ) from None
    return CachedToken(grant.access_token, grant.token_type, sent_at + grant.expires_in, sent_at)


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


def _vault_names(writer: _Writer) -> list[str]:
    if writer.via_daemon:
        return []  # the daemon's profiles are the config's
    return list(writer.vault.load().profiles)
