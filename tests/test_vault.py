from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from coactive_credd import vault as v
from coactive_credd.shield import Shielded, ShieldedKey
from coactive_credd.vault import (
    CachedToken,
    ProfileSecrets,
    Vault,
    VaultCorrupt,
    VaultData,
    VaultInsecure,
    VaultKeyMissing,
    VaultVersionError,
)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")

SECRET = "pt-SECRET-9f1c2e7a"
ACCESS = "at-ACCESS-51b0d3c4"


def make_vault(home: Path) -> Vault:
    return Vault(home / "vault.bin", home / "vault.key", home / "vault.lock")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def vault(home: Path) -> Vault:
    return make_vault(home)


def add_profile(data: VaultData) -> None:
    data.profiles["default"] = ProfileSecrets(
        secret=SECRET,
        token=CachedToken(ACCESS, "Bearer", expires_at=1_700_003_600.0, obtained_at=1.7e9),
    )


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


# --- round trip and at-rest secrecy -----------------------------------------------------


def test_load_without_vault_is_empty_and_creates_nothing(vault: Vault, home: Path) -> None:
    assert vault.load() == VaultData({})
    assert not vault.exists() and not home.exists()


def test_round_trip(vault: Vault, home: Path) -> None:
    written = vault.update(add_profile)
    vault.update(
        lambda d: d.profiles.__setitem__("ci", ProfileSecrets("client-secret", client_id="cid"))
    )
    loaded = make_vault(home).load()
    assert loaded.profiles["default"] == written.profiles["default"]
    assert loaded.profiles["ci"] == ProfileSecrets("client-secret", client_id="cid")
    assert vault.key_source == "key-file" and not vault.locked


def test_files_are_private(vault: Vault, home: Path) -> None:
    old = os.umask(0o000)
    try:
        vault.update(add_profile)
    finally:
        os.umask(old)
    assert mode_of(home) == 0o700
    for name in ("vault.bin", "vault.key", "vault.lock"):
        assert mode_of(home / name) == 0o600
    assert len((home / "vault.key").read_bytes()) == 32


def test_no_secret_in_clear_at_rest(vault: Vault, home: Path) -> None:
    vault.update(add_profile)
    for path in home.iterdir():
        blob = path.read_bytes()
        for needle in (SECRET, ACCESS, "default", "Bearer"):
            assert needle.encode() not in blob, f"{needle} readable in {path.name}"


def test_fresh_nonce_every_write(vault: Vault, home: Path) -> None:
    vault.update(add_profile)
    first = (home / "vault.bin").read_bytes()
    vault.update(lambda d: None)
    second = (home / "vault.bin").read_bytes()
    start = 8 + v.KEY_ID_SIZE
    assert first[start : start + 12] != second[start : start + 12]
    assert first[start + 12 :] != second[start + 12 :]


def test_reprs_hide_secrets(vault: Vault) -> None:
    data = vault.update(add_profile)
    for text in (repr(data), str(data), repr(data.profiles["default"]), repr(vault)):
        assert SECRET not in text and ACCESS not in text
    assert repr(Shielded(SECRET)) == str(Shielded(SECRET)) == "Shielded(***)"


def test_shielded_round_trip_and_equality() -> None:
    s = Shielded(SECRET)
    assert s.reveal() == SECRET
    assert s == Shielded(SECRET) and s != Shielded("other")
    assert SECRET.encode() not in s._blob
    assert ShieldedKey(b"\x01" * 32).reveal() == b"\x01" * 32
    with pytest.raises(TypeError):
        hash(s)


def test_shielded_refuses_pickling() -> None:
    import pickle

    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(Shielded(SECRET))


def test_existing_key_file_is_reused_for_a_new_vault(vault: Vault, home: Path) -> None:
    home.mkdir(mode=0o700)
    key = AESGCM.generate_key(bit_length=256)
    (home / "vault.key").write_bytes(key)
    (home / "vault.key").chmod(0o600)
    vault.update(add_profile)
    assert (home / "vault.key").read_bytes() == key


# --- two writers at once ----------------------------------------------------------------

WRITER = """
import sys
from pathlib import Path
from coactive_credd.vault import ProfileSecrets, Vault
home, tag = Path(sys.argv[1]), sys.argv[2]
vault = Vault(home / "vault.bin", home / "vault.key", home / "vault.lock")
print("ready", flush=True)
sys.stdin.readline()
for i in range(50):
    vault.update(lambda d: d.profiles.__setitem__(f"{tag}-{i}", ProfileSecrets(f"s-{tag}-{i}")))
"""


