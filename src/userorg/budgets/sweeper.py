"""Releases reservations that were never settled, once they expire (admin-api process; every
replica may run it: the release is one atomic step per reservation, so nothing is freed twice)."""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from userorg.budgets.counters import BudgetCounters

log = structlog.get_logger("userorg.budgets.sweeper")


class ReservationSweeper:
    def __init__(self, counters: BudgetCounters, *, interval: float) -> None:
        self._counters = counters
        self._interval = interval
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    def start(self) -> None:
        self._stop.clear()
        self._task = asyncio.create_task(self._loop(), name="budget-sweeper")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                released = await self._counters.sweep()
                if released:
                    log.info("budget_reservations_expired", count=released)
            except Exception:
                log.exception("budget_sweep_failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=self._interval)
