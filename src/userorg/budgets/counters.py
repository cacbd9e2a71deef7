"""The atomic step of exact enforcement: per org and period, committed spend and held
reservations, in integer micro-units.

Production keeps them in Redis and changes them only in Lua scripts (one atomic step per
reservation, settlement or sweep), so any number of replicas share one exact counter.
Embedded mode keeps reservations as rows and decides inside one SQLite write transaction
(``BEGIN IMMEDIATE`` serialises writers).

Redis is seeded from the database when a period's counter is missing. Usage is applied to
Redis *before* the database commit of the unit of work that records it, and a counter seeded
inside that transaction already contains it (the script then adds nothing): a concurrent
seeder reads only committed rows, so each event is counted exactly once. A failed commit
after the Redis step over-counts (the safe direction) until the counter expires.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final, Protocol

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from userorg.budgets.models import BudgetReservation, BudgetSpend
from userorg.budgets.money import Period, from_micro, to_micro

UNLIMITED: Final = -1
# Counters outlive their period long enough for late events; then they are re-seeded.
_COUNTER_TTL_AFTER_PERIOD = 40 * 86400

Seed = Callable[[], Awaitable[int]]


@dataclass(frozen=True, slots=True)
class Reserved:
    ok: bool
    spend: int
    reserved: int
    reservation_id: str | None = None


async def committed_spend(session: AsyncSession, org_id: uuid.UUID, period: Period) -> Decimal:
    total = (
        await session.execute(
            select(func.coalesce(func.sum(BudgetSpend.amount), 0)).where(
                BudgetSpend.org_id == org_id, BudgetSpend.month.in_(period.months())
            )
        )
    ).scalar_one()
    return Decimal(total)


class BudgetCounters(Protocol):
    async def reserve(
        self,
        *,
        org_id: uuid.UUID,
        period: Period,
        amount: int,
        cap: int,
        principal_id: str | None,
        seed: Seed,
    ) -> Reserved: ...

    async def totals(self, *, org_id: uuid.UUID, period: Period, seed: Seed) -> tuple[int, int]:
        """(committed spend, held reservations) of the period, micro-units."""
        ...

    async def apply(
        self,
        session: AsyncSession,
        *,
        org_id: uuid.UUID,
        period: Period,
        amount: int,
        reservation_ids: list[str],
        only_if_present: bool = False,
    ) -> None:
        """Inside the unit of work that records usage (before its commit): add the committed
        amount and release the settled reservations."""
        ...

    async def sweep(self, *, now: float | None = None) -> int:
        """Release reservations past their expiry; how many."""
        ...


_RESERVE = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  if tonumber(ARGV[1]) < 0 then return {-1, 0, 0} end
  redis.call('HSET', KEYS[1], 'spend', ARGV[1], 'reserved', 0)
  redis.call('EXPIREAT', KEYS[1], ARGV[6])
end
local spend = tonumber(redis.call('HGET', KEYS[1], 'spend'))
local reserved = tonumber(redis.call('HGET', KEYS[1], 'reserved'))
local amount = tonumber(ARGV[3])
local cap = tonumber(ARGV[2])
if cap >= 0 and (spend >= cap or spend + reserved + amount > cap) then
  return {0, spend, reserved}
end
redis.call('HINCRBY', KEYS[1], 'reserved', amount)
redis.call('HSET', KEYS[2], ARGV[4], KEYS[1] .. '|' .. ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[5], ARGV[4])
return {1, spend, reserved + amount}
"""

_TOTALS = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  if tonumber(ARGV[1]) < 0 then return {-1, 0} end
  redis.call('HSET', KEYS[1], 'spend', ARGV[1], 'reserved', 0)
  redis.call('EXPIREAT', KEYS[1], ARGV[2])
end
return {tonumber(redis.call('HGET', KEYS[1], 'spend')),
        tonumber(redis.call('HGET', KEYS[1], 'reserved'))}
