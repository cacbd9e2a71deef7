"""The database lease on both databases: one holder, expiry hands over, fencing tokens grow."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from userorg import migrate
from userorg.audit.relay import _acknowledged_prefixes
from userorg.audit.stream import StreamMessage
from userorg.db import create_engine
from userorg.platform.leases import DatabaseLease


@pytest.fixture(params=["sqlite", "postgresql"])
async def sessions(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/lease.db"
    else:
        url = request.getfixturevalue("fresh_pg_database")
    await asyncio.to_thread(migrate.upgrade, url)
    engine = create_engine(url)
    yield async_sessionmaker(engine, expire_on_commit=False)
    await engine.dispose()


async def test_one_holder_expiry_hands_over_and_release_is_immediate(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    a = DatabaseLease(sessions, name="relay", ttl_seconds=0.5, holder="a")
    b = DatabaseLease(sessions, name="relay", ttl_seconds=0.5, holder="b")
    assert await a.acquire()
    first_token = a.token
    assert not await b.acquire()
    assert await a.acquire()  # renewal keeps the token
    assert a.token == first_token
    assert (await b.current_holder())[0] == "a"
    await asyncio.sleep(0.6)  # a "dies": stops renewing
    assert await b.acquire()
    assert b.token == (first_token or 0) + 1
    assert not await a.acquire()  # the old holder is fenced out
    assert not a.held
    await b.release()
    assert await a.acquire()
    assert a.token == (first_token or 0) + 2


async def test_concurrent_acquire_has_one_winner(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    leases = [
        DatabaseLease(sessions, name="race", ttl_seconds=30, holder=f"h{i}") for i in range(5)
    ]
    results = await asyncio.gather(*(lease.acquire() for lease in leases))
    assert sum(results) == 1


def test_a_failed_event_holds_back_the_rest_of_its_chain_only() -> None:
    def message(i: int, chain: str) -> StreamMessage:
        return StreamMessage(i, chain, i, chain, f"e{i}", b"{}")

    messages = [message(1, "a"), message(2, "b"), message(3, "a"), message(4, "b"), message(5, "a")]
    acknowledged = _acknowledged_prefixes(messages, [None, None, "timeout", None, None])
    # Chain a stops before its failure (3), so 5 is republished after 3; chain b goes on.
    assert [m.outbox_id for m in acknowledged] == [1, 2, 4]