def test_two_processes_updating_at_once_lose_nothing(vault: Vault, home: Path) -> None:
    # The vault and its key do not exist yet: both writers also race to create them.
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(home), tag],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for tag in ("a", "b")
    ]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline() == "ready\n"
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        for p in procs:
            assert p.wait(60) == 0
    finally:
        for p in procs:
            p.kill()
            p.communicate()
    profiles = vault.load().profiles
    assert len(profiles) == 100
    assert profiles["a-49"].secret == "s-a-49" and profiles["b-0"].secret == "s-b-0"


# --- refusals: each with its own message, the file byte-for-byte unchanged --------------


def written(vault: Vault, home: Path) -> bytes:
    vault.update(add_profile)
    return (home / "vault.bin").read_bytes()


def assert_refused(vault: Vault, home: Path, error: type[Exception], match: str) -> None:
    before = {p.name: p.read_bytes() for p in home.iterdir() if not p.is_symlink()}
    with pytest.raises(error, match=match) as err:
        vault.load()
    with pytest.raises(error, match=match):
        vault.update(add_profile)
    after = {p.name: p.read_bytes() for p in home.iterdir() if not p.is_symlink()}
    assert after == before
    assert str(home) in str(err.value)
    assert SECRET not in str(err.value) and ACCESS not in str(err.value)


CORRUPT_MSG = "cannot be decrypted.*left untouched.*coactive-credd login"


@pytest.mark.parametrize(
    "where",
    [0, 4, 5, 6, 8, 8 + v.KEY_ID_SIZE, 8 + v.KEY_ID_SIZE + 12, -17, -1],
    ids=["magic", "version-down", "source", "params-len", "key-id", "nonce", "body", "body-end",
         "tag"],
)
def test_flipped_byte_is_refused(vault: Vault, home: Path, where: int) -> None:
    blob = bytearray(written(vault, home))
    if where == 4:
        blob[4] = 0  # a version from the past is as foreign as a flipped bit
    else:
        blob[where] ^= 0x01
    (home / "vault.bin").write_bytes(bytes(blob))
    assert_refused(vault, home, VaultCorrupt, CORRUPT_MSG)


@pytest.mark.parametrize("keep", [0, 3, 8, 20, 40, -16, -1])
def test_truncation_is_refused(vault: Vault, home: Path, keep: int) -> None:
    blob = written(vault, home)
    (home / "vault.bin").write_bytes(blob[:keep])
    assert_refused(vault, home, VaultCorrupt, CORRUPT_MSG)


def test_foreign_file_is_refused(vault: Vault, home: Path) -> None:
    written(vault, home)
    (home / "vault.bin").write_bytes(os.urandom(300))
    assert_refused(vault, home, VaultCorrupt, CORRUPT_MSG)


def test_wrong_key_is_refused_with_the_same_message(vault: Vault, home: Path) -> None:
    written(vault, home)
    (home / "vault.key").write_bytes(AESGCM.generate_key(bit_length=256))
    assert_refused(vault, home, VaultCorrupt, CORRUPT_MSG)


def test_future_version_is_refused_saying_so(vault: Vault, home: Path) -> None:
    blob = bytearray(written(vault, home))
    blob[4] = v.FORMAT_VERSION + 1
    (home / "vault.bin").write_bytes(bytes(blob))
    assert_refused(vault, home, VaultVersionError, "newer coactive-credd.*format 2.*upgrade")


def test_missing_key_file_is_refused(vault: Vault, home: Path) -> None:
    written(vault, home)
    (home / "vault.key").unlink()
    assert_refused(vault, home, VaultKeyMissing, "needs its key file .*vault.key.*missing")
    assert not (home / "vault.key").exists()


def test_short_key_file_is_refused(vault: Vault, home: Path) -> None:
    written(vault, home)
    (home / "vault.key").write_bytes(b"\x00" * 16)
    assert_refused(vault, home, VaultKeyMissing, "not a coactive-credd vault key")


@pytest.mark.parametrize(
    ("name", "mode", "fix"),
    [("vault.bin", 0o644, "chmod 600"), ("vault.key", 0o640, "chmod 600"),
     ("vault.bin", 0o604, "chmod 600"), (".", 0o755, "chmod 700")],
)
def test_loose_modes_are_refused(vault: Vault, home: Path, name: str, mode: int, fix: str) -> None:
    written(vault, home)
    (home / name).chmod(mode)
    target = (home / name) if name != "." else home
    assert_refused(vault, home, VaultInsecure, f"{target}.*mode {mode:04o}.*{fix} {target}")
    assert mode_of(home / name) == mode


