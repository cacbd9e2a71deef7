"""Envelope encryption of secrets at rest (signing keys, TOTP secrets, outbox payloads).

Embedded mode keeps a 256-bit master key in the key directory (created on first use, mode
0600); ciphertexts are AES-256-GCM with a random nonce and the record's context as associated
data, so a ciphertext moved to another row or column fails to decrypt.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives.ciphers.aead import AESGCM


class Keystore(Protocol):
    name: str

    async def encrypt(self, plaintext: bytes, *, context: str) -> str: ...

    async def decrypt(self, ciphertext: str, *, context: str) -> bytes: ...


class KeystoreError(Exception):
    pass


class LocalKeystore:
    name = "local"
    _PREFIX = "v1:local:"

    def __init__(self, master_key: bytes | Callable[[], bytes]) -> None:
        self._load = master_key if callable(master_key) else (lambda: master_key)
        self._aead_instance: AESGCM | None = None

    @property
    def _aead(self) -> AESGCM:
        if self._aead_instance is None:
            key = self._load()
            if len(key) != 32:
                raise KeystoreError("the local master key must be 32 bytes")
            self._aead_instance = AESGCM(key)
        return self._aead_instance

    @classmethod
    def from_directory(cls, key_dir: Path) -> LocalKeystore:
        """The key file is read (or created) on first use, not at construction."""
        return cls(lambda: load_or_create_key_file(key_dir / "master.key"))

    async def encrypt(self, plaintext: bytes, *, context: str) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, plaintext, context.encode())
        return self._PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode()

    async def decrypt(self, ciphertext: str, *, context: str) -> bytes:
        if not ciphertext.startswith(self._PREFIX):
            raise KeystoreError("ciphertext was not produced by the local keystore")
        raw = base64.urlsafe_b64decode(ciphertext.removeprefix(self._PREFIX))
        try:
            return self._aead.decrypt(raw[:12], raw[12:], context.encode())
        except Exception as error:
            raise KeystoreError("decryption failed (wrong key or context)") from error


def load_or_create_key_file(path: Path) -> bytes:
    """Read a 32-byte key file, creating it atomically (0600) when it does not exist."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():
        key = os.urandom(32)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(key)
        try:
            os.link(tmp, path)  # fails if another process won the race; we then read theirs
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    key = path.read_bytes()
    if len(key) != 32:
        raise KeystoreError(f"{path} must hold exactly 32 bytes")
    return key
