"""Deliver queued notifications: ``log`` (one structured line) or ``webhook`` (HMAC-signed POST).

Delivery is at-least-once: a row is marked delivered after the receiver accepted it; failures
are retried with exponential backoff up to ``notify_max_attempts``. Replicas claim rows with
``FOR UPDATE SKIP LOCKED`` on PostgreSQL so each message goes out once per attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import hmac
import random
import time
import uuid
from typing import Any, Protocol

import httpx
import orjson
import structlog
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from userorg.db import utcnow
from userorg.notifications.models import Notification
from userorg.notifications.service import payload_context
from userorg.platform.keystore import Keystore
from userorg.telemetry.metrics import NOTIFICATIONS, OUTBOX_OLDEST_AGE, OUTBOX_PENDING

log = structlog.get_logger("userorg.notifier")
SIGNATURE_HEADER = "X-UserOrg-Signature-256"
_CLAIM_LEASE_SECONDS = 120


class Sender(Protocol):
    async def send(self, notification_id: str, message: dict[str, Any]) -> None: ...


class LogSender:
    async def send(self, notification_id: str, message: dict[str, Any]) -> None:
        log.info("notification", notification_id=notification_id, **message)


class WebhookSender:
    def __init__(self, url: str, secret: str | None, *, timeout: float = 5.0) -> None:
        self._url = url
        self._secret = secret.encode() if secret else None
        self._client = httpx.AsyncClient(timeout=timeout, follow_redirects=False)

    async def send(self, notification_id: str, message: dict[str, Any]) -> None:
        body = orjson.dumps({"id": notification_id, **message})
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "X-UserOrg-Notification-Id": notification_id,
            "X-UserOrg-Timestamp": timestamp,
        }
        if self._secret is not None:
            digest = hmac.new(self._secret, timestamp.encode() + b"." + body, hashlib.sha256)
            headers[SIGNATURE_HEADER] = "sha256=" + digest.hexdigest()
        response = await self._client.post(self._url, content=body, headers=headers)
        if response.status_code >= 300:
            raise RuntimeError(f"webhook answered {response.status_code}")

    async def aclose(self) -> None:
        await self._client.aclose()


def verify_webhook_signature(secret: str, timestamp: str, body: bytes, signature: str) -> bool:
    expected = (
        "sha256="
        + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    )
    return hmac.compare_digest(expected, signature)


class NotificationDispatcher:
    def __init__(
        self,
        *,
        session_factory: async_sessionmaker[AsyncSession],
        keystore: Keystore,
        sender: Sender,
        max_attempts: int,
        retry_base_seconds: float = 2.0,
        poll_interval: float = 5.0,
        batch_size: int = 50,
        backlog_interval: float = 15.0,
    ) -> None:
        self._session_factory = session_factory
        self._keystore = keystore
        self._sender = sender
        self._max_attempts = max_attempts
        self._retry_base = retry_base_seconds
        self._poll_interval = poll_interval
        self._batch_size = batch_size
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._backlog_interval = backlog_interval
        self._backlog_measured_at = float("-inf")

    async def wake(self) -> None:
        self._wakeup.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="notification-dispatcher")

    async def stop(self) -> None:
        self._stopping = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
        aclose = getattr(self._sender, "aclose", None)
        if aclose is not None:
            await aclose()

    async def _run(self) -> None:
        while not self._stopping:
            try:
                delivered = await self.deliver_due()
            except Exception:
                log.exception("notification_dispatch_failed")
                delivered = 0
            if delivered and not self._stopping:
                continue
            if time.monotonic() - self._backlog_measured_at >= self._backlog_interval:
                try:
                    await self.measure_backlog()
                except Exception:
                    log.warning("notification_backlog_unmeasured", exc_info=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout=self._poll_interval)
            self._wakeup.clear()

    async def measure_backlog(self) -> tuple[int, float]:
        """Set the outbox gauges (the OutboxLag alert): rows pending, age of the oldest."""
        self._backlog_measured_at = time.monotonic()
        async with self._session_factory() as session:
            pending, oldest = (
                await session.execute(
                    select(func.count(), func.min(Notification.created_at)).where(
                        Notification.status == "pending"
                    )
                )
            ).one()
        age = max(0.0, (utcnow() - oldest).total_seconds()) if oldest is not None else 0.0
        OUTBOX_PENDING.labels("notifications").set(pending)
        OUTBOX_OLDEST_AGE.labels("notifications").set(age)
        return int(pending), age

    async def deliver_due(self) -> int:
        """Deliver one batch of due notifications; returns how many were attempted.

        Rows are claimed in a short transaction (their next attempt pushed out by a lease), sent
        with no transaction open, then settled; a crash mid-send makes them due again later.
        """
        now = utcnow()
        async with self._session_factory() as session:
            rows = (
                (
                    await session.execute(
                        select(Notification)
                        .where(
                            Notification.status == "pending", Notification.next_attempt_at <= now
                        )
                        .order_by(Notification.next_attempt_at)
                        .limit(self._batch_size)
                        .with_for_update(skip_locked=True)
                    )
                )
                .scalars()
                .all()
            )
            claimed = [(row.id, row.payload_encrypted, row.attempts + 1) for row in rows]
            for row in rows:
                row.attempts += 1
                row.next_attempt_at = now + dt.timedelta(seconds=_CLAIM_LEASE_SECONDS)
            await session.commit()
        outcomes = [await self._send(*item) for item in claimed]
        async with self._session_factory() as session:
            for (notification_id, _payload, attempts), error in zip(claimed, outcomes, strict=True):
                settled = await session.get(Notification, notification_id)
                if settled is None:
                    continue
                row = settled
                if error is None:
                    row.status = "delivered"
                    row.delivered_at = utcnow()
                    row.last_error = None
                elif attempts >= self._max_attempts:
                    row.status = "failed"
                    row.last_error = error[:500]
                    log.warning("notification_failed", notification_id=str(row.id), error=error)
                else:
                    backoff = min(3600.0, self._retry_base * 2.0 ** (attempts - 1))
                    backoff *= 0.5 + random.random()
                    row.next_attempt_at = utcnow() + dt.timedelta(seconds=backoff)
                    row.last_error = error[:500]
            await session.commit()
        for error in outcomes:
            NOTIFICATIONS.labels("delivered" if error is None else "failed_attempt").inc()
        return len(claimed)

    async def _send(
        self, notification_id: uuid.UUID, ciphertext: str, _attempts: int
    ) -> str | None:
        try:
            plaintext = await self._keystore.decrypt(
                ciphertext, context=payload_context(notification_id)
            )
            await self._sender.send(str(notification_id), orjson.loads(plaintext))
        except Exception as error:
            return f"{type(error).__name__}: {error}"
        return None
