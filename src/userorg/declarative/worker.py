"""The reconciler loop: find orgs with work due, run them with bounded concurrency.

Work is due when the admin-api asked for it (a webhook, a manual sync, a config change, a
drift hint from an API change — all written to the org's state row in the API's own
transaction), when the poll interval has passed, or when a retry's backoff has run out. The
loop looks at the database every ``declarative_work_poll_seconds`` and at once when the bus
brings a hint (Redis pub/sub in production; in-process when both run in one process).

Stopping waits up to ``declarative_stop_grace_seconds`` for running reconciliations, then
cancels them: their open transactions roll back, their runs are marked ``interrupted`` and
their leases are released, so nothing is left half-applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from typing import Any

import structlog
from sqlalchemy import or_, select

from userorg.db import utcnow
from userorg.declarative.managed import CHANNEL, ensure_state
from userorg.declarative.models import DeclarativeState
from userorg.declarative.reconcile import Outcome, ReconcileEngine
from userorg.orgs.models import Organization
from userorg.platform.bus import InvalidationBus
from userorg.telemetry.metrics import RECONCILE_IN_FLIGHT, RECONCILE_QUEUE_DEPTH

log = structlog.get_logger("userorg.reconciler")
BATCH = 500


def reconciler_id() -> str:
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Reconciler:
    def __init__(self, engine: ReconcileEngine, *, bus: InvalidationBus | None = None) -> None:
        self.engine = engine
        self.settings = engine.settings
        self._bus = bus
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._in_flight: dict[uuid.UUID, asyncio.Task[Outcome | None]] = {}
        self._hints: set[uuid.UUID] = set()
        self._local_backoff: dict[uuid.UUID, tuple[int, float]] = {}
        self._last_adopt = 0.0
        self.last_outcomes: dict[uuid.UUID, Outcome] = {}
        self.queue_depth = 0

    @property
    def in_flight(self) -> set[uuid.UUID]:
        return set(self._in_flight)

    def start(self) -> None:
        if self._bus is not None:
            self._bus.subscribe(CHANNEL, self._on_message)
            self._bus.on_reset(self.wake)
        self._task = asyncio.create_task(self._loop(), name="reconciler")

    async def wake(self) -> None:
        self._wake.set()

    async def _on_message(self, message: dict[str, Any]) -> None:
        if message.get("type") not in {"sync", "check"}:
            return
        with contextlib.suppress(ValueError, TypeError):
            self._hints.add(uuid.UUID(str(message.get("orgId"))))
        self._wake.set()

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            # The loop only reads and schedules; it may be waiting for the (SQLite: single)
            # connection that a running apply holds, so it is cancelled, not awaited.
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        running = list(self._in_flight.values())
        if running:
            _done, pending = await asyncio.wait(
                running, timeout=self.settings.declarative_stop_grace_seconds
            )
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        RECONCILE_IN_FLIGHT.set(0)

    # -- the loop -------------------------------------------------------------------------
    async def _loop(self) -> None:
        while not self._stopping:
            try:
                await self.schedule()
            except Exception:
                log.exception("reconciler_schedule_failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._wake.wait(), timeout=self.settings.declarative_work_poll_seconds
                )
            self._wake.clear()

    async def due_orgs(self) -> list[uuid.UUID]:
        """Orgs whose state asks for work now (requests first, then polls and retries)."""
        now = utcnow()
        async with self.engine.session_factory() as session:
            rows = await session.execute(
                select(
                    DeclarativeState.org_id,
                    DeclarativeState.sync_requested_at,
                    DeclarativeState.check_requested_at,
                )
                .where(
                    or_(
                        DeclarativeState.sync_requested_at.is_not(None),
                        DeclarativeState.check_requested_at.is_not(None),
                        DeclarativeState.next_poll_at.is_(None),
                        DeclarativeState.next_poll_at <= now,
                        DeclarativeState.retry_at <= now,
                    ),
                    or_(
                        DeclarativeState.lease_owner.is_(None),
                        DeclarativeState.lease_expires_at < now,
                    ),
                )
                .order_by(DeclarativeState.next_poll_at)
                .limit(BATCH)
            )
            requested: list[uuid.UUID] = []
            polled: list[uuid.UUID] = []
            for org_id, sync_at, check_at in rows:
                (requested if sync_at or check_at else polled).append(org_id)
        return requested + polled

    async def adopt(self) -> int:
        """Give a state row to orgs that have declarative settings but none yet."""
        async with self.engine.session_factory() as session:
            rows = (
                await session.execute(
                    select(Organization.id, Organization.declarative)
                    .outerjoin(DeclarativeState, DeclarativeState.org_id == Organization.id)
                    .where(DeclarativeState.org_id.is_(None))
                )
            ).all()
        missing = [org_id for org_id, config in rows if config and config.get("enabled")]
        for org_id in missing:
            async with self.engine.uow() as uow:
                await ensure_state(uow.session, org_id)
        return len(missing)

    async def schedule(self) -> None:
        loop = asyncio.get_running_loop()
        if loop.time() - self._last_adopt > self.settings.declarative_poll_interval_seconds:
            self._last_adopt = loop.time()
            await self.adopt()
        hints, self._hints = self._hints, set()
        due = list(dict.fromkeys([*hints, *await self.due_orgs()]))
        now = loop.time()
        queue = [
            org_id
            for org_id in due
            if org_id not in self._in_flight and self._local_backoff.get(org_id, (0, 0.0))[1] <= now
        ]
        free = self.settings.declarative_concurrency - len(self._in_flight)
        for org_id in queue[: max(0, free)]:
            task = asyncio.create_task(self._run(org_id), name=f"reconcile-{org_id}")
            self._in_flight[org_id] = task
        self.queue_depth = max(0, len(queue) - max(0, free))
        RECONCILE_QUEUE_DEPTH.set(self.queue_depth)
        RECONCILE_IN_FLIGHT.set(len(self._in_flight))

    async def _run(self, org_id: uuid.UUID) -> Outcome | None:
        try:
            outcome = await self.engine.run_org(org_id)
            self.last_outcomes[org_id] = outcome
            self._local_backoff.pop(org_id, None)
            return outcome
        except asyncio.CancelledError:
            raise
        except Exception:
            # The database or something unexpected: back off locally (the state row may be
            # unreachable) and try again later.
            failures = self._local_backoff.get(org_id, (0, 0.0))[0] + 1
            delay = min(
                self.settings.declarative_retry_max_seconds,
                self.settings.declarative_retry_base_seconds * 2 ** min(failures - 1, 30),
            )
            self._local_backoff[org_id] = (failures, asyncio.get_running_loop().time() + delay)
            log.exception("reconcile_failed", org_id=str(org_id), retry_in_seconds=delay)
            return None
        finally:
            self._in_flight.pop(org_id, None)
            RECONCILE_IN_FLIGHT.set(len(self._in_flight))
            if not self._stopping:
                self._wake.set()

    async def run_until_idle(self, deadline_seconds: float = 30.0) -> None:
        """Schedule until nothing is due or running (tests and benchmarks)."""
        async with asyncio.timeout(deadline_seconds):
            while True:
                await self.schedule()
                if not self._in_flight:
                    return
                await asyncio.wait(list(self._in_flight.values()))
