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
from typing import Any, Protocol

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


class VaultTransitKeystore:
    """Envelope encryption with Vault/OpenBao Transit (production).

    A data key (AES-256) comes from Transit's ``datakey`` endpoint: Transit returns it in plain
    and wrapped under the named Transit key. Secrets are sealed locally with AES-256-GCM (the
    record's context as associated data) and stored with the wrapped data key; the plain data
    key never touches storage. One data key serves ``data_key_ttl`` seconds of encryptions;
    unwrapped keys are cached, so steady-state encrypt/decrypt calls cost no round trip.
    Rotating the Transit key (``bao write -f transit/keys/<name>/rotate``) keeps old wrapped
    keys readable; ``rewrap`` is not needed for correctness.
    """

    name = "vault"
    _PREFIX = "v1:vault:"

    def __init__(
        self,
        client: object,
        *,
        mount: str,
        key_name: str,
        data_key_ttl: float = 3600.0,
        cache_size: int = 1024,
    ) -> None:
        import asyncio
        from collections import OrderedDict

        self._client: Any = client
        self._mount = mount
        self._key_name = key_name
        self._data_key_ttl = data_key_ttl
        self._cache_size = cache_size
        self._current: tuple[bytes, str, float] | None = None
        self._unwrapped: OrderedDict[str, bytes] = OrderedDict()
        self._lock = asyncio.Lock()
        self._key_checked = False

    async def _call(self, operation: str, func: Callable[[], Any]) -> Any:
        import asyncio

        from userorg.platform.vault import VaultUnavailable

        try:
            return await asyncio.to_thread(func)
        except Exception as error:
            if _is_connection_error(error):
                raise VaultUnavailable(operation, error) from error
            raise KeystoreError(f"Transit {operation} failed: {error}") from error

    async def _data_key(self) -> tuple[bytes, str]:
        import time

        async with self._lock:
            now = time.monotonic()
            if self._current is not None and now - self._current[2] < self._data_key_ttl:
                return self._current[0], self._current[1]
            if not self._key_checked:
                from userorg.platform.vault import ensure_transit_key

                await self._call(
                    "ensure_key",
                    lambda: ensure_transit_key(
                        self._client,
                        mount=self._mount,
                        name=self._key_name,
                        key_type="aes256-gcm96",
                    ),
                )
                self._key_checked = True
            response = await self._call(
                "datakey",
                lambda: self._client.secrets.transit.generate_data_key(
                    name=self._key_name, key_type="plaintext", mount_point=self._mount
                ),
            )
            plain = base64.b64decode(response["data"]["plaintext"])
            wrapped = str(response["data"]["ciphertext"])
            self._current = (plain, wrapped, now)
            self._remember(wrapped, plain)
            return plain, wrapped

    def _remember(self, wrapped: str, plain: bytes) -> None:
        self._unwrapped[wrapped] = plain
        self._unwrapped.move_to_end(wrapped)
        while len(self._unwrapped) > self._cache_size:
            self._unwrapped.popitem(last=False)

    async def _unwrap(self, wrapped: str) -> bytes:
        cached = self._unwrapped.get(wrapped)
        if cached is not None:
            return cached
        response = await self._call(
            "decrypt",
            lambda: self._client.secrets.transit.decrypt_data(
                name=self._key_name, ciphertext=wrapped, mount_point=self._mount
            ),
        )
        plain = base64.b64decode(response["data"]["plaintext"])
        self._remember(wrapped, plain)
        return plain

    async def encrypt(self, plaintext: bytes, *, context: str) -> str:
        data_key, wrapped = await self._data_key()
        nonce = os.urandom(12)
        sealed = AESGCM(data_key).encrypt(nonce, plaintext, context.encode())
        return (
            self._PREFIX
            + base64.urlsafe_b64encode(wrapped.encode()).decode()
            + ":"
            + base64.urlsafe_b64encode(nonce + sealed).decode()
        )

    async def decrypt(self, ciphertext: str, *, context: str) -> bytes:
        if not ciphertext.startswith(self._PREFIX):
            raise KeystoreError("ciphertext was not produced by the Vault keystore")
        try:
            wrapped_part, sealed_part = ciphertext.removeprefix(self._PREFIX).split(":", 1)
            wrapped = base64.urlsafe_b64decode(wrapped_part).decode()
            raw = base64.urlsafe_b64decode(sealed_part)
        except ValueError as error:
            raise KeystoreError("malformed Vault keystore ciphertext") from error
        data_key = await self._unwrap(wrapped)
        try:
            return AESGCM(data_key).decrypt(raw[:12], raw[12:], context.encode())
        except Exception as error:
            raise KeystoreError("decryption failed (wrong key or context)") from error


def _is_connection_error(error: BaseException) -> bool:
    import requests

    return isinstance(error, requests.ConnectionError | requests.Timeout) or (
        type(error).__name__ in {"VaultDown", "InternalServerError", "BadGateway"}
    )
