"""The vault's key commands: ``lock``, ``unlock`` and ``rekey``.

``lock`` and ``unlock`` act on the running daemon (it is the one holding decrypted
credentials); ``rekey`` rewrites the vault file under the new key and then brings a running
daemon along, so it keeps serving without a restart.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from coactive_credd.cli.common import (
    EXIT_LOCKED,
    EXIT_USAGE,
    CommandError,
    error_line,
    guard_secret_holder,
    notify_daemon,
    open_vault,
    resolve_paths,
)

if TYPE_CHECKING:
    from coactive_credd.vault import Vault


def has_terminal() -> bool:
    """Whether a terminal is there to ask a passphrase on (even with stdin piped)."""
    try:
        with open("/dev/tty"):
            return True
    except OSError:
        return False


def read_passphrase(prompt: str, from_stdin: bool, *, confirm: bool = False) -> str:
    """A passphrase from one line of stdin, or prompted without echo on the terminal."""
    if from_stdin:
        passphrase = sys.stdin.readline().rstrip("\r\n")
    elif sys.stdin.isatty() or has_terminal():
        import getpass

        try:
            passphrase = getpass.getpass(prompt)
            again = getpass.getpass("Again: ") if confirm else passphrase
        except EOFError:  # Ctrl-D at the prompt
            print(file=sys.stderr)  # the prompt's line ends here, not in the message
            raise CommandError(
                "no passphrase given (end of input); nothing was changed; type it at the "
                "prompt, or pipe it in with --passphrase-stdin",
                EXIT_USAGE,
            ) from None
        if again != passphrase:
            raise CommandError("the two passphrases differ; nothing was changed", EXIT_USAGE)
    else:
        raise CommandError(
            "no passphrase given and standard input is not a terminal; pipe it in with --passphrase-stdin",
            EXIT_USAGE,
        )
    if not passphrase:
        raise CommandError("the passphrase is empty; nothing was changed", EXIT_USAGE)
    return passphrase


def unlock_for_cli(vault: Vault, from_stdin: bool) -> None:
    """Open a passphrase vault in this process (for login, logout, rekey)."""
    from coactive_credd.vault import WrongPassphrase

    if not vault.locked or vault.key_source != "passphrase":
        return  # a locked Secret Service: reading the vault says what to unlock
    if not from_stdin and not has_terminal():
        raise CommandError(
            "the vault is protected by a passphrase and there is no terminal to ask for it; "
            "run this command on a terminal",
            EXIT_LOCKED,
        )
    try:
        vault.unlock(read_passphrase("Vault passphrase: ", from_stdin))
    except WrongPassphrase as exc:
        raise CommandError(str(exc), EXIT_LOCKED) from None


def _admin(path: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    from coactive_credd.cli.common import admin

    return admin(resolve_paths(), path, body)


def cmd_lock(args: argparse.Namespace) -> int:
    status, answer = _admin("/v1/admin/lock")
    if status != 200:
        raise CommandError(error_line(answer))
    print(
        "vault locked: the daemon dropped every credential and token; `coactive-credd unlock` to resume",
        file=sys.stderr,
    )
    return 0


def cmd_unlock(args: argparse.Namespace) -> int:
    guard_secret_holder(resolve_paths())  # before the passphrase is read
    passphrase = read_passphrase("Vault passphrase: ", args.passphrase_stdin)
    status, answer = _admin("/v1/admin/unlock", {"passphrase": passphrase})
    if status == 401:
        raise CommandError(error_line(answer), EXIT_LOCKED)
    if status != 200:
        raise CommandError(error_line(answer))
    print(f"vault unlocked: {answer.get('profiles', 0)} profile(s) served", file=sys.stderr)
    return 0


def cmd_rekey(args: argparse.Namespace) -> int:
    import coactive_token

    from coactive_credd.core import fsutil

    paths = resolve_paths()
    guard_secret_holder(paths)  # the new passphrase goes to the daemon: no impostor
    for d in paths.private_dirs:
        fsutil.ensure_private_dir(d)
    vault = open_vault(paths)
    if not vault.exists():
        raise CommandError("there is no vault yet; `coactive-credd login` creates one", EXIT_USAGE)
    # With a passphrase vault the current passphrase comes first (first line of stdin).
    unlock_for_cli(vault, from_stdin=not sys.stdin.isatty())
    new: str | None = None
    if args.keychain:
        if sys.platform != "darwin":
            raise CommandError(
                "--keychain keeps the key in the macOS login Keychain; on this system use --secret-service, --passphrase-stdin or --key-file",
                EXIT_USAGE,
            )
        vault.rekey_to_keychain()
        what = "a key in the login Keychain"
    elif args.secret_service:
        vault.rekey_to_secret_service()
        what = "a key in the Secret Service (login keyring); the key file is removed"
    elif args.systemd_credential:
        vault.rekey_to_systemd_credential()
        what = "the systemd credential coactive-credd.key"
    elif not args.key_file:
        new = read_passphrase("New passphrase: ", args.passphrase_stdin, confirm=True)
        vault.rekey_to_passphrase(new)
        what = "a passphrase"
    else:
        vault.rekey_to_key_file()
        what = f"the key file {paths.key_file}"
    running = notify_daemon(paths)
    if running and new is not None:
        # The daemon's key is the old one: hand it the new passphrase so it keeps serving.
        try:
            _admin("/v1/admin/unlock", {"passphrase": new})
        except coactive_token.CredddError:
            running = False
    tail = "; the running daemon follows" if running else ""
    print(f"vault re-encrypted under {what}{tail}", file=sys.stderr)
    return 0


def add_commands(add: Any) -> None:
    """Register lock, unlock and rekey on the main parser (``add`` is cli's helper)."""
    add("lock", cmd_lock, "make the daemon forget the vault key, credentials and tokens now")
    p = add("unlock", cmd_unlock, "give the daemon the vault passphrase (prompted without echo)")
    p.add_argument(
        "--passphrase-stdin", action="store_true", help="read the passphrase from one line of stdin"
    )
    p = add(
        "rekey",
        cmd_rekey,
        "re-encrypt the vault under a new key: a key file, a passphrase, the Secret Service, the Keychain or a systemd credential",
    )
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument(
        "--passphrase-stdin",
        action="store_true",
        help="protect it with a passphrase read from stdin (a passphrase vault's current one on the line before)",
    )
    g.add_argument(
        "--passphrase",
        action="store_true",
        help="protect it with a passphrase, prompted on the terminal",
    )
    g.add_argument(
        "--key-file", action="store_true", help="back to a random key file (the default)"
    )
    g.add_argument(
        "--keychain", action="store_true", help="macOS: keep the key in the login Keychain"
    )
    g.add_argument(
        "--secret-service",
        action="store_true",
        help="Linux desktops: keep the key in the Secret Service (GNOME Keyring, KWallet, KeePassXC); removes the key file",
    )
    g.add_argument(
        "--systemd-credential",
        action="store_true",
        help="use the systemd credential coactive-credd.key this process was given ($CREDENTIALS_DIRECTORY)",
    )
