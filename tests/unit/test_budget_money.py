"""Budget arithmetic and periods (pure functions), and the counters' outage behaviour."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

import pytest
from redis.asyncio import Redis

from tests.support.services import free_port
from userorg.budgets.counters import RedisCounters
from userorg.budgets.money import from_micro, money, period_of, to_micro
from userorg.errors_http import is_dependency_outage


def test_periods_are_calendar_aligned_in_utc() -> None:
    end = dt.datetime(2026, 3, 31, 23, 59, 59, tzinfo=dt.UTC)
    start = dt.datetime(2026, 4, 1, 0, 0, 0, tzinfo=dt.UTC)
    assert period_of("monthly", end).key == "2026-03"
    assert period_of("monthly", start).key == "2026-04"
    assert period_of("quarterly", end).key == "2026-Q1"
    assert period_of("quarterly", start).key == "2026-Q2"
    assert period_of("annual", dt.datetime(2026, 12, 31, 23, 59, 59, tzinfo=dt.UTC)).key == "2026"
    december = period_of("monthly", dt.datetime(2026, 12, 5, tzinfo=dt.UTC))
    assert december.end == dt.datetime(2027, 1, 1, tzinfo=dt.UTC)
    # An offset timestamp is placed by its UTC instant.
    late = dt.datetime(2026, 4, 1, 1, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert period_of("monthly", late).key == "2026-03"
    assert [m.month for m in period_of("quarterly", start).months()] == [4, 5, 6]


def test_amounts_are_exact_decimals() -> None:
    assert money(Decimal("5000")) == "5000.00"
    assert money(Decimal("0.000001")) == "0.000001"
    assert money(Decimal("12.5000")) == "12.50"
    assert to_micro(Decimal("1.000001")) == 1_000_001
    assert from_micro(3) == Decimal("0.000003")


async def test_redis_outage_is_a_dependency_outage() -> None:
    redis = Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5)
    counters = RedisCounters(redis, prefix=f"t-{uuid.uuid4().hex}", reservation_ttl=60)

    async def seed() -> int:
        return 0

    with pytest.raises(ConnectionError) as raised:
        await counters.reserve(
            org_id=uuid.uuid4(),
            period=period_of("monthly", dt.datetime.now(dt.UTC)),
            amount=1,
            cap=10,
            principal_id=None,
            seed=seed,
        )
    assert is_dependency_outage(raised.value)
    await redis.aclose()
