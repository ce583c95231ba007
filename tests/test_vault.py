from __future__ import annotations

import contextlib
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from coactive_credd import vault as v
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
from coactive_credd.vault.shield import Shielded, ShieldedKey
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
    assert repr(vault) == f"Vault({str(vault.vault_path)!r})"  # the file, nothing of it


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
    ids=[
        "magic",
        "version-down",
        "source",
        "params-len",
        "key-id",
        "nonce",
        "body",
        "body-end",
        "tag",
    ],
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
    [
        ("vault.bin", 0o644, "chmod 600"),
        ("vault.key", 0o640, "chmod 600"),
        ("vault.bin", 0o604, "chmod 600"),
        (".", 0o755, "chmod 700"),
    ],
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


UPDATER = """
import os, sys
from pathlib import Path
from coactive_credd.vault import ProfileSecrets, Vault
home, crash_at = Path(sys.argv[1]), int(sys.argv[2])
vault = Vault(home / "vault.bin", home / "vault.key", home / "vault.lock")
steps = 0
def crashing(real):
    def step(*args, **kwargs):
        global steps
        steps += 1
        if steps == crash_at:
            os._exit(70)  # power cut: no cleanup, no finally, no except
        return real(*args, **kwargs)
    return step
for name in ("open", "write", "fsync", "close", "replace", "unlink", "fchmod"):
    setattr(os, name, crashing(getattr(os, name)))
vault.update(lambda d: d.profiles.__setitem__("new", ProfileSecrets("s2")))
os._exit(0)
"""


