"""Signing-key rotation with overlap, on both databases, driven by a controllable clock."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

import jwt
import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker

from userorg import migrate
from userorg.authn.tokens import InvalidToken, TokenService
from userorg.db import create_engine
from userorg.platform.keystore import LocalKeystore

DAY = 86_400


class Clock:
    def __init__(self) -> None:
        self.now = 1_900_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'keys.db'}"
    else:
        url = request.getfixturevalue("fresh_pg_database")
    await asyncio.to_thread(migrate.upgrade, url)
    return url


async def test_rotation_publishes_ahead_overlaps_and_withdraws(database_url: str) -> None:
    engine = create_engine(database_url)
    factory = async_sessionmaker(engine, expire_on_commit=False)
    clock = Clock()
    tokens = TokenService(
        session_factory=factory,
        read_session_factory=factory,
        keystore=LocalKeystore(os.urandom(32)),
        issuer="https://id.example.com",
        access_token_ttl_seconds=900,
        refresh_interval_seconds=60,
        clock=clock,
    )
    try:
        await tokens.ensure_active_key()
        first_kid = jwt.get_unverified_header(await _token(tokens))["kid"]
        assert [k["kid"] for k in tokens.jwks()["keys"]] == [first_kid]

        async def tick(seconds: float) -> bool:
            clock.now += seconds
            return await tokens.rotate_if_due(rotation_seconds=30 * DAY, prepublish_seconds=900)

        assert not await tick(29 * DAY)
        # 15 minutes before the rotation age, the next key is published but does not sign.
        assert await tick(DAY - 900)
        kids = {k["kid"] for k in tokens.jwks()["keys"]}
        assert len(kids) == 2 and first_kid in kids
        old_token = await _token(tokens)
        assert jwt.get_unverified_header(old_token)["kid"] == first_kid
        # At the rotation age the next key signs; the old key stays published (overlap), so
        # its last tokens still verify against the JWKS.
        assert await tick(900)
        new_token = await _token(tokens)
        new_kid = jwt.get_unverified_header(new_token)["kid"]
        assert new_kid != first_kid and new_kid in kids
        assert _verifies_with_jwks(tokens, old_token)
        assert _verifies_with_jwks(tokens, new_token)
        # Once every token of the old key has expired, the key is withdrawn.
        assert not await tick(900)
        assert await tick(60 + 61)
        assert [k["kid"] for k in tokens.jwks()["keys"]] == [new_kid]
        with pytest.raises(InvalidToken) as refused:
            await tokens.verify_access_token(old_token)
        assert refused.value.reason == "unknown_key"
        # An emergency rotation withdraws the signer at once.
        third = await tokens.rotate(emergency=True)
        assert [k["kid"] for k in tokens.jwks()["keys"]] == [third]
        with pytest.raises(InvalidToken) as refused:
            await tokens.verify_access_token(new_token)
        assert refused.value.reason == "unknown_key"
    finally:
        await engine.dispose()


def _verifies_with_jwks(tokens: TokenService, token: str) -> bool:
    keys = jwt.PyJWKSet.from_dict(tokens.jwks())
    kid = jwt.get_unverified_header(token)["kid"]
    key = next(k for k in keys.keys if k.key_id == kid)
    # The test clock runs ahead of the wall clock: check the signature, not the timing.
    jwt.decode(
        token,
        key.key,
        algorithms=["EdDSA"],
        options={"verify_exp": False, "verify_nbf": False, "verify_iat": False},
    )
    return True


async def _token(tokens: TokenService) -> str:
    token, _expires = await tokens.issue_access_token(
        subject=uuid.uuid4(), principal_type="user", session_id=uuid.uuid4(), amr=["pwd"]
    )
    return token
