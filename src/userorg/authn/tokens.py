"""Access tokens: short-lived EdDSA (Ed25519) JWTs with a ``kid``, and the JWKS.

Signing keys live in the database, their private halves envelope-encrypted by the keystore.
Every replica keeps the key ring in memory and reloads it when it sees an unknown ``kid``
(another replica rotated) or when its refresh interval has passed.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
)
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from userorg.authn.models import SigningKey
from userorg.errors import ServiceUnavailable
from userorg.platform.keystore import Keystore

ALGORITHM = "EdDSA"


class InvalidToken(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def public_jwk(public_key: Ed25519PublicKey) -> dict[str, str]:
    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519", "x": _b64(raw)}


def jwk_thumbprint(jwk: dict[str, str]) -> str:
    """RFC 7638 thumbprint: the key id."""
    canonical = f'{{"crv":"{jwk["crv"]}","kty":"{jwk["kty"]}","x":"{jwk["x"]}"}}'
    return _b64(hashlib.sha256(canonical.encode()).digest())


@dataclass(frozen=True)
class LoadedKey:
    kid: str
    status: str
    private_key: Ed25519PrivateKey | None
    public_key: Ed25519PublicKey
    jwk: dict[str, str]
    created_at: dt.datetime


class TokenService:
    def __init__(
        self,
        *,
        session_factory: async_sessionmaker[AsyncSession],
        read_session_factory: async_sessionmaker[AsyncSession],
        keystore: Keystore,
        issuer: str,
        access_token_ttl_seconds: int,
        refresh_interval_seconds: float = 60.0,
        max_token_ttl_seconds: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._session_factory = session_factory
        self._read_session_factory = read_session_factory
        self._keystore = keystore
        self.issuer = issuer
        self.access_token_ttl_seconds = access_token_ttl_seconds
        self._refresh_interval = refresh_interval_seconds
        self._clock = clock
        self._keys: dict[str, LoadedKey] = {}
        self._active_kid: str | None = None
        self._loaded_at = 0.0
        self._forced_at = 0.0
        self._lock = asyncio.Lock()
        # The longest lifetime of any token this service signs (overlap of rotated keys).
        self.max_token_ttl_seconds = max_token_ttl_seconds or access_token_ttl_seconds

    # -- key ring -------------------------------------------------------------------------
    # Key life cycle: ``next`` (published in the JWKS, not yet signing) -> ``active`` (signs)
    # -> ``retiring`` (still published until every token it signed has expired) -> ``retired``.
    async def ensure_active_key(self) -> None:
        """Create the first signing key when none exists, then load the ring."""
        async with self._session_factory() as session:
            existing = (
                await session.execute(
                    select(SigningKey.kid).where(SigningKey.status == "active").limit(1)
                )
            ).first()
            if existing is None:
                await self._create_key(session, status="active")
                await session.commit()
        await self.reload()

    async def _create_key(self, session: AsyncSession, *, status: str) -> SigningKey:
        private_key = Ed25519PrivateKey.generate()
        jwk = public_jwk(private_key.public_key())
        kid = jwk_thumbprint(jwk)
        pem = private_key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
        record = SigningKey(
            kid=kid,
            algorithm=ALGORITHM,
            public_jwk={**jwk, "kid": kid, "alg": ALGORITHM, "use": "sig"},
            private_key_encrypted=await self._keystore.encrypt(pem, context=f"signing_key:{kid}"),
            status=status,
            created_at=_utc(self._clock()),
        )
        session.add(record)
        await session.flush()
        return record

    def _overlap_seconds(self) -> int:
        """How long a retired signer stays published: its last token's lifetime, plus the
        time another replica may still sign with it before reloading, plus clock leeway."""
        return self.max_token_ttl_seconds + int(self._refresh_interval) + 60

    async def rotate(self, *, emergency: bool = False) -> str:
        """Rotate now: a new key signs from this moment. The previous key stays in the JWKS
        until its tokens have expired; ``emergency`` withdraws it at once (its tokens die)."""
        now = _utc(self._clock())
        async with self._session_factory() as session:
            new = await self._create_key(session, status="next")
            await self._promote(session, new.kid, now=now, emergency=emergency)
            await session.commit()
        await self.reload()
        return new.kid

    async def _promote(
        self, session: AsyncSession, kid: str, *, now: dt.datetime, emergency: bool = False
    ) -> bool:
        """``kid`` (a ``next`` key) becomes the signer; the active key starts retiring.
        Conditional updates make concurrent replicas agree on one winner."""
        retired = await session.execute(
            update(SigningKey)
            .where(SigningKey.status == "active", SigningKey.kid != kid)
            .values(
                status="retired" if emergency else "retiring",
                retire_after=now,
                remove_after=now
                if emergency
                else now + dt.timedelta(seconds=self._overlap_seconds()),
            )
        )
        promoted = await session.execute(
            update(SigningKey)
            .where(SigningKey.kid == kid, SigningKey.status == "next")
            .values(status="active")
        )
        return bool(promoted.rowcount) or bool(retired.rowcount)  # type: ignore[attr-defined]

    async def rotate_if_due(self, *, rotation_seconds: int, prepublish_seconds: int) -> bool:
        """The schedule, run by housekeeping on every replica (idempotent): publish the next
        key ``prepublish_seconds`` before it signs (so cached JWKS copies already know it),
        promote it when the active key is ``rotation_seconds`` old, and withdraw retiring keys
        once their tokens have expired."""
        now = _utc(self._clock())
        changed = False
        async with self._session_factory() as session:
            keys = list(
                (
                    await session.execute(
                        select(SigningKey).where(
                            SigningKey.status.in_(("next", "active", "retiring"))
                        )
                    )
                ).scalars()
            )
            active = sorted((k for k in keys if k.status == "active"), key=lambda k: k.created_at)
            upcoming = sorted((k for k in keys if k.status == "next"), key=lambda k: k.created_at)
            if active:
                age = (now - active[-1].created_at).total_seconds()
                if not upcoming and age >= rotation_seconds - prepublish_seconds:
                    upcoming = [await self._create_key(session, status="next")]
                    changed = True
                if (
                    upcoming
                    and age >= rotation_seconds
                    and (now - upcoming[0].created_at).total_seconds() >= prepublish_seconds
                ):
                    changed = await self._promote(session, upcoming[0].kid, now=now) or changed
            for key in keys:
                if key.status == "retiring" and key.remove_after and key.remove_after <= now:
                    result = await session.execute(
                        update(SigningKey)
                        .where(SigningKey.kid == key.kid, SigningKey.status == "retiring")
                        .values(status="retired")
                    )
                    changed = changed or bool(result.rowcount)  # type: ignore[attr-defined]
            await session.commit()
        if changed:
            await self.reload()
        return changed

    async def reload(self) -> None:
        async with self._lock:
            async with self._read_session_factory() as session:
                rows = (
                    await session.execute(
                        select(SigningKey).where(
                            SigningKey.status.in_(("next", "active", "retiring"))
                        )
                    )
                ).scalars()
                keys: dict[str, LoadedKey] = {}
                for row in rows:
                    private_key = None
                    if row.status == "active":
                        pem = await self._keystore.decrypt(
                            row.private_key_encrypted, context=f"signing_key:{row.kid}"
                        )
                        loaded = load_pem_private_key(pem, password=None)
                        assert isinstance(loaded, Ed25519PrivateKey)
                        private_key = loaded
                    public = _public_key_from_jwk(row.public_jwk)
                    keys[row.kid] = LoadedKey(
                        row.kid, row.status, private_key, public, row.public_jwk, row.created_at
                    )
            active = [k for k in keys.values() if k.private_key is not None]
            active.sort(key=lambda k: k.created_at, reverse=True)
            self._keys = keys
            self._active_kid = active[0].kid if active else None
            self._loaded_at = self._clock()

    async def _maybe_reload(self, *, force: bool = False) -> None:
        now = self._clock()
        if force:
            # An unknown kid forces a reload, at most once a second (forged kids are cheap).
            if now - self._forced_at < 1.0:
                return
            self._forced_at = now
            await self.reload()
        elif now - self._loaded_at > self._refresh_interval:
            await self.reload()

    def jwks(self) -> dict[str, Any]:
        return {"keys": [dict(k.jwk) for k in self._keys.values()]}

    # -- tokens ---------------------------------------------------------------------------
    async def issue_access_token(
        self,
        *,
        subject: uuid.UUID,
        principal_type: str,
        session_id: uuid.UUID | None,
        amr: list[str],
        extra: dict[str, Any] | None = None,
        ttl_seconds: int | None = None,
    ) -> tuple[str, dt.datetime]:
        await self.prepare()
        return self.sign_access_token(
            subject=subject,
            principal_type=principal_type,
            session_id=session_id,
            amr=amr,
            extra=extra,
            ttl_seconds=ttl_seconds,
        )

    async def prepare(self) -> None:
        """Make sure the key ring is fresh before signing synchronously."""
        await self._maybe_reload()

    def sign_access_token(
        self,
        *,
        subject: uuid.UUID,
        principal_type: str,
        session_id: uuid.UUID | None,
        amr: list[str],
        extra: dict[str, Any] | None = None,
        ttl_seconds: int | None = None,
    ) -> tuple[str, dt.datetime]:
        """Sign with the active key (no I/O: the OAuth2 server calls this synchronously)."""
        kid = self._active_kid
        if kid is None:
            raise ServiceUnavailable("No token-signing key is active", code="no_signing_key")
        key = self._keys[kid]
        assert key.private_key is not None
        now = int(self._clock())
        expires = now + (ttl_seconds or self.access_token_ttl_seconds)
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": str(subject),
            "iat": now,
            "nbf": now,
            "exp": expires,
            "jti": str(uuid.uuid4()),
            "typ": "access",
            "ptype": principal_type,
            "amr": amr,
        }
        if session_id is not None:
            claims["sid"] = str(session_id)
        if extra:
            claims.update(extra)
        token = jwt.encode(claims, key.private_key, algorithm=ALGORITHM, headers={"kid": kid})
        return token, dt.datetime.fromtimestamp(expires, dt.UTC)

    @staticmethod
    def unverified_claims(token: str) -> dict[str, Any]:
        """Claims of a token this process just signed (no verification needed)."""
        claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
        return claims

    async def verify_access_token(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as error:
            raise InvalidToken("malformed") from error
        kid = header.get("kid")
        if header.get("alg") != ALGORITHM or not isinstance(kid, str):
            raise InvalidToken("unsupported_token")
        if kid not in self._keys:
            await self._maybe_reload(force=True)
        key = self._keys.get(kid)
        if key is None:
            raise InvalidToken("unknown_key")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.public_key,
                algorithms=[ALGORITHM],
                issuer=self.issuer,
                options={"require": ["exp", "iat", "sub", "iss"]},
                leeway=5,
            )
        except jwt.ExpiredSignatureError as error:
            raise InvalidToken("expired") from error
        except jwt.PyJWTError as error:
            raise InvalidToken("invalid") from error
        if claims.get("typ") != "access":
            raise InvalidToken("wrong_token_type")
        return claims


def _utc(epoch: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, dt.UTC)


def _public_key_from_jwk(jwk: dict[str, str]) -> Ed25519PublicKey:
    x = jwk["x"]
    raw = base64.urlsafe_b64decode(x + "=" * (-len(x) % 4))
    return Ed25519PublicKey.from_public_bytes(raw)
