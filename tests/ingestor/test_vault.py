"""Tests for ingestor.connections.vault: AES-256-GCM round trips, tamper and aad checks, rotation, parse errors."""

from __future__ import annotations

import base64
import copy
import pickle
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingestor.connections.vault import (
    DecryptionFailedError,
    KeyringConfigError,
    MalformedCiphertextError,
    MasterKeyring,
    UnknownKeyIdError,
    VaultError,
    associated_data,
    ciphertext_key_id,
    generate_master_key,
)
from ingestor.errors import IngestError

SECRET = "rk_live_51HxYzAbCdEfGhIjKlMnOpQrStUvWxYz0123456789"
AAD = associated_data(tenant_id="t_1", connection_id="c_1", purpose="stripe_key")
KEY1 = bytes(range(32))
KEY2 = bytes(range(100, 132))


def b64(key: bytes) -> str:
    """Encode a key the way the setting expects: base64url without padding."""
    return base64.urlsafe_b64encode(key).rstrip(b"=").decode()


def ring(*entries: tuple[str, bytes]) -> MasterKeyring:
    """Build a keyring from (kid, key) pairs; the first is current."""
    return MasterKeyring.from_setting(",".join(f"{kid}:{b64(key)}" for kid, key in entries))


# --- round trip and format -------------------------------------------------------------------------


def test_round_trip() -> None:
    keyring = ring(("k1", KEY1))
    blob = keyring.encrypt(SECRET, AAD)
    assert keyring.decrypt(blob, AAD) == SECRET


@given(st.text(max_size=300), st.binary(min_size=1, max_size=64))
@settings(max_examples=100)
def test_round_trip_any_text(plaintext: str, aad: bytes) -> None:
    keyring = ring(("k1", KEY1))
    assert keyring.decrypt(keyring.encrypt(plaintext, aad), aad) == plaintext


def test_ciphertext_layout() -> None:
    blob = ring(("k1", KEY1)).encrypt(SECRET, AAD)
    assert blob[0] == 1
    assert blob[1] == 2 and blob[2:4] == b"k1"
    assert len(blob) == 4 + 12 + len(SECRET.encode()) + 16
    assert SECRET.encode() not in blob
    assert ciphertext_key_id(blob) == "k1"


def test_nonces_are_fresh() -> None:
    keyring = ring(("k1", KEY1))
    assert keyring.encrypt(SECRET, AAD) != keyring.encrypt(SECRET, AAD)


# --- tampering and associated data ------------------------------------------------------------------


def test_flipping_any_byte_is_detected() -> None:
    keyring = ring(("k1", KEY1))
    blob = keyring.encrypt(SECRET, AAD)
    for index in range(len(blob)):
        for bit in (0x01, 0x80):
            tampered = bytearray(blob)
            tampered[index] ^= bit
            with pytest.raises(VaultError):
                keyring.decrypt(bytes(tampered), AAD)


def test_tampered_body_is_a_decryption_failure() -> None:
    keyring = ring(("k1", KEY1))
    blob = bytearray(keyring.encrypt(SECRET, AAD))
    blob[-1] ^= 1
    with pytest.raises(DecryptionFailedError) as caught:
        keyring.decrypt(bytes(blob), AAD)
    assert caught.value.retriable is False


def test_truncated_and_foreign_blobs_are_malformed() -> None:
    keyring = ring(("k1", KEY1))
    blob = keyring.encrypt(SECRET, AAD)
    for bad in (b"", b"\x01", blob[:20], b"\x02" + blob[1:], b"gAAAAAB-fernet-token"):
        with pytest.raises(MalformedCiphertextError):
            keyring.decrypt(bad, AAD)


@pytest.mark.parametrize(
    "other",
    [
        associated_data(tenant_id="t_2", connection_id="c_1", purpose="stripe_key"),
        associated_data(tenant_id="t_1", connection_id="c_2", purpose="stripe_key"),
        associated_data(tenant_id="t_1", connection_id="c_1", purpose="webhook_secret"),
    ],
)
def test_wrong_associated_data_is_refused(other: bytes) -> None:
    keyring = ring(("k1", KEY1))
    blob = keyring.encrypt(SECRET, AAD)
    with pytest.raises(DecryptionFailedError) as caught:
        keyring.decrypt(blob, other)
    assert SECRET not in str(caught.value)


