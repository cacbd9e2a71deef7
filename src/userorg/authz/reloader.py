"""Hot reload: watch the policy directory and install a new policy set when the files change.

A set that fails to compile or to answer well-formed decisions is refused; the running one keeps
serving, and the failure is logged and shown in ``/readyz`` (check ``policy``).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol

import structlog

from userorg.ops import CheckResult, ReadinessCheck

log = structlog.get_logger("userorg.authz")


class Reloadable(Protocol):
    def changed_on_disk(self) -> bool: ...

    def reload(self, *, force: bool = False) -> bool: ...


class PolicyWatcher:
    def __init__(self, engine: Reloadable, *, interval_seconds: float) -> None:
        self._engine = engine
        self._interval = interval_seconds
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    def start(self) -> None:
        if self._interval > 0:
            self._task = asyncio.create_task(self._loop(), name="policy-watcher")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    async def check_now(self) -> bool:
        """Reload if the files changed (compiled off the event loop); True if installed."""
        if not self._engine.changed_on_disk():
            return False
        return await asyncio.to_thread(self._engine.reload)

    async def _loop(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=self._interval)
            if self._stop.is_set():
                return
            try:
                await self.check_now()
            except Exception:
                log.exception("policy_watch_failed")


class HasInfo(Protocol):
    def info(self) -> dict[str, object]: ...


def policy_check(engine: HasInfo) -> ReadinessCheck:
    """Ready while a policy set is loaded (and, for a remote OPA, while it answers)."""

    async def check() -> CheckResult:
        info = engine.info()
        detail: dict[str, object] = {"engine": info.get("engine"), "revision": info.get("revision")}
        if info.get("lastReloadError"):
            detail["lastReloadError"] = info["lastReloadError"]
        reachable = info.get("reachable", True)
        if info.get("revision") is None or reachable is False:
            detail.setdefault("error", info.get("error") or "no policy loaded")
            return CheckResult(False, detail)
        return CheckResult(True, detail)

    return check
