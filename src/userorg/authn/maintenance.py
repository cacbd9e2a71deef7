"""Housekeeping of authentication records that outlive their use."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from userorg.authn.models import LoginThrottle, MfaChallenge, PasswordResetToken, RevokedToken
from userorg.db import utcnow


async def purge_expired_auth_records(session: AsyncSession) -> dict[str, int]:
    now = utcnow()
    day_ago = now - dt.timedelta(days=1)
    counts = {}
    for name, statement in (
        ("challengesPurged", delete(MfaChallenge).where(MfaChallenge.expires_at < day_ago)),
        ("revocationsPurged", delete(RevokedToken).where(RevokedToken.expires_at < now)),
        (
            "resetTokensPurged",
            delete(PasswordResetToken).where(PasswordResetToken.expires_at < day_ago),
        ),
        (
            # Idle throttle rows (not locked, no recent failure) carry no information.
            "throttlePurged",
            delete(LoginThrottle).where(
                LoginThrottle.updated_at < day_ago,
                (LoginThrottle.locked_until.is_(None)) | (LoginThrottle.locked_until < now),
            ),
        ),
    ):
        result = await session.execute(statement)
        counts[name] = int(result.rowcount)  # type: ignore[attr-defined]
    return counts
