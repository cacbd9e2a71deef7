"""Periodic housekeeping in the admin-api process: purging deleted orgs, rotating token-signing
keys on schedule, dropping expired challenges and revocation entries, and purging expired audit
events (sealed by a signed checkpoint first; see ``audit.retention``). Every job is idempotent,
so replicas may all run it; PostgreSQL row locks keep two replicas from purging the same org
twice, and a unique checkpoint per (chain, seq) keeps them from sealing twice."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import structlog

from userorg.audit.retention import purge_expired
from userorg.authn.maintenance import purge_expired_auth_records
from userorg.orgs.service import purge_due_orgs

if TYPE_CHECKING:
    from userorg.container import Container

log = structlog.get_logger("userorg.maintenance")


class Maintenance:
    def __init__(self, container: Container) -> None:
        self._container = container
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="maintenance")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    async def run_once(self) -> dict[str, int]:
        async with self._container.uow() as uow:
            purged = await purge_due_orgs(uow)
        if purged:
            log.info("orgs_purged", count=len(purged), org_ids=[str(o) for o in purged])
        settings = self._container.settings
        rotated = await self._container.tokens.rotate_if_due(
            rotation_seconds=settings.signing_key_rotation_seconds,
            prepublish_seconds=settings.signing_key_prepublish_seconds,
        )
        async with self._container.uow() as uow:
            expired = await purge_expired_auth_records(uow.session)
        retention = await purge_expired(
            session_factory=self._container.session_factory,
            signer=self._container.audit_signer,
            retention_days=settings.audit_retention_days,
        )
        return {
            "orgsPurged": len(purged),
            "signingKeysChanged": int(rotated),
            **expired,
            "auditChainsSealed": retention.chains_sealed,
            "auditEventsPurged": retention.events_purged,
        }

    async def _loop(self) -> None:
        interval = self._container.settings.maintenance_interval_seconds
        while not self._stop.is_set():
            try:
                await self.run_once()
            except Exception:
                log.exception("maintenance_failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=interval)
