"""A database-backed lease: at most one holder of a named role across replicas.

The holder renews before each unit of work; a holder that dies stops renewing and the lease
expires after ``ttl`` seconds, when another replica takes it. Every change of holder bumps
``token`` (a fencing token), so work done under an older token can be recognised. Each call is
one short transaction (a row lock on PostgreSQL, the single writer on SQLite); clocks of the
replicas are assumed to agree to well within the TTL (NTP).
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import uuid

from sqlalchemy import BigInteger, String, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from userorg.db import Base, UTCDateTime, utcnow


class LeaseRow(Base):
    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(200), default=None)
    token: Mapped[int] = mapped_column(BigInteger, default=0)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    acquired_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, default=None)


def default_holder_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class DatabaseLease:
    def __init__(
        self,
        session_factory: async_sessionmaker[AsyncSession],
        *,
        name: str,
        ttl_seconds: float,
        holder: str | None = None,
    ) -> None:
        self._session_factory = session_factory
        self.name = name
        self.ttl = ttl_seconds
        self.holder = holder or default_holder_id()
        self.token: int | None = None
        self.expires_at: dt.datetime | None = None

    @property
    def held(self) -> bool:
        return self.token is not None and self.expires_at is not None and self.expires_at > utcnow()

    def remaining_seconds(self) -> float:
        if self.expires_at is None or self.token is None:
            return 0.0
        return max(0.0, (self.expires_at - utcnow()).total_seconds())

    async def acquire(self) -> bool:
        """Take the lease when free or expired, or renew it when already ours."""
        async with self._session_factory() as session:
            now = utcnow()
            dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
            insert = pg_insert if dialect == "postgresql" else sqlite_insert
            await session.execute(
                insert(LeaseRow)
                .values(name=self.name, holder=None, token=0, expires_at=now)
                .on_conflict_do_nothing(index_elements=["name"])
            )
            row = (
                await session.execute(
                    select(LeaseRow)
                    .where(LeaseRow.name == self.name)
                    .with_for_update()
                    .execution_options(populate_existing=True)
                )
            ).scalar_one()
            mine = row.holder == self.holder and row.token == self.token
            if not mine and row.expires_at > now and row.holder is not None:
                await session.rollback()
                self.token = None
                self.expires_at = None
                return False
            if not mine:
                row.token += 1
                row.holder = self.holder
                row.acquired_at = now
            row.expires_at = now + dt.timedelta(seconds=self.ttl)
            token, expires = row.token, row.expires_at
            await session.commit()
        self.token, self.expires_at = token, expires
        return True

    async def release(self) -> None:
        """Give the lease up at once (graceful stop), so another replica takes over now."""
        if self.token is None:
            return
        async with self._session_factory() as session:
            await session.execute(
                update(LeaseRow)
                .where(
                    LeaseRow.name == self.name,
                    LeaseRow.holder == self.holder,
                    LeaseRow.token == self.token,
                )
                .values(holder=None, expires_at=utcnow())
            )
            await session.commit()
        self.token = None
        self.expires_at = None

    async def current_holder(self) -> tuple[str | None, int, dt.datetime | None]:
        async with self._session_factory() as session:
            row = await session.get(LeaseRow, self.name)
            if row is None:
                return None, 0, None
            return row.holder, row.token, row.expires_at
