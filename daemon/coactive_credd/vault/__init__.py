"""The encrypted vault: one file holding every profile's long-lived secret and cached token.

File format (all integers big-endian)::

    offset  size  field
    0       4     magic b"CCDV"
    4       1     format version (1)
    5       1     key source: 1 key file, 2 passphrase (scrypt), 3 systemd credential, 4 keychain
    6       2     length L of the key-source parameters
    8       L     key-source parameters (see below)
    8+L     12    random nonce, fresh on every write
    20+L    ...   AES-256-GCM ciphertext of compact JSON, then the 16-byte tag

The whole header (bytes 0 to 20+L) is the AEAD's associated data, so a changed version,
key source, parameter or nonce fails authentication like a changed ciphertext does.
Raw-key sources record an 8-byte key id (a hash of the key, useless for finding it) so the
right key is chosen after an interrupted rekey; the passphrase source records scrypt's
log2(n), r, p and its 16-byte salt.

Exceptions::

    VaultError                  every message names the file and the command that fixes it
    ├── VaultCorrupt            one opaque message for every decryption or format failure
    ├── VaultVersionError       written by a newer format version
    ├── VaultLocked             passphrase mode and no key in memory
    ├── VaultKeyMissing         the key the vault names is not available to this process
    ├── VaultInsecure           a vault, key, lock file or folder that is not private
    └── WrongPassphrase         unlock with a passphrase that does not open the vault
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
import struct
import subprocess
import time
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from coactive_credd.core import fsutil
from coactive_credd.vault.shield import ShieldedKey

MAGIC = b"CCDV"
FORMAT_VERSION = 1
KEY_SIZE = 32
NONCE_SIZE = 12
KEY_ID_SIZE = 8

SALT_SIZE = 16
# scrypt cost (log2 n, r, p): n = 2**17, r = 8, p = 1 is OWASP's recommended minimum and takes
# ~0.33 s and 128 MiB for one derivation on the reference machine (docs/SECURITY.md).
SCRYPT_COST = (17, 8, 1)
SYSTEMD_CREDENTIAL = "coactive-credd.key"
KEYCHAIN_SERVICE = "coactive-credd"

SOURCE_KEY_FILE = 1
SOURCE_PASSPHRASE = 2
SOURCE_SYSTEMD = 3
SOURCE_KEYCHAIN = 4
SOURCE_NAMES = {
    SOURCE_KEY_FILE: "key-file",
    SOURCE_PASSPHRASE: "passphrase",
    SOURCE_SYSTEMD: "systemd-credential",
    SOURCE_KEYCHAIN: "keychain",
}

_PREFIX = struct.Struct(">4sBBH")


# --- errors -----------------------------------------------------------------------------


class VaultError(Exception):
    """Root of every vault failure; the message names the file and the fix."""


class VaultCorrupt(VaultError):
    """The vault failed to decrypt or parse: tampered, truncated, foreign, or the wrong key."""

    def __init__(self, path: Path) -> None:
        self.path = path
        quoted = shlex.quote(str(path))
        super().__init__(
            f"{path} cannot be decrypted: it is damaged, was modified, is not a coactive-credd "
            f"vault, or its key is not the one it was written with. It was left untouched; "
            f"restore it from a backup, or set it aside (`mv {quoted} {quoted}.bad`) and run "
            f"`coactive-credd login` again"
        )


class VaultVersionError(VaultError):
    """The vault was written by a newer coactive-credd."""


class VaultLocked(VaultError):
    """The vault is protected by a passphrase and no key is in memory."""


class VaultKeyMissing(VaultError):
    """The key the vault was written with is not available to this process."""


class VaultInsecure(VaultError):
    """A vault, key or lock file (or its folder) has loose permissions, a foreign owner, or
    is a symlink. The message comes from :class:`fsutil.InsecurePathError`."""


class WrongPassphrase(VaultError):
    """The passphrase given to unlock does not open the vault."""


class _Undecryptable(Exception):
    """Internal: any decryption or format failure, turned into VaultCorrupt with the path."""


@contextlib.contextmanager
def _insecure_as_vault_error() -> Iterator[None]:
    try:
        yield
    except fsutil.InsecurePathError as exc:
        raise VaultInsecure(str(exc)) from exc


# --- data -------------------------------------------------------------------------------


@dataclass
class CachedToken:
    access_token: str = field(repr=False)
    token_type: str
    expires_at: float  # epoch seconds
    obtained_at: float  # epoch seconds


@dataclass(repr=False)
class ProfileSecrets:
    secret: str  # personal token or client secret
    client_id: str | None = None
    token: CachedToken | None = None

    def __repr__(self) -> str:
        return f"ProfileSecrets(secret=***, client_id={self.client_id!r}, token={self.token!r})"


@dataclass
class VaultData:
    profiles: dict[str, ProfileSecrets] = field(default_factory=dict)

    def to_json(self) -> bytes:
        doc: dict[str, Any] = {"profiles": {}}
        for name, prof in self.profiles.items():
            entry: dict[str, Any] = {"secret": prof.secret, "client_id": prof.client_id}
            if prof.token is not None:
                tok = prof.token
                entry["token"] = {
                    "access_token": tok.access_token,
                    "token_type": tok.token_type,
                    "expires_at": tok.expires_at,
                    "obtained_at": tok.obtained_at,
                }
            doc["profiles"][name] = entry
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    @classmethod
    def from_json(cls, raw: bytes) -> VaultData:
        """Parse; any shape error raises _Undecryptable (the caller reports it opaquely)."""
        try:
            doc = json.loads(raw.decode("utf-8"))
            profiles: dict[str, ProfileSecrets] = {}
            for name, entry in doc["profiles"].items():
                token = None
                if entry.get("token") is not None:
                    t = entry["token"]
                    token = CachedToken(
                        access_token=_str(t["access_token"]),
                        token_type=_str(t["token_type"]),
                        expires_at=float(t["expires_at"]),
                        obtained_at=float(t["obtained_at"]),
                    )
                client_id = entry.get("client_id")
                profiles[_str(name)] = ProfileSecrets(
                    secret=_str(entry["secret"]),
                    client_id=None if client_id is None else _str(client_id),
                    token=token,
                )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise _Undecryptable from exc
        return cls(profiles)


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError("expected a string")
    return value


# --- format -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Header:
    source: int
    params: bytes
    nonce: bytes

    def encode(self) -> bytes:
        prefix = _PREFIX.pack(MAGIC, FORMAT_VERSION, self.source, len(self.params))
        return prefix + self.params + self.nonce


def parse(blob: bytes, path: Path) -> tuple[Header, bytes, bytes]:
    """Split a vault file into (header, associated data, ciphertext with tag)."""
    if len(blob) < _PREFIX.size:
        raise _Undecryptable
    magic, version, source, plen = _PREFIX.unpack_from(blob)
    if magic != MAGIC:
        raise _Undecryptable
    if version > FORMAT_VERSION:
        raise VaultVersionError(
            f"{path} was written by a newer coactive-credd (vault format {version}; this "
            f"version reads format {FORMAT_VERSION}): upgrade with "
            f"`pip install --upgrade coactive-credd`"
        )
    if version != FORMAT_VERSION or source not in SOURCE_NAMES:
        raise _Undecryptable
    end = _PREFIX.size + plen + NONCE_SIZE
    if len(blob) < end + 16:
        raise _Undecryptable
    params = blob[_PREFIX.size : _PREFIX.size + plen]
    header = Header(source, params, blob[end - NONCE_SIZE : end])
    return header, blob[:end], blob[end:]


def seal(key: bytes, source: int, params: bytes, plaintext: bytes, nonce: bytes) -> bytes:
    """Encrypt `plaintext` into a complete vault file. `nonce` must be fresh random bytes."""
    aad = Header(source, params, nonce).encode()
    return aad + AESGCM(key).encrypt(nonce, plaintext, aad)


def unseal(key: bytes, aad: bytes, nonce: bytes, ciphertext: bytes) -> bytes:
    try:
        return AESGCM(key).decrypt(nonce, ciphertext, aad)
    except InvalidTag as exc:
        raise _Undecryptable from exc


def key_id(key: bytes) -> bytes:
    """A short public fingerprint naming a raw key without revealing anything about it."""
    return hashlib.sha256(b"coactive-credd vault key id\0" + key).digest()[:KEY_ID_SIZE]


# --- passphrase KDF -----------------------------------------------------------------


@dataclass(frozen=True)
class ScryptParams:
    """scrypt's cost parameters and salt, as recorded in a passphrase vault's header."""

    log2_n: int
    r: int
    p: int
    salt: bytes

    _LAYOUT = struct.Struct(">BBB")

    def encode(self) -> bytes:
        return self._LAYOUT.pack(self.log2_n, self.r, self.p) + self.salt

    @classmethod
    def decode(cls, raw: bytes) -> ScryptParams:
        """Parse header parameters, refusing costs no writer of ours would choose (a forged
        header must not make a reader allocate gigabytes)."""
        if len(raw) != cls._LAYOUT.size + SALT_SIZE:
            raise _Undecryptable
        log2_n, r, p = cls._LAYOUT.unpack_from(raw)
        if not (1 <= log2_n <= 20 and 1 <= r <= 32 and 1 <= p <= 16):
            raise _Undecryptable
        if 128 * r * (1 << log2_n) > 1 << 30:
            raise _Undecryptable
        return cls(log2_n, r, p, raw[cls._LAYOUT.size :])

    @classmethod
    def fresh(cls, cost: tuple[int, int, int] = SCRYPT_COST) -> ScryptParams:
        return cls(*cost, salt=os.urandom(SALT_SIZE))


def derive_key(passphrase: str, params: ScryptParams) -> bytes:
    """The vault key for `passphrase`. NFC-normalised first, so the same passphrase typed
    where the keyboard composes characters differently still opens the vault."""
    kdf = Scrypt(salt=params.salt, length=KEY_SIZE, n=1 << params.log2_n, r=params.r, p=params.p)
    return kdf.derive(unicodedata.normalize("NFC", passphrase).encode("utf-8"))


# --- macOS Keychain -------------------------------------------------------------------


class Keychain:
    """Vault keys kept as generic passwords in the user's login Keychain, through
    `/usr/bin/security`. The key goes to `security -i` on standard input, never in argv."""

    def __init__(self, command: Sequence[str] = ("/usr/bin/security",)) -> None:
        self.command = list(command)

    @staticmethod
    def account(kid: bytes) -> str:
        return f"vault-key-{kid.hex()}"

    def _run(self, args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                [*self.command, *args],
                input=stdin,
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise VaultKeyMissing(
                f"the macOS Keychain cannot be reached through {self.command[0]} "
                f"({type(exc).__name__}): run this on the Mac that holds the vault key, or "
                f"`coactive-credd rekey --key-file` there"
            ) from None

    def load(self, kid: bytes) -> bytes | None:
        """The key stored under `kid`, or None if the Keychain has no such item."""
        done = self._run(
            ["find-generic-password", "-s", KEYCHAIN_SERVICE, "-a", self.account(kid), "-w"]
        )
        if done.returncode == 44:  # errSecItemNotFound
            return None
        if done.returncode != 0:
            raise VaultKeyMissing(
                f"the Keychain refused to give the vault key (item {KEYCHAIN_SERVICE}/"
                f"{self.account(kid)}, security exit {done.returncode}): unlock the login "
                f"keychain (`security unlock-keychain`) and try again"
            )
        try:
            key = bytes.fromhex(done.stdout.strip())
        except ValueError:
            return None
        return key if len(key) == KEY_SIZE else None

    def store(self, kid: bytes, key: bytes) -> None:
        account = self.account(kid)
        line = (
            f"add-generic-password -U -s {KEYCHAIN_SERVICE} -a {account} "
            f"-l coactive-credd-vault-key -w {key.hex()}\n"
        )
        done = self._run(["-i"], stdin=line)
        # `security -i` reports a failed command on stderr but may still exit 0; check by
        # reading the item back.
        if done.returncode != 0 or self.load(kid) != key:
            raise VaultError(
                f"could not store the vault key in the Keychain (item {KEYCHAIN_SERVICE}/"
                f"{account}): unlock the login keychain (`security unlock-keychain`) and run "
                f"`coactive-credd rekey --keychain` again"
            )

    def delete(self, kid: bytes) -> None:
        self._run(["delete-generic-password", "-s", KEYCHAIN_SERVICE, "-a", self.account(kid)])


# --- the vault --------------------------------------------------------------------------


@dataclass
class _Opened:
    """What reading the current file gave: its data and how to write it back."""

    data: VaultData
    source: int
    params: bytes
    key: bytes


@dataclass
class _NewKey:
    """A key prepared by a rekey: written where it must be before the vault rename, and a
    `commit` to run after it."""

    source: int
    params: bytes
    key: bytes
    commit: Callable[[], None] = lambda: None


class Vault:
    """The vault file at `vault_path`, its default key at `key_path`, writers serialised
    by an flock on `lock_path`.

    The key a vault was written with is named by its header: the key file, a passphrase
    (derived with scrypt, kept in memory after :meth:`unlock` until :meth:`lock`), the
    systemd credential ``coactive-credd.key`` in ``$CREDENTIALS_DIRECTORY``, or a
    Keychain item. A new vault uses the systemd credential when the service was given one,
    the key file otherwise; the ``rekey_to_*`` methods move a vault from one to another.
    """

    def __init__(
        self,
        vault_path: Path,
        key_path: Path,
        lock_path: Path,
        *,
        credentials_dir: Path | None = None,
        keychain: Keychain | None = None,
        scrypt_cost: tuple[int, int, int] = SCRYPT_COST,
        wrong_passphrase_delay: float = 1.0,
    ) -> None:
        self.vault_path = vault_path
        self.key_path = key_path
        self.lock_path = lock_path
        if credentials_dir is None and os.environ.get("CREDENTIALS_DIRECTORY"):
            credentials_dir = Path(os.environ["CREDENTIALS_DIRECTORY"])
        self.credentials_dir = credentials_dir
        self.keychain = keychain if keychain is not None else Keychain()
        self.scrypt_cost = scrypt_cost
        self.wrong_passphrase_delay = wrong_passphrase_delay
        # The passphrase-derived key, shielded, with the header parameters it belongs to.
        self._unlocked: tuple[bytes, ShieldedKey] | None = None

    def __repr__(self) -> str:
        return f"Vault({str(self.vault_path)!r})"

    @property
    def _pending_key_path(self) -> Path:
        return self.key_path.with_name(self.key_path.name + ".new")

    def exists(self) -> bool:
        return os.path.lexists(self.vault_path)

    @property
    def key_source(self) -> str:
        """How the vault's key is held: "key-file", "passphrase", "systemd-credential" or
        "keychain" (for a vault not written yet, the source its first write will use)."""
        with _insecure_as_vault_error():
            parsed = self._read_header()
        if parsed is not None:
            return SOURCE_NAMES[parsed[0].source]
        return SOURCE_NAMES[SOURCE_SYSTEMD if self._systemd_key_path() else SOURCE_KEY_FILE]

    @property
    def locked(self) -> bool:
        """True when the vault is protected by a passphrase and this process has not
        unlocked it (or it was re-keyed since)."""
        with _insecure_as_vault_error():
            parsed = self._read_header()
        if parsed is None or parsed[0].source != SOURCE_PASSPHRASE:
            return False
        return self._unlocked is None or self._unlocked[0] != parsed[0].params

    def load(self) -> VaultData:
        """Read and decrypt the vault; an empty VaultData if there is none yet."""
        with _insecure_as_vault_error():
            if not self.exists():
                return VaultData()
            fsutil.check_private_dir(self.vault_path.parent)
            with fsutil.locked(self.lock_path, shared=True):
                opened = self._read(promote=False)
        return opened.data if opened is not None else VaultData()

    def update(self, fn: Callable[[VaultData], None]) -> VaultData:
        """Read the current vault under an exclusive lock, let `fn` change it, write it back
        atomically and return it. Two processes updating at once both keep their changes.
        Nothing is written if the current file cannot be opened."""
        with self._exclusive():
            opened = self._read(promote=True)
            if opened is None:
                data = VaultData()
                new = self._first_key()
                source, params, key = new.source, new.params, new.key
            else:
                data, source, params, key = opened.data, opened.source, opened.params, opened.key
            fn(data)
            self._write(key, source, params, data)
        return data

    # --- passphrase ---------------------------------------------------------------------

    def unlock(self, passphrase: str) -> VaultData:
        """Derive the key from `passphrase` (~0.3 s, 128 MiB), check it opens the vault,
        and keep it in memory (shielded) until :meth:`lock`. Returns the vault's content.

        Raises WrongPassphrase, after `wrong_passphrase_delay` seconds, when it does not.
        Blocking: call it from a worker thread in an event loop."""
        with _insecure_as_vault_error():
            fsutil.check_private_dir(self.vault_path.parent)
            with fsutil.locked(self.lock_path, shared=True):
                parsed = self._read_header()
                if parsed is None or parsed[0].source != SOURCE_PASSPHRASE:
                    source = SOURCE_NAMES[parsed[0].source] if parsed else "none yet"
                    raise VaultError(
                        f"{self.vault_path} is not protected by a passphrase (key source: "
                        f"{source}), so there is nothing to unlock; to add one run "
                        f"`coactive-credd rekey --passphrase-stdin`"
                    )
                header, aad, ciphertext = parsed
                try:
                    params = ScryptParams.decode(header.params)
                except _Undecryptable as exc:
                    raise VaultCorrupt(self.vault_path) from exc
        # Derive and try outside the lock: writers need not wait for scrypt.
        key = derive_key(passphrase, params)
        try:
            data = VaultData.from_json(unseal(key, aad, header.nonce, ciphertext))
        except _Undecryptable:
            time.sleep(self.wrong_passphrase_delay)
            raise WrongPassphrase(
                f"that passphrase does not open {self.vault_path}; the vault is unchanged: "
                f"try again with `coactive-credd unlock`"
            ) from None
        self._unlocked = (header.params, ShieldedKey(key))
        return data

    def lock(self) -> None:
        """Forget the passphrase-derived key. The vault stays as it is on disk."""
        self._unlocked = None

    # --- rekey --------------------------------------------------------------------------

    def rekey_to_passphrase(self, passphrase: str) -> None:
        """Re-encrypt under a key derived from `passphrase`; the vault stays unlocked in
        this process. The key file (or Keychain item) is removed once the vault is replaced."""
        if not passphrase:
            raise VaultError(
                f"an empty passphrase would not protect {self.vault_path}: run "
                f"`coactive-credd rekey --passphrase-stdin` with a passphrase"
            )

        def prepare() -> _NewKey:
            params = ScryptParams.fresh(self.scrypt_cost)
            blob = params.encode()
            key = derive_key(passphrase, params)

            def commit() -> None:
                self._unlocked = (blob, ShieldedKey(key))

            return _NewKey(SOURCE_PASSPHRASE, blob, key, commit)

        self._rekey(prepare)

    def rekey_to_key_file(self) -> None:
        """Re-encrypt under a new random key file at `key_path`.

        The new key is written beside the old one first; the vault is replaced; only then
        does the new key file take the old one's name. A crash between the last two steps
        leaves a vault whose header names the new key, which readers find and move in."""

        def prepare() -> _NewKey:
            key = AESGCM.generate_key(bit_length=KEY_SIZE * 8)
            fsutil.ensure_private_dir(self.key_path.parent)
            fsutil.atomic_write(self._pending_key_path, key)
            return _NewKey(SOURCE_KEY_FILE, key_id(key), key, self._promote_pending_key)

        self._rekey(prepare)

    def rekey_to_systemd_credential(self) -> None:
        """Re-encrypt under the systemd credential this process was given."""

        def prepare() -> _NewKey:
            path = self._systemd_key_path()
            if path is None:
                raise VaultKeyMissing(
                    f"no systemd credential {SYSTEMD_CREDENTIAL} was given to this process "
                    f"($CREDENTIALS_DIRECTORY): add `LoadCredentialEncrypted="
                    f"{SYSTEMD_CREDENTIAL}` to the coactive-credd service and rekey from it"
                )
            key = self._read_systemd_key(path)
            return _NewKey(SOURCE_SYSTEMD, key_id(key), key)

        self._rekey(prepare)

    def rekey_to_keychain(self) -> None:
        """Re-encrypt under a new random key kept in the macOS login Keychain."""

        def prepare() -> _NewKey:
            key = AESGCM.generate_key(bit_length=KEY_SIZE * 8)
            kid = key_id(key)
            with self._naming_vault():
                self.keychain.store(kid, key)
            return _NewKey(SOURCE_KEYCHAIN, kid, key)

        self._rekey(prepare)

    def _rekey(self, prepare: Callable[[], _NewKey]) -> None:
        """Re-encrypt the current content under the key `prepare` puts in place.

        Order: (1) open the vault with its current key, (2) make the new key available
        (written to disk or the Keychain), (3) replace the vault atomically, (4) commit
        the new key and drop the old one. A crash before (3) leaves the old vault with its
        old key untouched; after (3), the new vault and its new key."""
        with self._exclusive():
            opened = self._read(promote=True)
            data = opened.data if opened is not None else VaultData()
            new = prepare()
            self._write(new.key, new.source, new.params, data)
            new.commit()
            if new.source != SOURCE_PASSPHRASE:
                self._unlocked = None
            if new.source != SOURCE_KEY_FILE:
                for path in (self.key_path, self._pending_key_path):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)
            if (
                opened is not None
                and opened.source == SOURCE_KEYCHAIN
                and (new.source, new.params) != (opened.source, opened.params)
            ):
                self.keychain.delete(opened.params)

    # --- internals ----------------------------------------------------------------------

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        with _insecure_as_vault_error():
            fsutil.ensure_private_dir(self.vault_path.parent)
            with fsutil.locked(self.lock_path):
                # Every writer of these files holds this lock: temporaries seen now were
                # left by a writer that died mid-write.
                for path in (self.vault_path, self.key_path, self._pending_key_path):
                    fsutil.remove_stale_temps(path)
                yield

    @contextlib.contextmanager
    def _naming_vault(self) -> Iterator[None]:
        """Prefix errors from the Keychain with the vault they concern."""
        try:
            yield
        except VaultError as exc:
            raise type(exc)(f"{self.vault_path}: {exc}") from None

    def _read_header(self) -> tuple[Header, bytes, bytes] | None:
        try:
            fsutil.check_private_file(self.vault_path)
        except FileNotFoundError:
            return None
        with open(self.vault_path, "rb") as f:
            blob = f.read()
        try:
            return parse(blob, self.vault_path)
        except _Undecryptable as exc:
            raise VaultCorrupt(self.vault_path) from exc

    def _read(self, *, promote: bool) -> _Opened | None:
        """Open the current file; the caller holds the lock (exclusive when `promote`)."""
        parsed = self._read_header()
        if parsed is None:
            return None
        header, aad, ciphertext = parsed
        key = self._key_for(header, promote=promote)
        try:
            data = VaultData.from_json(unseal(key, aad, header.nonce, ciphertext))
        except _Undecryptable as exc:
            raise VaultCorrupt(self.vault_path) from exc
        return _Opened(data, header.source, header.params, key)

    def _key_for(self, header: Header, *, promote: bool) -> bytes:
        if header.source == SOURCE_KEY_FILE:
            return self._key_file_key(header.params, promote=promote)
        if header.source == SOURCE_PASSPHRASE:
            if self._unlocked is not None and self._unlocked[0] == header.params:
                return self._unlocked[1].reveal()
            again = " again (it was re-keyed)" if self._unlocked is not None else ""
            self._unlocked = None
            raise VaultLocked(
                f"{self.vault_path} is locked (protected by a passphrase): run "
                f"`coactive-credd unlock`{again}"
            )
        if header.source == SOURCE_SYSTEMD:
            path = self._systemd_key_path()
            if path is None:
                raise VaultKeyMissing(
                    f"{self.vault_path} is encrypted with the systemd credential "
                    f"{SYSTEMD_CREDENTIAL}, which only the coactive-credd service is given: "
                    f"use the service (`systemctl --user start coactive-credd`), or from it "
                    f"`coactive-credd rekey --key-file`"
                )
            return self._read_systemd_key(path)
        with self._naming_vault():
            key = self.keychain.load(header.params)
        if key is None:
            raise VaultKeyMissing(
                f"{self.vault_path} is encrypted with a key from the macOS Keychain (item "
                f"{KEYCHAIN_SERVICE}/{Keychain.account(header.params)}), which is not there: "
                f"restore the login keychain, or set the vault aside (`mv "
                f"{shlex.quote(str(self.vault_path))} {shlex.quote(str(self.vault_path))}.bad`)"
                f" and run `coactive-credd login` again"
            )
        return key

    def _key_file_key(self, kid: bytes, *, promote: bool) -> bytes:
        """The key file's key; after a rekey interrupted before its last step, the new key
        still waiting beside it (moved into place when `promote`)."""
        key = self._read_key_file(self.key_path, missing_ok=True)
        if key is not None and key_id(key) == kid:
            return key
        pending = self._read_key_file(self._pending_key_path, missing_ok=True)
        if pending is not None and key_id(pending) == kid:
            if promote:
                self._promote_pending_key()
            return pending
        if key is None:
            key = self._read_key_file(self.key_path, missing_ok=False)
        assert key is not None
        return key  # not the vault's key: decryption fails and says so, opaquely

    def _promote_pending_key(self) -> None:
        os.replace(self._pending_key_path, self.key_path)
        fsutil.fsync_dir(self.key_path.parent)

    def _read_key_file(self, path: Path, *, missing_ok: bool) -> bytes | None:
        quoted_vault = shlex.quote(str(self.vault_path))
        try:
            fsutil.check_private_dir(path.parent)
            fsutil.check_private_file(path)
            with open(path, "rb") as f:
                key = f.read(KEY_SIZE + 1)
        except FileNotFoundError:
            if missing_ok:
                return None
            raise VaultKeyMissing(
                f"{self.vault_path} needs its key file {path}, which is missing: restore it "
                f"from a backup, or set the vault aside (`mv {quoted_vault} "
                f"{quoted_vault}.bad`) and run `coactive-credd login` again"
            ) from None
        if len(key) != KEY_SIZE:
            raise VaultKeyMissing(
                f"{path} is not a coactive-credd vault key (expected {KEY_SIZE} bytes): "
                f"restore it from a backup, or set the vault aside (`mv {quoted_vault} "
                f"{quoted_vault}.bad`) and run `coactive-credd login` again"
            )
        return key

    def _systemd_key_path(self) -> Path | None:
        if self.credentials_dir is None:
            return None
        path = self.credentials_dir / SYSTEMD_CREDENTIAL
        return path if path.is_file() else None

    def _read_systemd_key(self, path: Path) -> bytes:
        raw = path.read_bytes()
        text = raw.strip()
        if len(raw) == KEY_SIZE:
            return raw
        if len(text) == 2 * KEY_SIZE:
            with contextlib.suppress(ValueError):
                return bytes.fromhex(text.decode("ascii", "replace"))
        raise VaultKeyMissing(
            f"the systemd credential {path} is not a vault key ({KEY_SIZE} random bytes, or "
            f"{2 * KEY_SIZE} hex digits): create it with `head -c {KEY_SIZE} /dev/urandom | "
            f"systemd-creds encrypt --user --name={SYSTEMD_CREDENTIAL} - "
            f"~/.config/credstore.encrypted/{SYSTEMD_CREDENTIAL}`"
        )

    def _first_key(self) -> _NewKey:
        """The key for a vault written for the first time: the systemd credential when the
        service has one, otherwise the key file (created if needed)."""
        systemd = self._systemd_key_path()
        if systemd is not None:
            key = self._read_systemd_key(systemd)
            return _NewKey(SOURCE_SYSTEMD, key_id(key), key)
        key_or_none = self._read_key_file(self.key_path, missing_ok=True)
        if key_or_none is None:
            fsutil.ensure_private_dir(self.key_path.parent)
            key_or_none = AESGCM.generate_key(bit_length=KEY_SIZE * 8)
            fsutil.atomic_write(self.key_path, key_or_none)
        return _NewKey(SOURCE_KEY_FILE, key_id(key_or_none), key_or_none)

    def _write(self, key: bytes, source: int, params: bytes, data: VaultData) -> None:
        blob = seal(key, source, params, data.to_json(), os.urandom(NONCE_SIZE))
        fsutil.atomic_write(self.vault_path, blob)
