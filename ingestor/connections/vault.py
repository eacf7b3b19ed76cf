"""Key vault crypto core: authenticated encryption of Stripe keys and webhook secrets (invariant 5).

Place in the flow: the control API encrypts a tenant's restricted key or webhook signing secret with
`MasterKeyring.encrypt` before the database layer stores the bytes, and the poller, importer and
webhook receiver decrypt them with `MasterKeyring.decrypt` when they need them. The master keys live
outside the database (a setting or a file); this module does no I/O apart from reading that file.

Ciphertext format (all integers unsigned)::

    version (1 byte, 0x01) | key-id length n (1 byte) | key id (n ASCII bytes) | nonce (12 bytes)
    | AES-256-GCM ciphertext with its 16-byte tag

The header (version, key id) is authenticated together with the caller's associated data, which binds
a ciphertext to its owner and purpose (see `associated_data`), so a blob copied to another tenant,
connection or field does not decrypt. A tampered blob and wrong associated data cannot be told apart:
both raise `DecryptionFailedError`. Rotation: put a new key first in the keyring, keep the old ones
after it, `reencrypt` every blob for which `needs_reencrypt` is true, then drop the old keys.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Final, NoReturn

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ingestor.errors import IngestError

__all__ = [
    "DecryptionFailedError",
    "KeyringConfigError",
    "MalformedCiphertextError",
    "MasterKeyring",
    "UnknownKeyIdError",
    "VaultError",
    "associated_data",
    "ciphertext_key_id",
    "generate_master_key",
]

FORMAT_VERSION: Final = 1
KEY_BYTES: Final = 32
NONCE_BYTES: Final = 12
TAG_BYTES: Final = 16

_KEY_ID: Final = re.compile(r"[A-Za-z0-9._-]{1,32}")
_BASE64URL: Final = re.compile(r"[A-Za-z0-9_-]+={0,2}")


class VaultError(IngestError):
    """Base error of the key vault; never retriable and never carries plaintext or key material."""

    retriable = False
    code = "vault_error"


class KeyringConfigError(VaultError):
    """The master key setting or file is malformed: fix the configuration."""

    code = "master_key_config_invalid"


class UnknownKeyIdError(VaultError):
    """The ciphertext was made with a master key that is not in the keyring: restore that key."""

    code = "unknown_master_key"

    def __init__(self, key_id: str) -> None:
        super().__init__(
            f"ciphertext was encrypted with master key {key_id!r}, which is not in the keyring"
        )
        self.key_id = key_id


class MalformedCiphertextError(VaultError):
    """The bytes are not a vault ciphertext (wrong version, truncated or garbled header)."""

    code = "malformed_ciphertext"


class DecryptionFailedError(VaultError):
    """Authentication failed: the ciphertext was altered or the associated data does not match."""

    code = "decryption_failed"


def associated_data(*, tenant_id: str, connection_id: str, purpose: str) -> bytes:
    """Return the associated data binding a ciphertext to one tenant, connection and purpose."""
    parts = {"tenant_id": tenant_id, "connection_id": connection_id, "purpose": purpose}
    for name, value in parts.items():
        # A "|" inside a part would let two different owners produce the same bytes.
        if not value or "|" in value:
            raise VaultError(f"{name} must be non-empty and must not contain '|'")
    return f"tenant:{tenant_id}|connection:{connection_id}|{purpose}".encode()


def generate_master_key(key_id: str | None = None) -> str:
    """Return a fresh keyring entry "kid:base64url" holding a random 256-bit key."""
    if key_id is None:
        key_id = "k" + secrets.token_hex(4)
    _check_key_id(key_id, "the requested key id")
    encoded = base64.urlsafe_b64encode(AESGCM.generate_key(bit_length=256)).rstrip(b"=")
    return f"{key_id}:{encoded.decode('ascii')}"


def ciphertext_key_id(blob: bytes) -> str:
    """Return the id of the master key a ciphertext was made with."""
    key_id, _ = _parse_header(blob)
    return key_id


class MasterKeyring:
    """The master keys by id, one of them current; encrypts with the current key, decrypts with any."""

    __slots__ = ("_ciphers", "_current")

    def __init__(self, keys: Mapping[str, bytes], current: str) -> None:
        if not keys:
            raise KeyringConfigError("the master keyring is empty")
        ciphers: dict[str, AESGCM] = {}
        for key_id, key in keys.items():
            _check_key_id(key_id, "a master key id")
            if len(key) != KEY_BYTES:
                raise KeyringConfigError(
                    f"master key {key_id!r} is {len(key)} bytes long; AES-256 needs {KEY_BYTES}"
                )
            ciphers[key_id] = AESGCM(bytes(key))
        if current not in ciphers:
            raise KeyringConfigError(f"the current master key {current!r} is not in the keyring")
        self._ciphers: Final = ciphers
        self._current: Final = current

    @classmethod
    def from_setting(cls, value: str) -> MasterKeyring:
        """Parse "kid:base64url,kid:base64url"; the first entry is the current key."""
        return cls._from_entries([entry.strip() for entry in value.split(",")], "the setting")

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> MasterKeyring:
        """Read one "kid:base64url" entry per line (blank and # lines skipped); the first is current."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise KeyringConfigError(f"cannot read the master key file {os.fspath(path)!r}") from exc
        except UnicodeDecodeError:
            # The decoder's message quotes the offending byte, which may be key material.
            raise KeyringConfigError(
                f"the master key file {os.fspath(path)!r} is not UTF-8 text"
            ) from None
        lines = [line.strip() for line in text.splitlines()]
        entries = [line for line in lines if line and not line.startswith("#")]
        return cls._from_entries(entries, f"the file {os.fspath(path)!r}")

    @classmethod
    def _from_entries(cls, entries: list[str], source: str) -> MasterKeyring:
        """Build a keyring from "kid:base64url" entries, naming bad entries by position only."""
        if not any(entries):
            raise KeyringConfigError(f"no master keys in {source}")
        keys: dict[str, bytes] = {}
        for position, entry in enumerate(entries, start=1):
            key_id, separator, encoded = entry.partition(":")
            where = f"master key entry {position} in {source}"
            if not separator or not _KEY_ID.fullmatch(key_id):
                raise KeyringConfigError(
                    f"{where} must look like 'kid:base64url' with a key id of 1-32 characters "
                    "from A-Z a-z 0-9 . _ -"
                )
            if key_id in keys:
                raise KeyringConfigError(f"{where} repeats an earlier key id")
            keys[key_id] = _decode_key(encoded, where)
        return cls(keys, current=next(iter(keys)))

    @property
    def current(self) -> str:
        """Return the id of the key new ciphertexts are made with."""
        return self._current

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Return the ids of all keys, the current one first."""
        return (self._current, *(k for k in self._ciphers if k != self._current))

    def encrypt(self, plaintext: str, aad: bytes) -> bytes:
        """Encrypt `plaintext` with the current key, bound to the associated data `aad`."""
        _check_aad(aad)
        header = _header(self._current)
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[self._current].encrypt(nonce, plaintext.encode("utf-8"), header + aad)
        return header + nonce + sealed

    def decrypt(self, blob: bytes, aad: bytes) -> str:
        """Decrypt a ciphertext made by `encrypt` with the same associated data."""
        _check_aad(aad)
        key_id, body_start = _parse_header(blob)
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise UnknownKeyIdError(key_id)
        nonce = blob[body_start : body_start + NONCE_BYTES]
        sealed = blob[body_start + NONCE_BYTES :]
        try:
            plaintext = cipher.decrypt(nonce, sealed, blob[:body_start] + aad)
        except InvalidTag:
            raise DecryptionFailedError(
                "ciphertext failed authentication: it was altered, or it belongs to another "
                "owner or purpose than the associated data says"
            ) from None
        try:
            return plaintext.decode("utf-8")
        except UnicodeDecodeError:
            # Authenticated but not text: only possible if something else wrote it with our key.
            raise MalformedCiphertextError("decrypted value is not UTF-8 text") from None

    def needs_reencrypt(self, blob: bytes) -> bool:
        """Return whether a ciphertext was made with a key other than the current one."""
        return ciphertext_key_id(blob) != self._current

    def reencrypt(self, blob: bytes, aad: bytes) -> bytes:
        """Decrypt a ciphertext and encrypt it again with the current key and a fresh nonce."""
        return self.encrypt(self.decrypt(blob, aad), aad)

    def __repr__(self) -> str:
        return f"MasterKeyring(current={self._current!r}, key_ids={self.key_ids!r})"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        # Refuse pickling: a pickled keyring would carry the key bytes into caches or task queues.
        raise TypeError("MasterKeyring cannot be pickled")


def _check_key_id(key_id: str, what: str) -> None:
    """Raise KeyringConfigError unless `key_id` is 1-32 characters of A-Z a-z 0-9 . _ -."""
    if not _KEY_ID.fullmatch(key_id):
        raise KeyringConfigError(f"{what} must be 1-32 characters from A-Z a-z 0-9 . _ -")


def _check_aad(aad: bytes) -> None:
    """Refuse empty associated data, which would leave a ciphertext bound to nothing."""
    if not isinstance(aad, bytes) or not aad:
        raise VaultError("associated data must be non-empty bytes naming the owner and purpose")


def _decode_key(encoded: str, where: str) -> bytes:
    """Decode a base64url key (padding optional) and check it is 32 bytes."""
    encoded = encoded.strip()
    if not _BASE64URL.fullmatch(encoded):
        raise KeyringConfigError(f"{where}: the key is not base64url text")
    unpadded = encoded.rstrip("=")
    try:
        key = base64.urlsafe_b64decode(unpadded + "=" * (-len(unpadded) % 4))
    except (binascii.Error, ValueError):
        raise KeyringConfigError(f"{where}: the key is not valid base64url") from None
    if len(key) != KEY_BYTES:
        raise KeyringConfigError(
            f"{where}: the key decodes to {len(key)} bytes; AES-256 needs {KEY_BYTES}"
        )
    return key


def _header(key_id: str) -> bytes:
    """Return the version byte and length-prefixed key id that start every ciphertext."""
    encoded = key_id.encode("ascii")
    return bytes((FORMAT_VERSION, len(encoded))) + encoded


def _parse_header(blob: bytes) -> tuple[str, int]:
    """Return the key id of a ciphertext and the offset where its nonce starts."""
    if len(blob) < 2 or blob[0] != FORMAT_VERSION:
        raise MalformedCiphertextError("not a vault ciphertext (unknown format version)")
    body_start = 2 + blob[1]
    if len(blob) < body_start + NONCE_BYTES + TAG_BYTES:
        raise MalformedCiphertextError("vault ciphertext is truncated")
    try:
        key_id = blob[2:body_start].decode("ascii")
    except UnicodeDecodeError:
        raise MalformedCiphertextError("vault ciphertext has a garbled key id") from None
    if not _KEY_ID.fullmatch(key_id):
        raise MalformedCiphertextError("vault ciphertext has a garbled key id")
    return key_id, body_start