def test_a_crash_at_every_step_of_an_update_leaves_the_old_or_the_new_vault(
    tmp_path: Path,
) -> None:
    """A real crash (``os._exit`` in a child, so no cleanup runs) at each system call of a
    plain update: the vault opens with the old content or the new, and the next writer clears
    what the crash left behind."""
    seen = set()
    for crash_at in range(1, 80):
        home = tmp_path / f"crash-{crash_at}"
        written(make_vault(home), home)
        done = subprocess.run(
            [sys.executable, "-c", UPDATER, str(home), str(crash_at)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode in (0, 70), done.stderr
        after = make_vault(home)
        profiles = frozenset(after.load().profiles)
        assert profiles in ({"default"}, {"default", "new"}), f"crash at step {crash_at}"
        seen.add(profiles)
        after.update(lambda d: d.profiles.__setitem__("later", ProfileSecrets("s3")))
        assert set(make_vault(home).load().profiles) == profiles | {"later"}
        assert sorted(p.name for p in home.iterdir()) == ["vault.bin", "vault.key", "vault.lock"]
        if done.returncode == 0:
            break
    else:
        raise AssertionError("the update never completed")
    assert crash_at > 5  # the loop crossed the open, write, fsync and rename steps
    assert seen == {frozenset({"default"}), frozenset({"default", "new"})}


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
    assert out.hex() == "cea7403d4d606b6e074ec5d3baf39d18d0d1c8a799996bf0265b98b5d48ab919"


def test_vault_format_vector_seal() -> None:
    assert v.key_id(VECTOR_KEY).hex() == "ab17deb6d4898b58"
    blob = v.seal(
        VECTOR_KEY, v.SOURCE_KEY_FILE, v.key_id(VECTOR_KEY), VECTOR_PLAINTEXT, VECTOR_NONCE
    )
    assert blob == VECTOR_FILE


def test_vault_format_vector_opens(home: Path) -> None:
    home.mkdir(mode=0o700)
    for name, content in (("vault.key", VECTOR_KEY), ("vault.bin", VECTOR_FILE)):
        (home / name).write_bytes(content)
        (home / name).chmod(0o600)
    data = make_vault(home).load()
    assert data.to_json() == VECTOR_PLAINTEXT
    assert data.profiles["default"].token == CachedToken("at-123", "Bearer", 1700003600.0, 1.7e9)


# === phase 2: passphrase, OS-held keys, rekey ===========================================

PASS = "correct horse battery staple"
SMALL_COST = (10, 8, 1)  # ~1 ms per derivation; the default cost is checked once below


def pvault(home: Path, **kw: object) -> Vault:
    kw.setdefault("scrypt_cost", SMALL_COST)
    kw.setdefault("wrong_passphrase_delay", 0.2)
    return Vault(home / "vault.bin", home / "vault.key", home / "vault.lock", **kw)  # type: ignore[arg-type]


def header_of(home: Path) -> v.Header:
    return v.parse((home / "vault.bin").read_bytes(), home / "vault.bin")[0]


@pytest.fixture(autouse=True)
def _no_inherited_systemd_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)


# --- KDF vectors ------------------------------------------------------------------------


def test_scrypt_rfc7914_vectors() -> None:
    # RFC 7914 section 12; a 32-byte derivation is the first half of the 64-byte vector.
    assert v.derive_key("", v.ScryptParams(4, 1, 1, b"")).hex() == (
        "77d6576238657b203b19ca42c18a0497f16b4844e3074ae8dfdffa3fede21442"
    )
    assert v.derive_key("password", v.ScryptParams(10, 8, 16, b"NaCl")).hex() == (
        "fdbabe1c9d3472007856e7190d01e9fe7c6ad7cbc8237830e77376634b373162"
    )


def test_passphrase_is_nfc_normalised() -> None:
    params = v.ScryptParams(4, 1, 1, bytes(16))
    assert v.derive_key("caf\u00e9", params) == v.derive_key("cafe\u0301", params)
    assert v.derive_key("caf\u00e9", params) != v.derive_key("cafe", params)


PASS_VECTOR_FILE = bytes.fromhex(
    "43434456010200130a0801000102030405060708090a0b0c0d0e0f000102030405060708090a0b5ea7916d"
    "a24108ad093a30d228ae129ccb92d8943f254e03071ae46e99d302f961aca5dbd74fda80f6dee245b51dc7"
    "04634778d0806a8c28b0ac221e8979cd824d32138f8528ca018b"
)


def test_passphrase_vault_vector(home: Path) -> None:
    params = v.ScryptParams(10, 8, 1, bytes(range(16)))
    key = v.derive_key(PASS, params)
    assert key.hex() == "9a9f74cc441de571a18c4bf8580ad51f86745d14b39065ad24ad92fc05c99515"
    plaintext = b'{"profiles":{"ci":{"secret":"cs-1","client_id":"cid-1"}}}'
    blob = v.seal(key, v.SOURCE_PASSPHRASE, params.encode(), plaintext, bytes(range(12)))
    assert blob == PASS_VECTOR_FILE
    home.mkdir(mode=0o700)
    (home / "vault.bin").write_bytes(PASS_VECTOR_FILE)
    (home / "vault.bin").chmod(0o600)
    vault = pvault(home)
    assert vault.locked and vault.key_source == "passphrase"
    assert vault.unlock(PASS).to_json() == plaintext
    assert not vault.locked


# --- passphrase mode --------------------------------------------------------------------


def test_passphrase_round_trip_through_a_restart(vault: Vault, home: Path) -> None:
    vault.update(add_profile)
    daemon = pvault(home)
    daemon.rekey_to_passphrase(PASS)
    assert header_of(home).source == v.SOURCE_PASSPHRASE
    assert not (home / "vault.key").exists()  # nothing left that opens the vault alone
    assert daemon.key_source == "passphrase" and not daemon.locked
    assert daemon.load().profiles["default"].secret == SECRET  # stays unlocked here

    restarted = pvault(home)
    assert restarted.locked
    before = (home / "vault.bin").read_bytes()
    with pytest.raises(v.VaultLocked, match=r"vault.bin is locked.*coactive-credd unlock"):
        restarted.load()
    with pytest.raises(v.VaultLocked):
        restarted.update(add_profile)
    assert (home / "vault.bin").read_bytes() == before

    data = restarted.unlock(PASS)
    assert data.profiles["default"].token is not None
    restarted.update(lambda d: d.profiles.__setitem__("more", ProfileSecrets("s2")))
    assert header_of(home).source == v.SOURCE_PASSPHRASE
    assert set(restarted.load().profiles) == {"default", "more"}

    restarted.lock()
    assert restarted.locked
    with pytest.raises(v.VaultLocked):
        restarted.load()


def test_wrong_passphrase_is_refused_after_a_delay(vault: Vault, home: Path) -> None:
    import time

    pvault(home).rekey_to_passphrase(PASS)
    before = (home / "vault.bin").read_bytes()
    restarted = pvault(home, wrong_passphrase_delay=0.3)
    start = time.monotonic()
    with pytest.raises(v.WrongPassphrase) as err:
        restarted.unlock("wrong " + PASS)
    assert time.monotonic() - start >= 0.3
    msg = str(err.value)
    assert "does not open" in msg and "coactive-credd unlock" in msg and str(home) in msg
    assert PASS not in msg
    assert restarted.locked
    assert (home / "vault.bin").read_bytes() == before


def test_passphrase_never_at_rest_or_in_reprs(vault: Vault, home: Path) -> None:
    vault.update(add_profile)
    pv = pvault(home)
    pv.rekey_to_passphrase(PASS)
    for path in home.iterdir():
        for needle in (PASS, SECRET, ACCESS):
            assert needle.encode() not in path.read_bytes()
    assert PASS not in repr(pv) and PASS not in repr(pv._unlocked)
    assert pv._unlocked is not None
    assert (
        v.derive_key(PASS, v.ScryptParams.decode(header_of(home).params))
        not in repr(pv.__dict__).encode()
    )


def test_default_scrypt_cost_is_recorded_in_the_header(vault: Vault, home: Path) -> None:
    vault.update(add_profile)
    make_vault(home).rekey_to_passphrase(PASS)  # one derivation at the default cost
    params = v.ScryptParams.decode(header_of(home).params)
    assert (params.log2_n, params.r, params.p) == v.SCRYPT_COST == (17, 8, 1)
    assert len(params.salt) == 16


def test_unlock_of_a_vault_without_passphrase_says_so(vault: Vault) -> None:
    vault.update(add_profile)
    with pytest.raises(v.VaultError, match=r"not protected by a passphrase.*rekey"):
        vault.unlock(PASS)


def test_empty_passphrase_is_refused(vault: Vault, home: Path) -> None:
    before = written(vault, home)
    with pytest.raises(v.VaultError, match="empty passphrase"):
        vault.rekey_to_passphrase("")
    assert (home / "vault.bin").read_bytes() == before


def test_rekey_by_another_process_locks_the_stale_key(vault: Vault, home: Path) -> None:
    vault.update(add_profile)
    daemon = pvault(home)
    daemon.rekey_to_passphrase(PASS)
    other = pvault(home)
    other.unlock(PASS)
    other.rekey_to_passphrase("a new passphrase")  # new salt: the daemon's key is stale
    with pytest.raises(v.VaultLocked, match="unlock` again"):
        daemon.load()
    assert daemon.locked
    daemon.unlock("a new passphrase")
    assert daemon.load().profiles["default"].secret == SECRET


def test_forged_scrypt_cost_is_refused_without_deriving(vault: Vault, home: Path) -> None:
    home.mkdir(mode=0o700)
    forged = v.ScryptParams(30, 8, 1, bytes(16))  # 128 GiB: must never be attempted
    blob = v.seal(bytes(32), v.SOURCE_PASSPHRASE, forged.encode(), b"{}", bytes(12))
    (home / "vault.bin").write_bytes(blob)
    (home / "vault.bin").chmod(0o600)
    with pytest.raises(VaultCorrupt):
        pvault(home).unlock(PASS)


def test_rekey_back_to_key_file(vault: Vault, home: Path) -> None:
    vault.update(add_profile)
    pv = pvault(home)
    pv.rekey_to_passphrase(PASS)
    pv.rekey_to_key_file()
    assert header_of(home).source == v.SOURCE_KEY_FILE
    assert mode_of(home / "vault.key") == 0o600 and not (home / "vault.key.new").exists()
    fresh = make_vault(home)
    assert not fresh.locked and fresh.key_source == "key-file"
    assert fresh.load().profiles["default"].secret == SECRET


def test_rekey_key_file_rotates_the_key(vault: Vault, home: Path) -> None:
    vault.update(add_profile)
    old_key = (home / "vault.key").read_bytes()
    vault.rekey_to_key_file()
    assert (home / "vault.key").read_bytes() != old_key
    assert make_vault(home).load().profiles["default"].secret == SECRET


def test_rekey_refuses_a_corrupt_vault_and_changes_nothing(vault: Vault, home: Path) -> None:
    blob = bytearray(written(vault, home))
    blob[-1] ^= 1
    (home / "vault.bin").write_bytes(bytes(blob))
    before = {p.name: p.read_bytes() for p in home.iterdir()}
    with pytest.raises(VaultCorrupt):
        pvault(home).rekey_to_passphrase(PASS)
    with pytest.raises(VaultCorrupt):
        vault.rekey_to_key_file()
    assert {p.name: p.read_bytes() for p in home.iterdir()} == before


# --- crash at every step of a rekey -----------------------------------------------------

CRASHER = """
import os, sys
from pathlib import Path
from coactive_credd.vault import Vault
home, start, target, crash_at = Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
vault = Vault(home / "vault.bin", home / "vault.key", home / "vault.lock", scrypt_cost=(10, 8, 1))
if start == "passphrase":
    vault.unlock(sys.stdin.readline().rstrip("\\n"))
new_passphrase = sys.stdin.readline().rstrip("\\n") if target == "passphrase" else ""
steps = 0
def crashing(real):
    def step(*args, **kwargs):
        global steps
        steps += 1
        if steps == crash_at:
            os._exit(70)  # power cut: no cleanup, no finally
        return real(*args, **kwargs)
    return step
for name in ("replace", "unlink", "fsync", "write"):
    setattr(os, name, crashing(getattr(os, name)))
if target == "passphrase":
    vault.rekey_to_passphrase(new_passphrase)
else:
    vault.rekey_to_key_file()
os._exit(0)
"""

OLD_PASS, NEW_PASS = "old passphrase one", "new passphrase two"


def open_after_crash(home: Path) -> tuple[Vault, VaultData]:
    """Open the vault the way a restarted daemon would, with whichever key it names."""
    vault = pvault(home, wrong_passphrase_delay=0.0)
    if not vault.locked:
        return vault, vault.load()
    for candidate in (OLD_PASS, NEW_PASS):
        with contextlib.suppress(v.WrongPassphrase):
            return vault, vault.unlock(candidate)
    raise AssertionError("no passphrase opens the vault")


@pytest.mark.parametrize(
    ("start", "target"),
    [("key-file", "passphrase"), ("passphrase", "key-file"), ("key-file", "key-file")],
)
def test_crash_at_every_step_of_rekey_leaves_a_vault_that_opens(
    tmp_path: Path, start: str, target: str
) -> None:
    for crash_at in range(1, 40):
        home = tmp_path / f"crash-{crash_at}"
        setup = pvault(home, wrong_passphrase_delay=0.0)
        setup.update(add_profile)
        if start == "passphrase":
            setup.rekey_to_passphrase(OLD_PASS)
        stdin = (OLD_PASS + "\n" if start == "passphrase" else "") + NEW_PASS + "\n"
        done = subprocess.run(
            [sys.executable, "-c", CRASHER, str(home), start, target, str(crash_at)],
            input=stdin,
            text=True,
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert done.returncode in (0, 70), done.stderr
        recovered, data = open_after_crash(home)
        assert data.profiles["default"].secret == SECRET, f"crash at step {crash_at}"
        # A writer after the crash finishes what was interrupted and keeps working.
        recovered.update(lambda d: d.profiles.__setitem__("after", ProfileSecrets("s")))
        assert set(open_after_crash(home)[1].profiles) == {"default", "after"}
        if done.returncode == 0:
            break
    else:
        raise AssertionError("the rekey never completed")
    assert crash_at > 3  # the loop really crossed the write, fsync and rename steps
    assert header_of(home).source == (
        v.SOURCE_PASSPHRASE if target == "passphrase" else v.SOURCE_KEY_FILE
    )


# --- systemd credential -----------------------------------------------------------------


@pytest.fixture
def credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> bytes:
    """A $CREDENTIALS_DIRECTORY as systemd gives a service, holding a 32-byte key."""
    creds = tmp_path / "credentials"
    creds.mkdir(mode=0o500)
    key = os.urandom(32)
    (creds / "coactive-credd.key").write_bytes(key)
    (creds / "coactive-credd.key").chmod(0o400)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    return key


def test_new_vault_uses_the_systemd_credential(home: Path, credentials: bytes) -> None:
    service = make_vault(home)
    assert service.key_source == "systemd-credential"
    service.update(add_profile)
    assert header_of(home).source == v.SOURCE_SYSTEMD
    assert header_of(home).params == v.key_id(credentials)
    assert not (home / "vault.key").exists()
    assert make_vault(home).load().profiles["default"].secret == SECRET


def test_systemd_vault_outside_the_service_says_how_to_reach_it(
    home: Path, credentials: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_vault(home).update(add_profile)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    cli = make_vault(home)
    assert cli.key_source == "systemd-credential" and not cli.locked
    assert_refused(cli, home, v.VaultKeyMissing, "systemd credential coactive-credd.key.*service")


def test_systemd_credential_may_be_hex(tmp_path: Path, home: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    key = os.urandom(32)
    (creds / "coactive-credd.key").write_text(key.hex() + "\n")
    make_vault(home).update(add_profile)
    Vault(
        home / "vault.bin", home / "vault.key", home / "vault.lock", credentials_dir=creds
    ).rekey_to_systemd_credential()
    assert header_of(home).params == v.key_id(key)


def test_bad_systemd_credential_is_refused(tmp_path: Path, home: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "coactive-credd.key").write_bytes(b"too short")
    service = Vault(
        home / "vault.bin", home / "vault.key", home / "vault.lock", credentials_dir=creds
    )
    with pytest.raises(v.VaultKeyMissing, match=r"not a vault key.*systemd-creds encrypt"):
        service.update(add_profile)
    assert not (home / "vault.bin").exists()


def test_rekey_between_key_file_and_systemd_credential(
    vault: Vault, home: Path, credentials: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    vault.update(add_profile)  # written by the CLI: a key file
    assert header_of(home).source == v.SOURCE_KEY_FILE
    with pytest.raises(v.VaultKeyMissing, match="LoadCredentialEncrypted"):
        vault.rekey_to_systemd_credential()
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(home.parent / "credentials"))
    service = make_vault(home)
    service.rekey_to_systemd_credential()
    assert header_of(home).source == v.SOURCE_SYSTEMD and not (home / "vault.key").exists()
    service.rekey_to_key_file()
    assert header_of(home).source == v.SOURCE_KEY_FILE
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    assert make_vault(home).load().profiles["default"].secret == SECRET


# --- macOS Keychain through a stand-in for /usr/bin/security ----------------------------

FAKE_SECURITY = """#!{python}
# Behaves like /usr/bin/security for the three commands the vault uses, keeping items in
# a JSON file, and records every argv so the test can check no key ever travels in one.
import json, shlex, sys
from pathlib import Path
store = Path(sys.argv[0]).with_name("keychain.json")
items = json.loads(store.read_text()) if store.exists() else {{}}
with open(Path(sys.argv[0]).with_name("argv.log"), "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")

def opts(args):
    return {{args[i]: args[i + 1] for i in range(0, len(args) - 1) if args[i].startswith("-")}}

def run(args):
    cmd, o = args[0], opts(args[1:])
    key = o.get("-s", "") + "/" + o.get("-a", "")
    if cmd == "find-generic-password":
        if key not in items:
            print("security: SecKeychainSearchCopyNext: The specified item could not be found"
                  " in the keychain.", file=sys.stderr)
            return 44
        print(items[key])
    elif cmd == "add-generic-password":
        items[key] = o["-w"]
    elif cmd == "delete-generic-password":
        if items.pop(key, None) is None:
            return 44
    else:
        return 1
    store.write_text(json.dumps(items))
    return 0

if sys.argv[1] == "-i":
    for line in sys.stdin:
        if line.strip():
            run(shlex.split(line))
    sys.exit(0)
sys.exit(run(sys.argv[1:]))
"""


@pytest.fixture
def keychain(tmp_path: Path) -> v.Keychain:
    tool = tmp_path / "bin" / "security"
    tool.parent.mkdir()
    tool.write_text(FAKE_SECURITY.format(python=sys.executable))
    tool.chmod(0o755)
    return v.Keychain(command=[str(tool)])


def keychain_items(kc: v.Keychain) -> dict[str, str]:
    import json

    store = Path(kc.command[0]).with_name("keychain.json")
    return dict(json.loads(store.read_text())) if store.exists() else {}


def test_rekey_to_keychain_and_back(vault: Vault, home: Path, keychain: v.Keychain) -> None:
    vault.update(add_profile)
    kv = Vault(home / "vault.bin", home / "vault.key", home / "vault.lock", keychain=keychain)
    kv.rekey_to_keychain()
    header = header_of(home)
    assert header.source == v.SOURCE_KEYCHAIN and kv.key_source == "keychain"
    assert not (home / "vault.key").exists()
    items = keychain_items(keychain)
    assert list(items) == [f"coactive-credd/vault-key-{header.params.hex()}"]

    restarted = Vault(
        home / "vault.bin", home / "vault.key", home / "vault.lock", keychain=keychain
    )
    assert restarted.load().profiles["default"].secret == SECRET
    restarted.update(lambda d: d.profiles.__setitem__("x", ProfileSecrets("s")))

    argv_log = Path(keychain.command[0]).with_name("argv.log").read_text()
    key_hex = next(iter(items.values()))
    assert key_hex not in argv_log and "-i" in argv_log

    restarted.rekey_to_key_file()
    assert keychain_items(keychain) == {}  # the old key is removed from the Keychain
    assert set(make_vault(home).load().profiles) == {"default", "x"}


def test_keychain_item_missing(vault: Vault, home: Path, keychain: v.Keychain) -> None:
    vault.update(add_profile)
    kv = Vault(home / "vault.bin", home / "vault.key", home / "vault.lock", keychain=keychain)
    kv.rekey_to_keychain()
    Path(keychain.command[0]).with_name("keychain.json").write_text("{}")
    assert_refused(kv, home, v.VaultKeyMissing, "macOS Keychain .*not there")


def test_keychain_tool_missing(
    vault: Vault, home: Path, keychain: v.Keychain, tmp_path: Path
) -> None:
    vault.update(add_profile)
    Vault(
        home / "vault.bin", home / "vault.key", home / "vault.lock", keychain=keychain
    ).rekey_to_keychain()
    elsewhere = Vault(
        home / "vault.bin",
        home / "vault.key",
        home / "vault.lock",
        keychain=v.Keychain(command=[str(tmp_path / "no-such-security")]),
    )
    assert_refused(elsewhere, home, v.VaultKeyMissing, "Keychain cannot be reached")


def test_keychain_store_failure_leaves_the_vault_as_it_was(
    vault: Vault, home: Path, tmp_path: Path
) -> None:
    before = written(vault, home)
    false = v.Keychain(command=["false"])
    kv = Vault(home / "vault.bin", home / "vault.key", home / "vault.lock", keychain=false)
    with pytest.raises(v.VaultError, match="could not store the vault key in the Keychain"):
        kv.rekey_to_keychain()
    assert (home / "vault.bin").read_bytes() == before
    assert make_vault(home).load().profiles["default"].secret == SECRET


def test_a_corrupt_vault_names_itself_and_the_command_that_sets_it_aside(
    vault: Vault, home: Path
) -> None:
    written(vault, home)
    (home / "vault.bin").write_bytes(os.urandom(300))
    with pytest.raises(VaultCorrupt) as err:
        vault.load()
    path = home / "vault.bin"
    assert err.value.path == path
    assert f"`mv {path} {path}.bad`" in str(err.value)  # shlex-quoted: nothing to quote here
    odd = VaultCorrupt(Path("/tmp/a b/vault.bin"))
    assert "`mv '/tmp/a b/vault.bin' '/tmp/a b/vault.bin'.bad`" in str(odd)


@pytest.mark.parametrize(
    ("log2_n", "r", "p", "taken"),
    [
        (1, 1, 1, True),
        (20, 8, 16, True),  # 128 MiB of scrypt memory
        (18, 32, 1, True),  # exactly 1 GiB: the most a header may ask for
        (19, 32, 1, False),  # 2 GiB
        (20, 9, 1, False),  # 1.1 GiB
        (0, 8, 1, False),
        (21, 1, 1, False),
        (10, 0, 1, False),
        (10, 33, 1, False),
        (10, 32, 1, True),
        (10, 8, 0, False),
        (10, 8, 17, False),
    ],
)
def test_scrypt_costs_a_header_may_ask_for(log2_n: int, r: int, p: int, taken: bool) -> None:
    raw = v.ScryptParams(log2_n, r, p, bytes(range(16))).encode()
    if taken:
        assert v.ScryptParams.decode(raw) == v.ScryptParams(log2_n, r, p, bytes(range(16)))
    else:
        with pytest.raises(v._Undecryptable):
            v.ScryptParams.decode(raw)


def test_readers_share_the_lock_and_a_writer_waits_for_them(vault: Vault, home: Path) -> None:
    """load and unlock take the vault lock shared (readers never wait for each other);
    update takes it exclusive."""
    import threading

    written(vault, home)
    with v.fsutil.locked(vault.lock_path, shared=True):  # another reader, holding on
        done = threading.Event()
        reader = threading.Thread(target=lambda: (vault.load(), done.set()))
        reader.start()
        assert done.wait(10), "load waited for another reader"
        reader.join()
        wrote = threading.Event()
        writer = threading.Thread(target=lambda: (vault.update(add_profile), wrote.set()))
        writer.start()
        assert not wrote.wait(0.3), "update did not wait for the reader"
    assert wrote.wait(10)
    writer.join()


def test_a_key_left_pending_by_a_crashed_rekey_is_moved_into_place_by_a_writer_only(
    tmp_path: Path,
) -> None:
    """A rekey of a key-file vault that crashed after writing the vault with its new key,
    before moving that key into place: a reader (``load``, under a shared lock) opens the
    vault with the waiting key and moves nothing; the next writer (``update``, exclusive)
    moves it into place. Each crash point is tried until one leaves the key waiting."""
    for crash_at in range(1, 40):
        home = tmp_path / f"crash-{crash_at}"
        setup = pvault(home, wrong_passphrase_delay=0.0)
        setup.update(add_profile)
        old_key = (home / "vault.key").read_bytes()
        done = subprocess.run(
            [sys.executable, "-c", CRASHER, str(home), "key-file", "key-file", str(crash_at)],
            text=True,
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert done.returncode in (0, 70), done.stderr
        pending = home / "vault.key.new"
        if pending.exists() and (home / "vault.key").read_bytes() == old_key:
            new_key = pending.read_bytes()
            if header_of(home).params == v.key_id(new_key):
                break
        assert done.returncode == 70, "the rekey completed without ever leaving a key waiting"
    else:
        raise AssertionError("no crash point left the new key waiting")
    reader = pvault(home, wrong_passphrase_delay=0.0)
    assert reader.load().profiles["default"].secret == SECRET
    assert pending.read_bytes() == new_key and (home / "vault.key").read_bytes() == old_key
    pvault(home, wrong_passphrase_delay=0.0).update(lambda d: None)
    assert not pending.exists() and (home / "vault.key").read_bytes() == new_key
    assert pvault(home, wrong_passphrase_delay=0.0).load().profiles["default"].secret == SECRET
