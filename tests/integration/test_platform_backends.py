"""The swappable backends against their real implementations: Redis and in-process."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from tests.support import services
from tests.support.api import uid
from userorg.errors import RateLimited
from userorg.platform.bus import InProcessBus, RedisBus
from userorg.platform.ratelimit import (
    FailOpenRateLimiter,
    InProcessRateLimiter,
    RateLimiter,
    RedisRateLimiter,
    enforce,
)


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    services.require_redis()
    client = Redis.from_url(services.REDIS_URL)
    yield client
    await client.aclose()


@pytest.fixture(params=["in-process", "redis"])
async def limiter(request: pytest.FixtureRequest, redis: Redis) -> RateLimiter:
    if request.param == "redis":
        return RedisRateLimiter(redis, prefix=f"test-{uid()}")
    return InProcessRateLimiter()


async def test_burst_then_refusal_with_retry_after(limiter: RateLimiter) -> None:
    key = f"k-{uid()}"
    decisions = [await limiter.hit(key, limit=5, period_seconds=60) for _ in range(7)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False] * 2
    assert decisions[0].remaining == 4
    assert 0 < decisions[5].retry_after <= 12.5
    for _ in range(5):
        await enforce(limiter, scope="login_ip", key=key, limit=5, period_seconds=60)
    with pytest.raises(RateLimited) as caught:
        await enforce(limiter, scope="login_ip", key=key, limit=5, period_seconds=60)
    assert caught.value.status == 429
    assert int(caught.value.headers["Retry-After"]) >= 1


async def test_limits_refill(limiter: RateLimiter) -> None:
    key = f"k-{uid()}"
    assert (await limiter.hit(key, limit=2, period_seconds=0.2)).allowed
    assert (await limiter.hit(key, limit=2, period_seconds=0.2)).allowed
    assert not (await limiter.hit(key, limit=2, period_seconds=0.2)).allowed
    await asyncio.sleep(0.15)
    assert (await limiter.hit(key, limit=2, period_seconds=0.2)).allowed


async def test_redis_limit_is_exact_under_concurrency(redis: Redis) -> None:
    prefix = f"test-{uid()}"
    replicas = [
        RedisRateLimiter(Redis.from_url(services.REDIS_URL), prefix=prefix) for _ in range(3)
    ]
    results = await asyncio.gather(
        *(replicas[i % 3].hit("shared", limit=20, period_seconds=60) for i in range(100))
    )
    assert sum(r.allowed for r in results) == 20
    for replica in replicas:
        await replica._redis.aclose()


async def test_fail_open_falls_back_to_local_limits() -> None:
    dead = RedisRateLimiter(Redis.from_url("redis://127.0.0.1:1/0"), prefix="x")
    limiter = FailOpenRateLimiter(dead, InProcessRateLimiter())
    decisions = [await limiter.hit("k", limit=2, period_seconds=60) for _ in range(3)]
    assert [d.allowed for d in decisions] == [True, True, False]
    assert limiter.degraded


async def _wait(predicate: Any, timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")


async def test_in_process_bus_delivers() -> None:
    bus = InProcessBus()
    got: list[dict[str, Any]] = []
    bus.subscribe("keys", got.append)
    await bus.publish("keys", {"keyHash": "abc"})
    assert got == [{"keyHash": "abc"}]


async def test_redis_bus_fans_out_to_every_replica(redis: Redis) -> None:
    prefix = f"test-{uid()}"
    replicas = [RedisBus(Redis.from_url(services.REDIS_URL), prefix=prefix) for _ in range(2)]
    received: list[list[dict[str, Any]]] = [[], []]
    resets = [0, 0]
    for i, bus in enumerate(replicas):
        bus.subscribe("keys", received[i].append)
        bus.on_reset(lambda i=i: resets.__setitem__(i, resets[i] + 1))
        await bus.start()
        assert bus.healthy
    await replicas[0].publish("keys", {"keyHash": "abc"})
    await _wait(lambda: all(r == [{"keyHash": "abc"}] for r in received))
    assert resets == [1, 1]  # each (re)subscription starts with a reset
    for bus in replicas:
        await bus.stop()
        await bus._redis.aclose()
