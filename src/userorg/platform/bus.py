"""The invalidation bus: after a commit that can turn an allow into a deny (revoke, suspend,
role change, budget block), the change is published; every replica's caches drop the entry.

Production uses Redis pub/sub; embedded mode delivers in-process. A replica whose Redis
subscription is lost is ``healthy == False`` until it resubscribes, and its handlers receive a
``reset`` (they must drop everything they cached, since messages may have been missed).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import orjson
import structlog
from redis.asyncio import Redis

from userorg.telemetry.metrics import BUS_MESSAGES

log = structlog.get_logger("userorg.bus")
Handler = Callable[[dict[str, Any]], Awaitable[None] | None]
ResetHandler = Callable[[], Awaitable[None] | None]


class InvalidationBus(Protocol):
    healthy: bool

    async def publish(self, channel: str, message: dict[str, Any]) -> None: ...

    def subscribe(self, channel: str, handler: Handler) -> None: ...

    def on_reset(self, handler: ResetHandler) -> None: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


async def _call(handler: Callable[..., Awaitable[None] | None], *args: Any) -> None:
    try:
        result = handler(*args)
        if inspect.isawaitable(result):
            await result
    except Exception:
        log.exception("bus_handler_failed")


class _Subscriptions:
    def __init__(self) -> None:
        self.handlers: dict[str, list[Handler]] = {}
        self.reset_handlers: list[ResetHandler] = []

    def subscribe(self, channel: str, handler: Handler) -> None:
        self.handlers.setdefault(channel, []).append(handler)

    def on_reset(self, handler: ResetHandler) -> None:
        self.reset_handlers.append(handler)

    async def dispatch(self, channel: str, message: dict[str, Any]) -> None:
        BUS_MESSAGES.labels("in", channel).inc()
        for handler in self.handlers.get(channel, []):
            await _call(handler, message)

    async def reset(self) -> None:
        for handler in self.reset_handlers:
            await _call(handler)


class InProcessBus(_Subscriptions):
    healthy = True

    async def publish(self, channel: str, message: dict[str, Any]) -> None:
        BUS_MESSAGES.labels("out", channel).inc()
        await self.dispatch(channel, message)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


class RedisBus(_Subscriptions):
    def __init__(self, redis: Redis, *, prefix: str, reconnect_delay: float = 0.5) -> None:
        super().__init__()
        self._redis = redis
        self._prefix = prefix
        self._reconnect_delay = reconnect_delay
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.healthy = False
        self._subscribed = asyncio.Event()

    def _wire(self, channel: str) -> str:
        return f"{self._prefix}:bus:{channel}"

    async def publish(self, channel: str, message: dict[str, Any]) -> None:
        BUS_MESSAGES.labels("out", channel).inc()
        await self._redis.publish(self._wire(channel), orjson.dumps(message))

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="invalidation-bus")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), timeout=5)

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _listen(self) -> None:
        prefix = self._wire("")
        while not self._stopping:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.psubscribe(prefix + "*")
                # Anything may have been missed while unsubscribed: caches start over.
                await self.reset()
                self.healthy = True
                self._subscribed.set()
                async for raw in pubsub.listen():
                    if raw.get("type") != "pmessage":
                        continue
                    channel = raw["channel"]
                    channel = channel.decode() if isinstance(channel, bytes) else channel
                    try:
                        message = orjson.loads(raw["data"])
                    except orjson.JSONDecodeError:
                        continue
                    await self.dispatch(channel.removeprefix(prefix), message)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                if self.healthy:
                    log.warning("bus_subscription_lost", error=str(error))
                self.healthy = False
                await self.reset()
                await asyncio.sleep(self._reconnect_delay)
            finally:
                self.healthy = False
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
