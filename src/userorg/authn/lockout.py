"""Brute-force protection: per-address failure counting with progressive lockout.

Every sign-in attempt first *reserves* a failure with one atomic statement (an upsert that
increments the counter unless the address is locked). The password is verified only after the
reservation; a correct one gives the reservation back. Concurrent wrong attempts therefore can
never get more tries than the threshold: on PostgreSQL the upsert holds the row lock until the
attempt's transaction ends, so attempts on one address are counted one after another; SQLite
has a single writer. Counting is keyed by the SHA-256 of the lower-cased address, so unknown
addresses lock exactly like real accounts and the answers never reveal which exist.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

from sqlalchemy import case, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from userorg.authn.models import LoginThrottle
from userorg.crypto import sha256_hex
from userorg.db import utcnow
from userorg.errors import Locked


@dataclass(frozen=True, slots=True)
class LockoutPolicy:
    threshold: int
    seconds: int
    max_seconds: int

    def duration(self, lockouts: int) -> int:
        """Progressive: each lockout in a row doubles the previous one, up to the maximum."""
        factor: int = 2 ** max(0, lockouts - 1)
        return min(self.max_seconds, self.seconds * factor)


@dataclass(frozen=True, slots=True)
class Reservation:
    key: str
    failures: int  # including this attempt


def throttle_key(email: str) -> str:
    return sha256_hex("login:" + email.strip().lower())


def locked_error(locked_until: dt.datetime, now: dt.datetime) -> Locked:
    retry_after = max(1, math.ceil((locked_until - now).total_seconds()))
    return Locked(
        "The account is temporarily locked after repeated failed sign-ins",
        details={"retryAfterSeconds": retry_after},
        headers={"Retry-After": str(retry_after)},
        commit=True,
    )


async def reserve_attempt(session: AsyncSession, *, email: str) -> Reservation:
    """Count this attempt as a failure in advance, atomically; raise 423 when locked."""
    key = throttle_key(email)
    now = utcnow()
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    table = LoginThrottle.__table__
    expired = table.c.locked_until.is_not(None)  # only unlocked rows reach the update
    statement = (
        insert(LoginThrottle)
        .values(key=key, failures=1, lockouts=0, locked_until=None, updated_at=now)
        .on_conflict_do_update(
            index_elements=["key"],
            set_={
                # A lock that has run out starts a fresh count.
                "failures": case((expired, 1), else_=table.c.failures + 1),
                "locked_until": None,
                "updated_at": now,
            },
            where=(table.c.locked_until.is_(None)) | (table.c.locked_until <= now),
        )
        .returning(LoginThrottle.failures)
    )
    failures = (await session.execute(statement)).scalar_one_or_none()
    if failures is None:
        locked_until = (
            await session.execute(
                select(LoginThrottle.locked_until).where(LoginThrottle.key == key)
            )
        ).scalar_one()
        raise locked_error(locked_until or now, now)
    return Reservation(key, int(failures))


async def record_failure(
    session: AsyncSession, reservation: Reservation, policy: LockoutPolicy
) -> dt.datetime | None:
    """The reserved failure stands; lock when it reaches the threshold. Returns the lock end."""
    if reservation.failures < policy.threshold:
        return None
    now = utcnow()
    lockouts = (
        await session.execute(
            select(LoginThrottle.lockouts).where(LoginThrottle.key == reservation.key)
        )
    ).scalar_one()
    until = now + dt.timedelta(seconds=policy.duration(lockouts + 1))
    await session.execute(
        update(LoginThrottle)
        .where(LoginThrottle.key == reservation.key)
        .values(failures=0, lockouts=lockouts + 1, locked_until=until, updated_at=now)
    )
    return until


async def release(session: AsyncSession, reservation: Reservation) -> None:
    """The attempt was not a failure after all (e.g. the second factor is still to come)."""
    await session.execute(
        update(LoginThrottle)
        .where(LoginThrottle.key == reservation.key, LoginThrottle.failures > 0)
        .values(failures=LoginThrottle.failures - 1)
    )


async def reset(session: AsyncSession, *, email: str) -> bool:
    """A successful sign-in, a password reset or an admin unlock: clear the record.
    Returns whether the address was locked."""
    key = throttle_key(email)
    now = utcnow()
    locked = (
        await session.execute(select(LoginThrottle.locked_until).where(LoginThrottle.key == key))
    ).scalar_one_or_none()
    await session.execute(
        update(LoginThrottle)
        .where(LoginThrottle.key == key)
        .values(failures=0, lockouts=0, locked_until=None, updated_at=now)
    )
    return locked is not None and locked > now


async def locked_until(session: AsyncSession, *, email: str) -> dt.datetime | None:
    value = (
        await session.execute(
            select(LoginThrottle.locked_until).where(LoginThrottle.key == throttle_key(email))
        )
    ).scalar_one_or_none()
    return value if value is not None and value > utcnow() else None