@needs_root
@pytest.mark.parametrize("name", ["vault.bin", "vault.key", "vault.lock"])
def test_foreign_owner_is_refused(vault: Vault, home: Path, name: str) -> None:
    written(vault, home)
    os.chown(home / name, 1, 1)
    assert_refused(vault, home, VaultInsecure, f"{home / name}.*owner uid 1.*chown")


@pytest.mark.parametrize("name", ["vault.bin", "vault.key"])
def test_symlinks_are_refused(vault: Vault, home: Path, tmp_path: Path, name: str) -> None:
    written(vault, home)
    moved = tmp_path / f"moved-{name}"
    (home / name).rename(moved)
    (home / name).symlink_to(moved)
    assert_refused(vault, home, VaultInsecure, f"{home / name}.*symlink")
    assert (home / name).is_symlink()


def test_crash_during_write_keeps_old_vault_and_no_temp(
    vault: Vault, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = written(vault, home)

    def crash(src: object, dst: object) -> None:
        raise OSError(5, "injected crash before rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="injected"):
        vault.update(lambda d: d.profiles.__setitem__("new", ProfileSecrets("s")))
    monkeypatch.undo()
    assert (home / "vault.bin").read_bytes() == before
    assert sorted(p.name for p in home.iterdir()) == ["vault.bin", "vault.key", "vault.lock"]
    assert set(vault.load().profiles) == {"default"}


def test_exception_in_update_function_writes_nothing(vault: Vault, home: Path) -> None:
    before = written(vault, home)

    def fail(data: VaultData) -> None:
        data.profiles.clear()
        raise ValueError("changed my mind")

    with pytest.raises(ValueError):
        vault.update(fail)
    assert (home / "vault.bin").read_bytes() == before


# --- fixed vectors ----------------------------------------------------------------------

VECTOR_KEY = bytes(range(32))
VECTOR_NONCE = bytes(range(100, 112))
VECTOR_PLAINTEXT = (
    b'{"profiles":{"default":{"secret":"pt-secret","client_id":null,"token":{"access_token":'
    b'"at-123","token_type":"Bearer","expires_at":1700003600.0,"obtained_at":1700000000.0}}}}'
)
VECTOR_FILE = bytes.fromhex(
    "4343445601010008ab17deb6d4898b586465666768696a6b6c6d6e6f3339ae14168f3ff25b117dd2a1470e"
    "9824a37366ff4ec90985a2c92b89c6d16aaecb30b46161fe678f960c1dd160a9a3723ef6937f23250ac09f"
    "d9ba83ad87fe67e7be60f4714027ea0c8e2662f96e920b137a5a85ffafa7abdc07f648316273fa1ef91b05"
    "12cc07c39ffcff804fdd89504ef23ded5bdc4cc210e1d4a9eb69b310a5a99f5902721bfa7f6635a7b070a0"
    "f9a589273925e3f66ef00a6fda2092caa001176ca0ecd1ce5b25dc8a91f55f92956f36403c230476e7d3a2"
    "597f"
)


def test_aes_gcm_primitive_known_answer() -> None:
    # McGrew & Viega, "The Galois/Counter Mode of Operation", test case 14 (AES-256).
    out = AESGCM(bytes(32)).encrypt(bytes(12), bytes(16), None)
    assert out.hex() == "cea7403d4d606b6e074ec5d3baf39d18" "d0d1c8a799996bf0265b98b5d48ab919"


def test_vault_format_vector_seal() -> None:
    assert v.key_id(VECTOR_KEY).hex() == "ab17deb6d4898b58"
    blob = v.seal(VECTOR_KEY, v.SOURCE_KEY_FILE, v.key_id(VECTOR_KEY), VECTOR_PLAINTEXT,
                  VECTOR_NONCE)
    assert blob == VECTOR_FILE


def test_vault_format_vector_opens(home: Path) -> None:
    home.mkdir(mode=0o700)
    for name, content in (("vault.key", VECTOR_KEY), ("vault.bin", VECTOR_FILE)):
        (home / name).write_bytes(content)
        (home / name).chmod(0o600)
    data = make_vault(home).load()
    assert data.to_json() == VECTOR_PLAINTEXT
    assert data.profiles["default"].token == CachedToken("at-123", "Bearer", 1700003600.0, 1.7e9)
