"""The outbox relay: streams committed audit events to the sink, at least once, in chain order.

Every replica runs a relay, but only the holder of the ``audit-relay`` database lease publishes;
the others stand by and take over when the holder stops renewing (crash) or releases it (clean
stop). One iteration of the leader:

1. renew the lease (a short transaction);
2. read the oldest outbox rows (by id, which follows each chain's seq) with their events;
3. publish them with no transaction open, bounded by a deadline well inside the lease;
4. delete the acknowledged rows. Per chain only the prefix before the first failure is deleted,
   so a failed event and everything after it in that chain is published again (in order) on
   the next attempt: consumers can see duplicates, never a gap.

When the sink is down, requests keep working (the outbox is written by their transactions),
the backlog grows, ``/readyz`` reports the stream as ``degraded`` with the lag, and the relay
retries with backoff until the sink is back and the backlog drains.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import structlog
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from userorg.audit.models import AuditEvent, AuditOutbox
from userorg.audit.recorder import PLATFORM_CHAIN, event_document
from userorg.audit.stream import StreamMessage, StreamSink
from userorg.db import utcnow
from userorg.ops import CheckResult
from userorg.platform.leases import DatabaseLease
from userorg.telemetry.metrics import (
    AUDIT_RELAY_FAILURES,
    AUDIT_RELAY_LEADER,
    AUDIT_RELAY_PUBLISHED,
    OUTBOX_OLDEST_AGE,
    OUTBOX_PENDING,
)

log = structlog.get_logger("userorg.audit.relay")

LEASE_NAME = "audit-relay"
# The stream is reported degraded when the oldest waiting event is older than this.
LAG_DEGRADED_SECONDS = 60.0

Listener = Callable[[Sequence[StreamMessage]], None]


@dataclass
class RelayState:
    role: str = "starting"
    backlog: int = 0
    oldest_pending_at: dt.datetime | None = None
    published: int = 0
    consecutive_failures: int = 0
    last_error: str | None = None
    last_published_at: dt.datetime | None = None

    def lag_seconds(self) -> float:
        if self.oldest_pending_at is None:
            return 0.0
        return max(0.0, (utcnow() - self.oldest_pending_at).total_seconds())


class AuditRelay:
    def __init__(
        self,
        *,
        session_factory: async_sessionmaker[AsyncSession],
        read_session_factory: async_sessionmaker[AsyncSession],
        sink: StreamSink,
        lease_seconds: float,
        batch_size: int = 500,
        poll_interval: float = 1.0,
        holder: str | None = None,
    ) -> None:
        self._session_factory = session_factory
        self._read_session_factory = read_session_factory
        self.sink = sink
        self.lease = DatabaseLease(
            session_factory, name=LEASE_NAME, ttl_seconds=lease_seconds, holder=holder
        )
        # Deliveries are bounded well inside the lease so a relay never publishes after its
        # lease could have passed to another replica.
        self.publish_timeout = lease_seconds / 2
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._standby_interval = min(poll_interval, lease_seconds / 3)
        self.state = RelayState()
        self._listeners: list[Listener] = []
        self._wakeup = asyncio.Event()
        self._stop_event = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._stats_at = 0.0

    # -- lifecycle ------------------------------------------------------------------------
    def add_listener(self, listener: Listener) -> None:
        """Called (in the relay's thread) with every acknowledged batch."""
        self._listeners.append(listener)

    def wake(self) -> None:
        self._wakeup.set()

    @property
    def stopping(self) -> bool:
        return self._stopping

    def start(self) -> None:
        self._stopping = False
        self._stop_event.clear()
        self._task = asyncio.create_task(self._run(), name="audit-relay")

    async def stop(self, *, release: bool = True) -> None:
        """Stop publishing. ``release=False`` leaves the lease to expire (as a crash would)."""
        self._stopping = True
        self._wakeup.set()
        self._stop_event.set()
        if self._task is not None:
            await self._task
            self._task = None
        if release:
            with contextlib.suppress(Exception):
                await self.lease.release()
        await asyncio.to_thread(self.sink.close)
        self.state.role = "stopped"
        AUDIT_RELAY_LEADER.set(0)

    async def _run(self) -> None:
        while not self._stopping:
            published = 0
            try:
                published = await self.run_once()
                self.state.consecutive_failures = 0
            except Exception as error:
                self.state.consecutive_failures += 1
                self.state.last_error = f"{type(error).__name__}: {error}"[:300]
                AUDIT_RELAY_FAILURES.inc()
                log.warning("audit_relay_failed", error=self.state.last_error)
            if self.stopping:
                break
            if published >= self._batch_size and self.state.last_error is None:
                continue  # more waiting: go on at once
            if self.state.last_error is not None and self.state.role == "leader":
                # Back off: commits keep waking the relay, but the sink is down.
                await self._sleep_unless_stopping(self._next_delay())
            else:
                await self._sleep(self._next_delay())
            self._wakeup.clear()

    def _next_delay(self) -> float:
        if self.state.role != "leader":
            return self._standby_interval
        if self.state.last_error is not None:
            failures = max(1, self.state.consecutive_failures)
            backoff = min(self.lease.ttl / 3, self._poll_interval * 2.0 ** min(failures, 6))
            return float(backoff * (0.75 + random.random() / 2))
        return self._poll_interval

    async def _sleep_unless_stopping(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop_event.wait(), timeout=seconds)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), timeout=seconds)

    # -- one iteration --------------------------------------------------------------------
    async def run_once(self) -> int:
        """Renew or take the lease; as leader publish one batch. Returns events acknowledged.
        A leader renews once a third of the lease has passed, not on every batch (each
        renewal is a write transaction; under a steady trickle of events that doubled the
        relay's cost)."""
        lease = self.lease
        fresh = lease.held and lease.remaining_seconds() > lease.ttl * 2 / 3
        if not fresh and not await lease.acquire():
            if self.state.role == "leader":
                log.info("audit_relay_standby", holder=self.lease.holder)
            self.state.role = "standby"
            AUDIT_RELAY_LEADER.set(0)
            await self._refresh_stats(force=False)
            return 0
        if self.state.role != "leader":
            log.info("audit_relay_leader", holder=self.lease.holder, token=self.lease.token)
        self.state.role = "leader"
        AUDIT_RELAY_LEADER.set(1)
        messages, orphans = await self._read_batch()
        if orphans:
            await self._delete(orphans)
        if not messages:
            self.state.last_error = None
            await self._refresh_stats(force=True)
            return 0
        if self.lease.remaining_seconds() <= self.publish_timeout:
            return 0  # renew first, next iteration
        results = await asyncio.to_thread(self.sink.publish, messages, timeout=self.publish_timeout)
        acknowledged = _acknowledged_prefixes(messages, results)
        if acknowledged:
            await self._delete([m.outbox_id for m in acknowledged])
            self.state.published += len(acknowledged)
            self.state.last_published_at = utcnow()
            AUDIT_RELAY_PUBLISHED.inc(len(acknowledged))
            for listener in self._listeners:
                listener(acknowledged)
        errors = [r for r in results if r is not None]
        await self._refresh_stats(force=True)
        if errors:
            raise StreamUnavailable(
                f"{len(errors)} of {len(messages)} events not acknowledged by the "
                f"{self.sink.name} stream: {errors[0]}"
            )
        self.state.last_error = None
        return len(acknowledged)

    async def _read_batch(self) -> tuple[list[StreamMessage], list[int]]:
        async with self._read_session_factory() as session:
            rows = (
                await session.execute(
                    select(AuditOutbox, AuditEvent)
                    .join(AuditEvent, AuditEvent.id == AuditOutbox.event_id, isouter=True)
                    .order_by(AuditOutbox.id)
                    .limit(self._batch_size)
                )
            ).all()
        messages: list[StreamMessage] = []
        orphans: list[int] = []
        for outbox, joined in rows:
            event: AuditEvent | None = joined
            if event is None:  # purged before it could be streamed (should not happen)
                orphans.append(outbox.id)
                log.warning("audit_outbox_orphan", event_id=str(outbox.event_id))
                continue
            messages.append(
                StreamMessage(
                    outbox_id=outbox.id,
                    chain_id=outbox.chain_id,
                    seq=outbox.seq,
                    key=str(event.org_id) if event.org_id else PLATFORM_CHAIN,
                    event_id=str(event.id),
                    value=orjson.dumps(event_document(event)),
                )
            )
        return messages, orphans

    async def _delete(self, outbox_ids: list[int]) -> None:
        async with self._session_factory() as session:
            for start in range(0, len(outbox_ids), 500):
                chunk = outbox_ids[start : start + 500]
                await session.execute(delete(AuditOutbox).where(AuditOutbox.id.in_(chunk)))
            await session.commit()

    async def _refresh_stats(self, *, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self._stats_at < self._standby_interval:
            return
        self._stats_at = now
        async with self._read_session_factory() as session:
            count, oldest = (
                await session.execute(select(func.count(), func.min(AuditOutbox.created_at)))
            ).one()
        self.state.backlog = int(count)
        self.state.oldest_pending_at = _aware(oldest)
        OUTBOX_PENDING.labels("audit").set(self.state.backlog)
        OUTBOX_OLDEST_AGE.labels("audit").set(self.state.lag_seconds())

    # -- readiness ------------------------------------------------------------------------
    async def readiness(self) -> CheckResult:
        """The stream is optional at runtime: a broker outage degrades it, never the API."""
        state = self.state
        lag = state.lag_seconds()
        failing = state.role == "leader" and state.last_error is not None
        detail: dict[str, Any] = {
            "sink": self.sink.name,
            "role": state.role,
            "backlog": state.backlog,
            "lagSeconds": round(lag, 3),
            "published": state.published,
        }
        if state.last_error is not None:
            detail["lastError"] = state.last_error
        up = not failing and lag < LAG_DEGRADED_SECONDS
        return CheckResult(up, detail, required=False)


class StreamUnavailable(Exception):
    pass


def _acknowledged_prefixes(
    messages: Sequence[StreamMessage], results: Sequence[str | None]
) -> list[StreamMessage]:
    """Per chain, the messages before the first failure (later ones are published again)."""
    failed_chains: set[str] = set()
    acknowledged = []
    for message, error in zip(messages, results, strict=True):
        if message.chain_id in failed_chains:
            continue
        if error is None:
            acknowledged.append(message)
        else:
            failed_chains.add(message.chain_id)
    return acknowledged


def _aware(value: Any) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)  # type: ignore[no-any-return]
    return value  # type: ignore[no-any-return]
