"""The budget part of ``/v1/authorize`` (``gateway.budget.BudgetGate``).

Per org, the policy (limit, thresholds, period, grace), the sum of active overrides and the
time the block threshold was crossed in the current period are cached in memory and dropped
on the invalidation bus (channel ``budget``) when any of them changes — locally at once, on
every other replica within the bus's delivery time. The spend itself is never cached: with an
estimate, the reservation is one atomic step on the shared counter (Redis Lua, or one SQLite
write transaction); without one, the counter is read. So a block is seen by every replica on
its next request.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from userorg.budgets import service
from userorg.budgets.counters import UNLIMITED, BudgetCounters, committed_spend
from userorg.budgets.money import from_micro, money, period_of, to_micro
from userorg.gateway.budget import BUDGET_OK, BudgetResult
from userorg.platform.bus import InvalidationBus

log = structlog.get_logger("userorg.budgets.gate")


@dataclass(slots=True)
class OrgBudget:
    period: str
    warn: int  # micro-units
    block: int  # without overrides
    overrides: int
    overrides_until: float  # epoch of the first active override's expiry (reload then)
    grace_seconds: float
    block_crossed: dict[str, float]  # period key -> epoch of the block crossing
    loaded_at: float


class BudgetEnforcer:
    def __init__(
        self,
        *,
        read_session_factory: async_sessionmaker[AsyncSession],
        counters: BudgetCounters,
        bus: InvalidationBus,
        cache_ttl: float,
    ) -> None:
        self._sessions = read_session_factory
        self.counters = counters
        self._bus = bus
        self._ttl = cache_ttl
        self._orgs: dict[str, OrgBudget | None] = {}
        self._epoch = 0
        bus.subscribe(service.CHANNEL, self.on_message)
        bus.on_reset(self.clear)

    def clear(self) -> None:
        self._epoch += 1
        self._orgs.clear()

    def invalidate(self, org_id: str) -> None:
        self._epoch += 1
        self._orgs.pop(org_id, None)

    async def on_message(self, message: dict[str, Any]) -> None:
        org = message.get("org")
        if isinstance(org, str):
            self.invalidate(org)
        else:
            self.clear()

    async def _state(self, org_id: str, now: float) -> OrgBudget | None:
        trusted = self._ttl > 0 and self._bus.healthy
        if trusted and org_id in self._orgs:
            state = self._orgs[org_id]
            if state is None or (now - state.loaded_at < self._ttl and now < state.overrides_until):
                return state
        epoch = self._epoch
        state = await self._load(uuid.UUID(org_id), now)
        if trusted and epoch == self._epoch:
            self._orgs[org_id] = state
        return state

    async def _load(self, org_id: uuid.UUID, now: float) -> OrgBudget | None:
        moment = dt.datetime.fromtimestamp(now, dt.UTC)
        async with self._sessions() as session:
            policy = await service.active_policy(session, org_id)
            if policy is None:
                return None
            overrides = await service.active_overrides(session, org_id, moment)
            period = period_of(policy.period, moment)
            crossed = await service.block_crossed_at(session, org_id, period.key)
        limit = Decimal(policy.limit)
        return OrgBudget(
            period=policy.period,
            warn=to_micro(limit * policy.warn_threshold / 100),
            block=to_micro(limit * policy.block_threshold / 100),
            overrides=to_micro(sum((o.amount for o in overrides), Decimal(0))),
            overrides_until=min(
                [o.expires_at.timestamp() for o in overrides], default=float("inf")
            ),
            grace_seconds=policy.grace_period_minutes * 60.0,
            block_crossed={period.key: crossed.timestamp()} if crossed is not None else {},
            loaded_at=now,
        )

    async def check(
        self, *, org_id: str, principal_id: str, estimated_cost: float | None
    ) -> BudgetResult:
        now = time.time()
        state = await self._state(org_id, now)
        if state is None:
            return BUDGET_OK
        org = uuid.UUID(org_id)
        period = period_of(state.period, dt.datetime.fromtimestamp(now, dt.UTC))
        cap = state.block + state.overrides
        crossed = state.block_crossed.get(period.key)
        in_grace = (
            state.grace_seconds > 0 and crossed is not None and now < crossed + state.grace_seconds
        )

        async def seed() -> int:
            async with self._sessions() as session:
                return to_micro(await committed_spend(session, org, period))

        if estimated_cost is None:
            spend, reserved = await self.counters.totals(org_id=org, period=period, seed=seed)
            blocked = spend >= cap
            return BudgetResult(
                "block" if blocked else "warn" if spend >= state.warn else "ok",
                remaining=money(from_micro(max(0, cap - spend - reserved))),
                grace=blocked and in_grace,
            )
        amount = to_micro(Decimal(repr(float(estimated_cost))))
        held = await self.counters.reserve(
            org_id=org,
            period=period,
            amount=amount,
            cap=UNLIMITED if in_grace else cap,
            principal_id=principal_id,
            seed=seed,
        )
        spend = held.spend
        if not held.ok:
            return BudgetResult(
                "block", remaining=money(from_micro(max(0, cap - spend - held.reserved)))
            )
        blocked = spend + held.reserved > cap or spend >= cap
        status = "block" if blocked else "warn" if spend + held.reserved >= state.warn else "ok"
        return BudgetResult(
            status,
            remaining=money(from_micro(max(0, cap - spend - held.reserved))),
            reservation_id=held.reservation_id,
            grace=blocked,
        )
