"""Encryption at rest of secret data in the store: AES-256-GCM (the cryptography package).

The key file (``--encryption-key-file``) holds base64 keys of 32 bytes, one a line (``#``
comments allowed). The first key encrypts; every key decrypts. A key's id is the first 8 hex
digits of its SHA-256, recorded beside each value it sealed, so a store can hold values
sealed by several keys while they rotate: put the new key first, keep the old one until the
daemon has started once (it re-seals every value with the first key at start), then drop it.

Each value is bound to where it lives (its table, key and origin) as associated data, so a
sealed value copied to another row does not open.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kds.errors import ConfigError, StoreError
from kds.secret_files import check_secret_file

__all__ = ["DataCipher", "load_key_file"]

_NONCE = 12


def key_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:8]


class DataCipher:
    def __init__(self, keys: list[bytes]):
        if not keys:
            raise ValueError("at least one key")
        self._keys = {key_id(k): AESGCM(k) for k in keys}
        self.current = key_id(keys[0])

    @property
    def key_ids(self) -> frozenset[str]:
        return frozenset(self._keys)

    def seal(self, plain: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(_NONCE)
        return nonce + self._keys[self.current].encrypt(nonce, plain, aad)

    def open(self, sealed: bytes, kid: str, aad: bytes) -> bytes:
        aead = self._keys.get(kid)
        if aead is None:
            raise StoreError(
                f"a stored value is encrypted with key {kid}, which --encryption-key-file "
                "does not hold"
            )
        try:
            return aead.decrypt(sealed[:_NONCE], sealed[_NONCE:], aad)
        except InvalidTag:
            raise StoreError(
                f"a stored value does not decrypt with key {kid}: the store was altered"
            ) from None


def load_key_file(path: Path) -> DataCipher:
    """Read and check the key file; errors name the file and line, never a key."""
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"--encryption-key-file {path}: cannot read it: {e.strerror}") from None
    check_secret_file(path, "--encryption-key-file", strict=True)
    keys = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            key = base64.b64decode(line, validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if len(key) != 32:
            raise ConfigError(
                f"--encryption-key-file {path} line {n}: not a base64 key of 32 bytes "
                "(make one with: head -c 32 /dev/urandom | base64)"
            )
        keys.append(key)
    if not keys:
        raise ConfigError(f"--encryption-key-file {path}: no key in it")
    return DataCipher(keys)