"""

_RELEASE = """
local function release(id, owner)
  local value = redis.call('HGET', KEYS[2], id)
  if not value then return 0 end
  local sep = string.find(value, '|', 1, true)
  local key = string.sub(value, 1, sep - 1)
  -- Usage settles only its own org's reservations.
  if string.sub(key, 1, string.len(owner)) ~= owner then return 0 end
  redis.call('HDEL', KEYS[2], id)
  redis.call('ZREM', KEYS[3], id)
  local amount = tonumber(string.sub(value, sep + 1))
  if redis.call('EXISTS', key) == 1 then
    redis.call('HINCRBY', key, 'reserved', -amount)
  end
  return 1
end
"""

_APPLY = (
    _RELEASE
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then
  if tonumber(ARGV[1]) < 0 then return -1 end
  redis.call('HSET', KEYS[1], 'spend', ARGV[1], 'reserved', 0)
  redis.call('EXPIREAT', KEYS[1], ARGV[3])
else
  redis.call('HINCRBY', KEYS[1], 'spend', ARGV[2])
end
for i = 5, #ARGV do release(ARGV[i], ARGV[4]) end
return 1
"""
)

_SWEEP = (
    _RELEASE
    + """
local due = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ARGV[1], 'LIMIT', 0, 1000)
local n = 0
for _, id in ipairs(due) do n = n + release(id, '') end
return n
"""
)


class _Script:
    """A registered Lua script whose Redis outages surface as the builtin ``ConnectionError``
    (answered ``503 dependency_unavailable``: enforcement fails closed)."""

    def __init__(self, redis: Redis, source: str) -> None:
        self._script = redis.register_script(source)

    async def __call__(self, *, keys: list[str], args: list[Any]) -> Any:
        try:
            return await self._script(keys=keys, args=args)
        except (RedisConnectionError, RedisTimeoutError) as error:
            raise ConnectionError(f"budget counters unavailable: {error}") from error


class RedisCounters:
    def __init__(self, redis: Redis, *, prefix: str, reservation_ttl: float) -> None:
        self._redis = redis
        # One hash tag for every budget key: the Lua scripts touch an org's counter and the
        # shared reservation index together, which Redis Cluster allows only within one slot.
        self._prefix = f"{{{prefix}:budget}}"
        self._ttl = reservation_ttl
        self._reserve = _Script(redis, _RESERVE)
        self._totals = _Script(redis, _TOTALS)
        self._apply = _Script(redis, _APPLY)
        self._sweep = _Script(redis, _SWEEP)
        self._res_hash = f"{self._prefix}:reservations"
        self._res_expiry = f"{self._prefix}:reservation-expiry"

    def counter_key(self, org_id: uuid.UUID, period: Period) -> str:
        return f"{self._prefix}:{org_id}:{period.kind}:{period.key}"

    @staticmethod
    def _expire_at(period: Period) -> int:
        return int(period.end.timestamp()) + _COUNTER_TTL_AFTER_PERIOD

    async def reserve(
        self,
        *,
        org_id: uuid.UUID,
        period: Period,
        amount: int,
        cap: int,
        principal_id: str | None,
        seed: Seed,
    ) -> Reserved:
        reservation_id = str(uuid.uuid4())
        keys = [self.counter_key(org_id, period), self._res_hash, self._res_expiry]
        args: list[Any] = [
            -1,
            cap,
            amount,
            reservation_id,
            time.time() + self._ttl,
            self._expire_at(period),
        ]
        result = await self._reserve(keys=keys, args=args)
        if int(result[0]) == -1:
            args[0] = await seed()
            result = await self._reserve(keys=keys, args=args)
        ok = int(result[0]) == 1
        return Reserved(ok, int(result[1]), int(result[2]), reservation_id if ok else None)

    async def totals(self, *, org_id: uuid.UUID, period: Period, seed: Seed) -> tuple[int, int]:
        keys = [self.counter_key(org_id, period)]
        result = await self._totals(keys=keys, args=[-1, self._expire_at(period)])
        if int(result[0]) == -1:
            result = await self._totals(keys=keys, args=[await seed(), self._expire_at(period)])
        return int(result[0]), int(result[1])

    async def apply(
        self,
        session: AsyncSession,
        *,
        org_id: uuid.UUID,
        period: Period,
        amount: int,
        reservation_ids: list[str],
        only_if_present: bool = False,
    ) -> None:
        keys = [self.counter_key(org_id, period), self._res_hash, self._res_expiry]
        owner = f"{self._prefix}:{org_id}:"
        args: list[Any] = [-1, amount, self._expire_at(period), owner, *reservation_ids]
        if int(await self._apply(keys=keys, args=args)) == -1 and not only_if_present:
            # Seeded from this transaction's view: committed rows plus its own usage.
            args[0] = to_micro(await committed_spend(session, org_id, period))
            await self._apply(keys=keys, args=args)

    async def sweep(self, *, now: float | None = None) -> int:
        keys = ["", self._res_hash, self._res_expiry]
        return int(await self._sweep(keys=keys, args=[now if now is not None else time.time()]))