def test_empty_associated_data_is_refused() -> None:
    keyring = ring(("k1", KEY1))
    with pytest.raises(VaultError):
        keyring.encrypt(SECRET, b"")
    with pytest.raises(VaultError):
        keyring.decrypt(keyring.encrypt(SECRET, AAD), b"")


def test_associated_data_format_and_ambiguity_guard() -> None:
    assert AAD == b"tenant:t_1|connection:c_1|stripe_key"
    with pytest.raises(VaultError):
        associated_data(tenant_id="t_1|connection:x", connection_id="c_1", purpose="stripe_key")
    with pytest.raises(VaultError):
        associated_data(tenant_id="", connection_id="c_1", purpose="stripe_key")


def test_the_wrong_key_with_the_same_id_fails_authentication() -> None:
    blob = ring(("k1", KEY1)).encrypt(SECRET, AAD)
    with pytest.raises(DecryptionFailedError):
        ring(("k1", KEY2)).decrypt(blob, AAD)


# --- rotation -------------------------------------------------------------------------------------------


def test_rotation() -> None:
    old_ring = ring(("k1", KEY1))
    old_blob = old_ring.encrypt(SECRET, AAD)
    assert not old_ring.needs_reencrypt(old_blob)

    rotating = ring(("k2", KEY2), ("k1", KEY1))
    assert rotating.current == "k2"
    assert rotating.decrypt(old_blob, AAD) == SECRET
    assert rotating.needs_reencrypt(old_blob)
    new_blob = rotating.reencrypt(old_blob, AAD)
    assert ciphertext_key_id(new_blob) == "k2"
    assert not rotating.needs_reencrypt(new_blob)

    rotated = ring(("k2", KEY2))
    assert rotated.decrypt(new_blob, AAD) == SECRET
    with pytest.raises(UnknownKeyIdError) as caught:
        rotated.decrypt(old_blob, AAD)
    assert caught.value.key_id == "k1"
    assert caught.value.retriable is False


def test_reencrypt_checks_the_associated_data() -> None:
    rotating = ring(("k2", KEY2), ("k1", KEY1))
    old_blob = ring(("k1", KEY1)).encrypt(SECRET, AAD)
    with pytest.raises(DecryptionFailedError):
        rotating.reencrypt(old_blob, b"tenant:t_2|connection:c_1|stripe_key")


# --- parsing ---------------------------------------------------------------------------------------------


def test_setting_first_entry_is_current_and_whitespace_is_ignored() -> None:
    keyring = MasterKeyring.from_setting(f" k2:{b64(KEY2)} , k1:{b64(KEY1)}=")
    assert keyring.current == "k2"
    assert keyring.key_ids == ("k2", "k1")


def test_padded_base64url_is_accepted() -> None:
    padded = base64.urlsafe_b64encode(KEY1).decode()
    assert padded.endswith("=")
    assert MasterKeyring.from_setting(f"k1:{padded}").current == "k1"


def test_from_file(tmp_path: Path) -> None:
    path = tmp_path / "master.keys"
    path.write_text(f"# newest first\n\nk2:{b64(KEY2)}\n  k1:{b64(KEY1)}  \n")
    keyring = MasterKeyring.from_file(path)
    assert keyring.key_ids == ("k2", "k1")
    blob = ring(("k1", KEY1)).encrypt(SECRET, AAD)
    assert keyring.decrypt(blob, AAD) == SECRET


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(KeyringConfigError):
        MasterKeyring.from_file(tmp_path / "absent")


def test_non_utf8_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "master.keys"
    path.write_bytes(b"k1:\xff\xfe" + KEY1)
    with pytest.raises(KeyringConfigError) as caught:
        MasterKeyring.from_file(path)
    assert "xff" not in str(caught.value)


