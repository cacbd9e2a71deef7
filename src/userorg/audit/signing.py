"""Ed25519 signatures for audit exports and retention checkpoints.

What is signed is always a SHA-256 digest (32 bytes): of the export file, or of a checkpoint's
canonical JSON. Ed25519 signs the whole message at once, so signing the digest keeps exports
streamed in constant memory, and standard tools verify it::

    openssl dgst -sha256 -binary export.ndjson > export.sha256
    openssl pkeyutl -verify -pubin -inkey key.pem -rawin -in export.sha256 -sigfile export.sig

Two backends behind one interface: ``LocalSigner`` (keys in the database, the private half
envelope-encrypted by the keystore) and ``TransitSigner`` (Vault/OpenBao Transit, ``ed25519``
key; the private key never leaves Vault). Key ids are RFC 7638 thumbprints of the public key,
so the same key has the same id wherever it is listed. Rotation keeps old public keys listed
(``retired``), so exports signed before a rotation stay verifiable.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
    load_pem_public_key,
)
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from userorg.audit.models import AuditSigningKey
from userorg.db import utcnow
from userorg.errors import ServiceUnavailable
from userorg.platform.keystore import Keystore

ALGORITHM = "Ed25519"


@dataclass(frozen=True)
class PublicKeyInfo:
    key_id: str
    public_key_pem: str
    status: str  # active | retired
    created_at: dt.datetime | None
    backend: str
    algorithm: str = ALGORITHM


@dataclass(frozen=True)
class Signature:
    key_id: str
    value: bytes  # 64 raw bytes

    @property
    def b64(self) -> str:
        return base64.b64encode(self.value).decode()


class AuditSigner(Protocol):
    name: str

    async def start(self) -> None: ...

    async def active_key_id(self) -> str: ...

    async def sign(self, digest: bytes, *, key_id: str) -> Signature: ...

    async def public_keys(self) -> list[PublicKeyInfo]: ...

    async def rotate(self) -> PublicKeyInfo: ...


class SigningKeyChanged(ServiceUnavailable):
    """The key chosen for a job was rotated away before signing; the job retries."""

    code = "signing_key_changed"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def key_id_for(public_key: Ed25519PublicKey) -> str:
    """RFC 7638 JWK thumbprint of the Ed25519 public key."""
    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    canonical = f'{{"crv":"Ed25519","kty":"OKP","x":"{_b64url(raw)}"}}'
    return _b64url(hashlib.sha256(canonical.encode()).digest())


def public_pem(public_key: Ed25519PublicKey) -> str:
    return public_key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()


def load_public_key(pem: bytes | str) -> Ed25519PublicKey:
    data = pem.encode() if isinstance(pem, str) else pem
    key = load_pem_public_key(data)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    return key


def verify_signature(public_key: Ed25519PublicKey, signature: bytes, digest: bytes) -> bool:
    try:
        public_key.verify(signature, digest)
    except InvalidSignature:
        return False
    return True


class LocalSigner:
    name = "local"

    def __init__(
        self,
        *,
        session_factory: async_sessionmaker[AsyncSession],
        read_session_factory: async_sessionmaker[AsyncSession],
        keystore: Keystore,
    ) -> None:
        self._session_factory = session_factory
        self._read_session_factory = read_session_factory
        self._keystore = keystore
        self._private: dict[str, Ed25519PrivateKey] = {}

    async def start(self) -> None:
        async with self._session_factory() as session:
            active = (
                await session.execute(
                    select(AuditSigningKey.key_id).where(AuditSigningKey.status == "active")
                )
            ).first()
            if active is None:
                await self._create(session)
                await session.commit()

    async def _create(self, session: AsyncSession) -> AuditSigningKey:
        private = Ed25519PrivateKey.generate()
        key_id = key_id_for(private.public_key())
        pem = private.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
        row = AuditSigningKey(
            key_id=key_id,
            public_key_pem=public_pem(private.public_key()),
            private_key_encrypted=await self._keystore.encrypt(
                pem, context=f"audit_signing_key:{key_id}"
            ),
            status="active",
            created_at=utcnow(),
        )
        session.add(row)
        return row

    async def _rows(self) -> list[AuditSigningKey]:
        async with self._read_session_factory() as session:
            return list(
                (
                    await session.execute(
                        select(AuditSigningKey).order_by(AuditSigningKey.created_at.desc())
                    )
                ).scalars()
            )

    async def active_key_id(self) -> str:
        rows = [r for r in await self._rows() if r.status == "active"]
        if not rows:
            await self.start()
            rows = [r for r in await self._rows() if r.status == "active"]
        return rows[0].key_id

    async def sign(self, digest: bytes, *, key_id: str) -> Signature:
        private = self._private.get(key_id)
        if private is None:
            async with self._read_session_factory() as session:
                row = await session.get(AuditSigningKey, key_id)
            if row is None or row.status != "active":
                raise SigningKeyChanged(f"Audit signing key {key_id} is no longer active")
            pem = await self._keystore.decrypt(
                row.private_key_encrypted, context=f"audit_signing_key:{key_id}"
            )
            loaded = load_pem_private_key(pem, password=None)
            assert isinstance(loaded, Ed25519PrivateKey)
            private = self._private[key_id] = loaded
        return Signature(key_id, private.sign(digest))

    async def public_keys(self) -> list[PublicKeyInfo]:
        return [
            PublicKeyInfo(r.key_id, r.public_key_pem, r.status, r.created_at, self.name)
            for r in await self._rows()
        ]

    async def rotate(self) -> PublicKeyInfo:
        async with self._session_factory() as session:
            for row in (
                await session.execute(
                    select(AuditSigningKey).where(AuditSigningKey.status == "active")
                )
            ).scalars():
                row.status = "retired"
                row.retired_at = utcnow()
            created = await self._create(session)
            await session.commit()
        self._private.clear()
        return PublicKeyInfo(
            created.key_id, created.public_key_pem, "active", created.created_at, self.name
        )


class TransitSigner:
    """Vault/OpenBao Transit ``ed25519`` key: every key version is listed and verifiable."""

    name = "vault"

    def __init__(self, client: Any, *, mount: str, key_name: str) -> None:
        self._client = client
        self._mount = mount
        self._key_name = key_name
        self._started = False

    async def _call(self, operation: str, func: Any) -> Any:
        from userorg.platform.keystore import KeystoreError, _is_connection_error
        from userorg.platform.vault import VaultUnavailable

        try:
            return await asyncio.to_thread(func)
        except Exception as error:
            if _is_connection_error(error):
                raise VaultUnavailable(operation, error) from error
            raise KeystoreError(f"Transit {operation} failed: {error}") from error

    async def start(self) -> None:
        if self._started:
            return
        from userorg.platform.vault import ensure_transit_key

        await self._call(
            "ensure_key",
            lambda: ensure_transit_key(
                self._client, mount=self._mount, name=self._key_name, key_type="ed25519"
            ),
        )
        self._started = True

    async def _versions(self) -> tuple[dict[str, tuple[int, PublicKeyInfo]], int]:
        await self.start()
        response = await self._call(
            "read_key",
            lambda: self._client.secrets.transit.read_key(
                name=self._key_name, mount_point=self._mount
            ),
        )
        data = response["data"]
        latest = int(data["latest_version"])
        versions: dict[str, tuple[int, PublicKeyInfo]] = {}
        for version_text, entry in data["keys"].items():
            version = int(version_text)
            public = Ed25519PublicKey.from_public_bytes(base64.b64decode(entry["public_key"]))
            created = _parse_time(entry.get("creation_time"))
            info = PublicKeyInfo(
                key_id_for(public),
                public_pem(public),
                "active" if version == latest else "retired",
                created,
                self.name,
            )
            versions[info.key_id] = (version, info)
        return versions, latest

    async def active_key_id(self) -> str:
        versions, latest = await self._versions()
        return next(key_id for key_id, (v, _info) in versions.items() if v == latest)

    async def sign(self, digest: bytes, *, key_id: str) -> Signature:
        versions, latest = await self._versions()
        entry = versions.get(key_id)
        if entry is None or entry[0] != latest:
            raise SigningKeyChanged(f"Audit signing key {key_id} is no longer active")
        response = await self._call(
            "sign",
            lambda: self._client.secrets.transit.sign_data(
                name=self._key_name,
                hash_input=base64.b64encode(digest).decode(),
                key_version=entry[0],
                mount_point=self._mount,
            ),
        )
        signature = str(response["data"]["signature"]).rsplit(":", 1)[-1]
        return Signature(key_id, base64.b64decode(signature))

    async def public_keys(self) -> list[PublicKeyInfo]:
        versions, _latest = await self._versions()
        ordered = sorted(versions.values(), key=lambda item: item[0], reverse=True)
        return [info for _version, info in ordered]

    async def rotate(self) -> PublicKeyInfo:
        await self.start()
        await self._call(
            "rotate",
            lambda: self._client.secrets.transit.rotate_key(
                name=self._key_name, mount_point=self._mount
            ),
        )
        return (await self.public_keys())[0]


def _parse_time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    # Transit gives nanoseconds ("2026-11-25T12:28:42.610668833Z"); keep microseconds.
    head, _, rest = value.rstrip("Z").partition(".")
    fraction = (rest + "000000")[:6] if rest else "000000"
    return dt.datetime.fromisoformat(f"{head}.{fraction}+00:00")
