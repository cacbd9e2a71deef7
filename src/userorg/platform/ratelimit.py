"""Rate limits (GCRA): Redis-backed and atomic across replicas in production, in-process in
embedded mode. Both answer the same question: may this key spend ``cost`` now, and if not,
how long until it may?

GCRA keeps one timestamp per key (the "theoretical arrival time"), so a limit of N per period
allows bursts of up to N and then one request every period/N.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Protocol

from redis.asyncio import Redis

from userorg.errors import RateLimited
from userorg.telemetry.metrics import RATE_LIMITED


@dataclass(frozen=True, slots=True)
class RateDecision:
    allowed: bool
    retry_after: float  # seconds until the request would be allowed (0 when allowed)
    remaining: int


class RateLimiter(Protocol):
    async def hit(
        self, key: str, *, limit: int, period_seconds: float, cost: int = 1
    ) -> RateDecision: ...


def _gcra(
    tat: float, now: float, *, limit: int, period: float, cost: int
) -> tuple[RateDecision, float]:
    """One GCRA step: returns the decision and the new theoretical arrival time."""
    interval = period / limit
    burst = period  # tolerance: a full period's worth of requests at once
    tat = max(tat, now)
    new_tat = tat + interval * cost
    allow_at = new_tat - burst
    if allow_at > now:
        return RateDecision(False, allow_at - now, 0), tat
    remaining = int((burst - (new_tat - now)) / interval)
    return RateDecision(True, 0.0, max(0, remaining)), new_tat


class InProcessRateLimiter:
    """Embedded mode: exact within the process (one event loop, no awaits inside a step)."""

    def __init__(self, clock: object = time.monotonic, max_keys: int = 100_000) -> None:
        self._clock = clock
        self._tats: dict[str, float] = {}
        self._max_keys = max_keys

    async def hit(
        self, key: str, *, limit: int, period_seconds: float, cost: int = 1
    ) -> RateDecision:
        now = self._clock()  # type: ignore[operator]
        decision, tat = _gcra(
            self._tats.get(key, 0.0), now, limit=limit, period=period_seconds, cost=cost
        )
        self._tats[key] = tat
        if len(self._tats) > self._max_keys:
            self._evict(now)
        return decision

    def _evict(self, now: float) -> None:
        for stale in [k for k, tat in self._tats.items() if tat <= now]:
            del self._tats[stale]


_GCRA_LUA = """
local key = KEYS[1]
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local tat = tonumber(redis.call('GET', key) or '0')
if tat < now then tat = now end
local new_tat = tat + interval * cost
local allow_at = new_tat - burst
if allow_at > now then
  return {0, tostring(allow_at - now), 0}
end
redis.call('SET', key, tostring(new_tat), 'PX', math.ceil((new_tat - now) * 1000) + 1000)
return {1, '0', math.floor((burst - (new_tat - now)) / interval)}
"""


class RedisRateLimiter:
    """Production: one Lua script per hit, atomic in Redis, using Redis's clock."""

    def __init__(self, redis: Redis, *, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix
        self._script = redis.register_script(_GCRA_LUA)

    async def hit(
        self, key: str, *, limit: int, period_seconds: float, cost: int = 1
    ) -> RateDecision:
        interval = period_seconds / limit
        allowed, retry_after, remaining = await self._script(
            keys=[f"{self._prefix}:rl:{key}"], args=[interval, period_seconds, cost]
        )
        return RateDecision(bool(int(allowed)), float(retry_after), max(0, int(remaining)))


class FailOpenRateLimiter:
    """Wraps a shared limiter; when its backend is unreachable, falls back to a local one
    (limits then hold per replica instead of globally) rather than failing requests."""

    def __init__(self, primary: RateLimiter, fallback: RateLimiter, *, timeout: float = 0.25):
        self._primary = primary
        self._fallback = fallback
        self._timeout = timeout
        self.degraded = False

    async def hit(
        self, key: str, *, limit: int, period_seconds: float, cost: int = 1
    ) -> RateDecision:
        try:
            async with asyncio.timeout(self._timeout):
                decision = await self._primary.hit(
                    key, limit=limit, period_seconds=period_seconds, cost=cost
                )
        except Exception:
            self.degraded = True
            return await self._fallback.hit(
                key, limit=limit, period_seconds=period_seconds, cost=cost
            )
        self.degraded = False
        return decision


async def enforce(
    limiter: RateLimiter, *, scope: str, key: str, limit: int, period_seconds: float, cost: int = 1
) -> None:
    """Spend from a limit or raise 429 with Retry-After; ``scope`` names the limit."""
    decision = await limiter.hit(
        f"{scope}:{key}", limit=limit, period_seconds=period_seconds, cost=cost
    )
    if not decision.allowed:
        RATE_LIMITED.labels(scope).inc()
        raise RateLimited(decision.retry_after, scope=scope)