class DatabaseCounters:
    """Embedded mode: reservations are rows, decided in one write transaction."""

    def __init__(
        self,
        session_factory: async_sessionmaker[AsyncSession],
        read_session_factory: async_sessionmaker[AsyncSession],
        *,
        reservation_ttl: float,
    ) -> None:
        self._sessions = session_factory
        self._read_sessions = read_session_factory
        self._ttl = reservation_ttl

    @staticmethod
    async def _held(session: AsyncSession, org_id: uuid.UUID, period: Period) -> Decimal:
        total = (
            await session.execute(
                select(func.coalesce(func.sum(BudgetReservation.amount), 0)).where(
                    BudgetReservation.org_id == org_id,
                    BudgetReservation.period_key == period.key,
                    BudgetReservation.status == "held",
                    BudgetReservation.expires_at > dt.datetime.now(dt.UTC),
                )
            )
        ).scalar_one()
        return Decimal(total)

    async def reserve(
        self,
        *,
        org_id: uuid.UUID,
        period: Period,
        amount: int,
        cap: int,
        principal_id: str | None,
        seed: Seed,
    ) -> Reserved:
        async with self._sessions() as session, session.begin():
            # The write lock first (SQLite BEGIN IMMEDIATE on the first statement).
            spend = to_micro(await committed_spend(session, org_id, period))
            reserved = to_micro(await self._held(session, org_id, period))
            if cap >= 0 and (spend >= cap or spend + reserved + amount > cap):
                return Reserved(False, spend, reserved)
            row = BudgetReservation(
                org_id=org_id,
                period_key=period.key,
                amount=from_micro(amount),
                principal_id=principal_id,
                expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=self._ttl),
            )
            session.add(row)
        return Reserved(True, spend, reserved + amount, str(row.id))

    async def totals(self, *, org_id: uuid.UUID, period: Period, seed: Seed) -> tuple[int, int]:
        # The read pool: a request's unit of work may hold SQLite's one writer connection.
        async with self._read_sessions() as session:
            spend = to_micro(await committed_spend(session, org_id, period))
            reserved = to_micro(await self._held(session, org_id, period))
        return spend, reserved

    async def apply(
        self,
        session: AsyncSession,
        *,
        org_id: uuid.UUID,
        period: Period,
        amount: int,
        reservation_ids: list[str],
        only_if_present: bool = False,
    ) -> None:
        ids = []
        for value in reservation_ids:
            try:
                ids.append(uuid.UUID(value))
            except ValueError:
                continue
        if ids:
            await session.execute(
                update(BudgetReservation)
                .where(
                    BudgetReservation.id.in_(ids),
                    BudgetReservation.org_id == org_id,
                    BudgetReservation.status == "held",
                )
                .values(status="settled")
            )

    async def sweep(self, *, now: float | None = None) -> int:
        moment = dt.datetime.fromtimestamp(now if now is not None else time.time(), dt.UTC)
        async with self._sessions() as session, session.begin():
            result = await session.execute(
                update(BudgetReservation)
                .where(BudgetReservation.status == "held", BudgetReservation.expires_at <= moment)
                .values(status="expired")
            )
        return int(getattr(result, "rowcount", 0) or 0)
