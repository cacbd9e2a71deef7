"""The invalidation bus: after a commit that can turn an allow into a deny (revoke, suspend,
role change, budget block), the change is published; every replica's caches drop the entry.

Production uses Redis pub/sub; embedded mode delivers in-process and, across the processes
that share its data directory (admin-api and reconciler), through a small SQLite file. A
replica whose Redis subscription is lost is ``healthy == False`` until it resubscribes, and
its handlers receive a ``reset`` (they must drop everything they cached, since messages may
have been missed).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import sqlite3
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
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


class SqliteBus(_Subscriptions):
    """Embedded mode's bus across processes (``make run``: admin-api and reconciler share one
    data directory): messages go through a small SQLite file beside the database.

    ``publish`` delivers in this process at once (like :class:`InProcessBus`) and appends the
    message to the file; every process polls the file every ``poll_seconds`` and delivers the
    messages of the other processes. A process that cannot read the file is ``healthy ==
    False`` (its caches are bypassed) and resets its handlers when it can again. Messages older
    than ``retention_seconds`` are pruned. Delivery delay: one poll interval (100 ms default).
    """

    def __init__(
        self, path: Path, *, poll_seconds: float = 0.1, retention_seconds: float = 300.0
    ) -> None:
        super().__init__()
        self._path = path
        self._poll_seconds = poll_seconds
        self._retention = retention_seconds
        self._origin = uuid.uuid4().hex
        self._last_id = 0
        self._task: asyncio.Task[None] | None = None
        self._connection: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self.healthy = False

    def _connect(self) -> sqlite3.Connection:
        if self._connection is None:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(self._path, timeout=5, check_same_thread=False)
            connection.isolation_level = None
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute(
                "CREATE TABLE IF NOT EXISTS bus_messages (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                "origin TEXT NOT NULL, channel TEXT NOT NULL, payload BLOB NOT NULL, "
                "created REAL NOT NULL)"
            )
            self._connection = connection
        return self._connection

    def _append(self, channel: str, payload: bytes) -> None:
        with self._lock:
            self._connect().execute(
                "INSERT INTO bus_messages (origin, channel, payload, created) VALUES (?, ?, ?, ?)",
                (self._origin, channel, payload, time.time()),
            )

    def _read(self) -> list[tuple[int, str, str, bytes]]:
        with self._lock:
            connection = self._connect()
            rows = connection.execute(
                "SELECT id, origin, channel, payload FROM bus_messages WHERE id > ? ORDER BY id",
                (self._last_id,),
            ).fetchall()
            if rows:
                self._last_id = rows[-1][0]
            return rows

    def _prune(self) -> None:
        with self._lock:
            self._connect().execute(
                "DELETE FROM bus_messages WHERE created < ?", (time.time() - self._retention,)
            )

    def _latest(self) -> int:
        with self._lock:
            row = (
                self._connect().execute("SELECT COALESCE(MAX(id), 0) FROM bus_messages").fetchone()
            )
            return int(row[0])

    async def publish(self, channel: str, message: dict[str, Any]) -> None:
        BUS_MESSAGES.labels("out", channel).inc()
        await self.dispatch(channel, message)
        try:
            await asyncio.to_thread(self._append, channel, orjson.dumps(message))
        except sqlite3.Error as error:
            # The other processes fall back on their cache TTL for this message.
            log.warning("bus_publish_failed", error=str(error))

    async def start(self) -> None:
        try:
            self._last_id = await asyncio.to_thread(self._latest)
            self.healthy = True
        except sqlite3.Error as error:
            log.warning("bus_unavailable", error=str(error))
        self._task = asyncio.create_task(self._poll(), name="invalidation-bus")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    async def _poll(self) -> None:
        last_prune = time.monotonic()
        while True:
            await asyncio.sleep(self._poll_seconds)
            try:
                rows = await asyncio.to_thread(self._read)
                if time.monotonic() - last_prune > 60:
                    last_prune = time.monotonic()
                    await asyncio.to_thread(self._prune)
            except sqlite3.Error as error:
                if self.healthy:
                    log.warning("bus_subscription_lost", error=str(error))
                    self.healthy = False
                    await self.reset()
                continue
            if not self.healthy:
                # Anything may have been missed while the file was unreadable.
                self.healthy = True
                await self.reset()
            for _id, origin, channel, payload in rows:
                if origin == self._origin:
                    continue
                try:
                    message = orjson.loads(payload)
                except orjson.JSONDecodeError:
                    continue
                await self.dispatch(channel, message)
