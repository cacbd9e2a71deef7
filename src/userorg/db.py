"""Database engine, table metadata, column types and the unit of work.

The unit of work is the only place that commits: a request's change, its audit events and its
outbox rows are written together or not at all. Work that must happen after a successful
commit (cache invalidation, waking the notifier) is registered with ``after_commit``.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from sqlalchemy import JSON, DateTime, MetaData, TypeDecorator, event
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase

log = structlog.get_logger(__name__)

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC datetimes on both PostgreSQL and SQLite."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(dt.UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = dt.datetime.fromisoformat(value)
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)  # type: ignore[no-any-return]
        return value.astimezone(dt.UTC)  # type: ignore[no-any-return]


JSONType = JSON().with_variant(JSONB(), "postgresql")


def async_database_url(url: str) -> str:
    """Accept plain ``sqlite:///path`` and ``postgresql://`` URLs; pick the async driver."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite").render_as_string(hide_password=False)
    if backend in {"postgresql", "postgres"}:
        query = dict(parsed.query)
        sslmode = query.pop("sslmode", None)
        if sslmode is not None:
            query["ssl"] = sslmode
        return parsed.set(drivername="postgresql+asyncpg", query=query).render_as_string(
            hide_password=False
        )
    raise ValueError(f"unsupported database URL scheme: {parsed.drivername}")


def sync_database_url(url: str) -> str:
    """The URL for synchronous tools (Alembic offline checks): same database, sync driver."""
    parsed = make_url(async_database_url(url))
    if parsed.get_backend_name() == "sqlite":
        return parsed.set(drivername="sqlite").render_as_string(hide_password=False)
    return parsed.render_as_string(hide_password=False)


def create_engine(
    url: str, *, pool_size: int = 10, read_only: bool = False, autocommit: bool = False
) -> AsyncEngine:
    """An async engine for the URL.

    SQLite (embedded mode): the writing engine has one connection, because SQLite has one
    writer and queueing in asyncio is fairer and faster than SQLite's busy-wait; every
    transaction starts with BEGIN IMMEDIATE so the second process (the reconciler) never sees
    a stale snapshot. ``read_only`` engines (key ring reloads, cache misses) use several
    deferred, query-only connections that WAL lets read beside the writer. On PostgreSQL both
    are the same kind of pool. ``autocommit`` (PostgreSQL only; the gateway's cache-miss
    reads) runs each statement on its own, without BEGIN/ROLLBACK round trips or a pre-ping
    on checkout: a dead connection fails one request and is replaced.
    """
    async_url = async_database_url(url)
    if async_url.startswith("sqlite"):
        engine = create_async_engine(
            async_url,
            pool_size=4 if read_only else 1,
            max_overflow=0,
            pool_timeout=60,
            connect_args={"timeout": 30},
        )
        _configure_sqlite(engine, read_only=read_only)
        return engine
    if autocommit:
        # A fixed pool: under a burst of misses, requests queue for a connection instead of
        # opening (and, on return, closing) overflow connections — a new PostgreSQL
        # connection costs far more than the query it would run.
        return create_async_engine(
            async_url,
            pool_size=pool_size,
            max_overflow=0,
            pool_timeout=10,
            pool_pre_ping=False,
            pool_recycle=1800,
            isolation_level="AUTOCOMMIT",
            connect_args={"server_settings": {"application_name": "userorg-gateway"}},
        )
    # force_custom_plan: asyncpg prepares every statement, and after five executions
    # PostgreSQL may switch to a generic plan that assumes an average org. Tenants are skewed
    # (the largest org has hundreds of times the average's members and keys): the generic plan
    # of a member list joined all ~4,800 members of the largest org before sorting (24 ms
    # instead of 0.4 ms, bench/bench_scale.py). Planning each statement costs well under a
    # millisecond. The gateway's engine (unique-key lookups, no skew) keeps generic plans.
    return create_async_engine(
        async_url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args={
            "server_settings": {
                "application_name": "userorg",
                "plan_cache_mode": "force_custom_plan",
            }
        },
    )


def _configure_sqlite(engine: AsyncEngine, *, read_only: bool) -> None:
    path = make_url(str(engine.url)).database

    @event.listens_for(engine.sync_engine, "do_connect")
    def _make_directory(*_args: Any) -> None:
        if path and path != ":memory:":
            from pathlib import Path

            Path(path).parent.mkdir(parents=True, exist_ok=True)

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        if read_only:
            cursor.execute("PRAGMA query_only=ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def new_id() -> uuid.UUID:
    """A UUIDv7: time ordered, so keyset pagination by id follows creation order."""
    import os
    import time

    unix_ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    rand_a = (rand >> 62) & 0xFFF
    rand_b = rand & ((1 << 62) - 1)
    value = (unix_ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b
    return uuid.UUID(int=value)


AfterCommit = Callable[[], Awaitable[None]]
# A session factory may carry, in its ``info``, a hook run after every unit-of-work commit with
# the committed session (the gateway publishes cache invalidations noted during the flushes).
SESSION_COMMIT_HOOK = "userorg.commit_hook"
Publish = Callable[[str, dict[str, Any]], Awaitable[None]]


class UnitOfWork:
    """One database transaction plus the work to run once it has committed."""

    def __init__(
        self, session_factory: async_sessionmaker[AsyncSession], *, publish: Publish | None = None
    ) -> None:
        self.session: AsyncSession = session_factory()
        # Lets session-level hooks (authz cache invalidation) run work after this commit.
        self.session.info["userorg.uow"] = self
        self._after_commit: list[AfterCommit] = []
        self._publish = publish
        self._published: set[tuple[str, str]] = set()

    def after_commit(self, callback: AfterCommit) -> None:
        self._after_commit.append(callback)

    def publish_after_commit(self, channel: str, message: dict[str, Any]) -> None:
        """Send ``message`` on the bus once the transaction has committed (once per message)."""
        publish = self._publish
        if publish is None:
            return
        key = (channel, repr(sorted(message.items())))
        if key in self._published:
            return
        self._published.add(key)

        async def send() -> None:
            await publish(channel, message)

        self.after_commit(send)

    async def commit(self) -> None:
        await self.session.commit()
        callbacks, self._after_commit = self._after_commit, []
        hook = self.session.info.get(SESSION_COMMIT_HOOK)
        if hook is not None:
            sync_session = self.session.sync_session
            callbacks.insert(0, lambda: hook(sync_session))
        self._published = set()
        for callback in callbacks:
            try:
                await callback()
            except Exception:
                log.exception("after_commit_failed")

    async def rollback(self) -> None:
        self._after_commit = []
        self._published = set()
        await self.session.rollback()

    async def close(self) -> None:
        await self.session.close()

    async def __aenter__(self) -> UnitOfWork:
        return self

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            if exc_type is None:
                await self.commit()
            else:
                await self.rollback()
        finally:
            await self.close()