BAD_SETTINGS = {
    "empty": "",
    "only commas": " , ",
    "no key id": b64(KEY1),
    "empty key id": f":{b64(KEY1)}",
    "bad key id": f"k 1:{b64(KEY1)}",
    "too short": f"k1:{b64(KEY1[:16])}",
    "too long": f"k1:{b64(KEY1 + KEY2)}",
    "standard base64 chars": "k1:" + base64.b64encode(b"\xfb" * 32).decode(),
    "not base64": "k1:" + "!" * 43,
    "bad padding": f"k1:{b64(KEY1)}===",
    "one char too many": f"k1:{b64(KEY1)}A",
    "duplicate id": f"k1:{b64(KEY1)},k1:{b64(KEY2)}",
    "empty entry": f"k1:{b64(KEY1)},,k2:{b64(KEY2)}",
}


@pytest.mark.parametrize("value", BAD_SETTINGS.values(), ids=BAD_SETTINGS.keys())
def test_bad_settings_are_refused_without_echoing_keys(value: str) -> None:
    with pytest.raises(KeyringConfigError) as caught:
        MasterKeyring.from_setting(value)
    message = str(caught.value)
    for secret in (b64(KEY1), b64(KEY2), b64(KEY1)[:8], b64(KEY2)[:8], "!!!!!!!!"):
        assert secret not in message
    assert caught.value.retriable is False


def test_constructor_checks_lengths_and_current() -> None:
    with pytest.raises(KeyringConfigError):
        MasterKeyring({"k1": KEY1[:31]}, current="k1")
    with pytest.raises(KeyringConfigError):
        MasterKeyring({"k1": KEY1}, current="k2")
    with pytest.raises(KeyringConfigError):
        MasterKeyring({}, current="k1")


# --- key generation and hiding the keys ---------------------------------------------------------------


def test_generate_master_key_makes_a_usable_entry() -> None:
    entry = generate_master_key()
    key_id, _, encoded = entry.partition(":")
    assert len(base64.urlsafe_b64decode(encoded + "=")) == 32
    keyring = MasterKeyring.from_setting(entry)
    assert keyring.current == key_id
    assert generate_master_key() != entry
    assert generate_master_key("k9").startswith("k9:")
    with pytest.raises(KeyringConfigError):
        generate_master_key("bad id")


def test_errors_are_ingest_errors_with_stable_codes() -> None:
    assert issubclass(VaultError, IngestError)
    assert KeyringConfigError("x").code == "master_key_config_invalid"
    assert UnknownKeyIdError("k1").code == "unknown_master_key"
    assert DecryptionFailedError("x").code == "decryption_failed"
    assert MalformedCiphertextError("x").code == "malformed_ciphertext"


def test_repr_and_str_never_show_key_material() -> None:
    keyring = ring(("k2", KEY2), ("k1", KEY1))
    assert repr(keyring) == str(keyring) == "MasterKeyring(current='k2', key_ids=('k2', 'k1'))"
    for text in (repr(keyring), f"{keyring}", repr([keyring])):
        for key in (KEY1, KEY2):
            assert b64(key) not in text and b64(key)[:6] not in text
            assert repr(key) not in text and key.hex() not in text


def test_keyring_cannot_be_pickled_or_copied() -> None:
    keyring = ring(("k1", KEY1))
    with pytest.raises(TypeError):
        pickle.dumps(keyring)
    with pytest.raises(TypeError):
        copy.deepcopy(keyring)


def test_decryption_errors_never_contain_plaintext_or_keys() -> None:
    keyring = ring(("k1", KEY1))
    blob = bytearray(keyring.encrypt(SECRET, AAD))
    blob[20] ^= 1
    with pytest.raises(VaultError) as caught:
        keyring.decrypt(bytes(blob), AAD)
    text = str(caught.value) + repr(caught.value)
    assert SECRET not in text and SECRET[-8:] not in text and b64(KEY1) not in text
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
