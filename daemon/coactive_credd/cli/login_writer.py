"""Where ``login`` and ``logout`` write: the vault here, or through the running daemon when
only it holds the unlocked key (``POST /v1/admin/credentials``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from coactive_credd.cli.common import (
    EXIT_LOCKED,
    PROBE_TIMEOUT,
    CommandError,
    admin,
    error_line,
    open_vault,
)

if TYPE_CHECKING:
    from coactive_credd.core.paths import Paths
    from coactive_credd.vault import CachedToken, Vault


class Writer:
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


def open_writer(paths: Paths) -> Writer:
    """How this command gets at the vault; asks the passphrase first when it must."""
    from coactive_credd.core import fsutil

    for d in paths.private_dirs:
        fsutil.ensure_private_dir(d)
    vault = open_vault(paths)
    # A locked Secret Service is no passphrase to ask for: writing says what to unlock.
    if not vault.locked or vault.key_source != "passphrase":
        return Writer(paths, vault, via_daemon=False)
    if _daemon_unlocked(paths):
        return Writer(paths, vault, via_daemon=True)
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
    return Writer(paths, vault, via_daemon=False)


def _daemon_unlocked(paths: Paths) -> bool:
    import coactive_token

    try:
        with coactive_token.Client(
            str(paths.socket), timeout=PROBE_TIMEOUT, autostart=False
        ) as client:
            return client.status().get("locked") is False
    except coactive_token.CredddError:
        return False
