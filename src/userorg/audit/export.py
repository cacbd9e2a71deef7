"""Signed NDJSON exports of one chain's events in a time window, streamed in constant memory.

The file is one header line, then one event document per line in chain order::

    {"kind": "userorg.audit.export", "formatVersion": 1, "exportId": ..., "chainId": ...,
     "firstSeq": ..., "lastSeq": ..., "eventCount": ..., "anchorHash": ..., "keyId": ..., ...}
    {"eventId": ..., "seq": 41, "prevHash": <anchorHash>, "hash": ..., ...}
    {"eventId": ..., "seq": 42, "prevHash": <hash of 41>, ...}

The export covers the contiguous run of the chain from the first event at or after ``from`` to
the last event before ``to`` (a chain has no holes, so verification can prove continuity).
The job renders the file once to compute its SHA-256, verifies the stored chain on the way (it
never signs a broken chain) and signs the digest. Downloads render the same bytes again from
the database: the range is fixed by sequence numbers, so later events never change it, and a
tampered database shows up as a signature failure. The file is never held in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import hmac
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
import structlog
from sqlalchemy import String, Text, case, cast, func, select, type_coerce, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from userorg.audit.chain import GENESIS_HASH
from userorg.audit.models import AuditCheckpoint, AuditEvent, AuditExport
from userorg.audit.recorder import PLATFORM_CHAIN, format_timestamp
from userorg.audit.retention import checkpoint_document
from userorg.audit.signing import AuditSigner, SigningKeyChanged
from userorg.db import utcnow
from userorg.platform.vault import VaultUnavailable
from userorg.telemetry.metrics import AUDIT_EXPORTS

log = structlog.get_logger("userorg.audit.export")

EXPORT_KIND = "userorg.audit.export"
FORMAT_VERSION = 1
EVENT_SCHEMA = "urn:userorg:schema:audit-event:v1"
MAX_ATTEMPTS = 5
CLAIM_SECONDS = 600
_CHUNK_BYTES = 256 * 1024
_FETCH_ROWS = 5000


def _uuid_sql(column: Any, dialect: str) -> Any:
    if dialect == "sqlite":  # stored as 32 hex digits
        parts: list[Any] = [func.substr(column, start, size) for start, size in _UUID_PARTS]
        text = parts[0]
        for part in parts[1:]:
            text = text.op("||")("-").op("||")(part)
        return type_coerce(text, String)
    return cast(column, String)


_UUID_PARTS = ((1, 8), (9, 4), (13, 4), (17, 4), (21, 12))


def _timestamp_sql(column: Any, dialect: str) -> Any:
    if dialect == "sqlite":  # stored as "YYYY-MM-DD HH:MM:SS.ffffff" (UTC)
        iso = func.replace(column, " ", "T")
        return type_coerce(
            case(
                (func.length(column) == 19, iso.op("||")(".000000Z")),
                else_=iso.op("||")("Z"),
            ),
            String,
        )
    return func.to_char(func.timezone("UTC", column), 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"', type_=String)


def _columns(dialect: str) -> tuple[Any, ...]:
    """The event columns, formatted by the database as the document wants them (UUIDs and
    RFC 3339 timestamps as text, JSON as text): the per-row Python work stays minimal, and on
    SQLite the formatting runs in the driver's thread, beside the rendering."""
    return (
        _uuid_sql(AuditEvent.id, dialect),
        AuditEvent.chain_id,
        AuditEvent.seq,
        _uuid_sql(AuditEvent.org_id, dialect),
        _timestamp_sql(AuditEvent.occurred_at, dialect),
        AuditEvent.action,
        AuditEvent.outcome,
        AuditEvent.actor_type,
        AuditEvent.actor_id,
        AuditEvent.target_type,
        AuditEvent.target_id,
        AuditEvent.policy_id,
        AuditEvent.reason,
        AuditEvent.ip,
        AuditEvent.user_agent,
        AuditEvent.request_id,
        type_coerce(AuditEvent.metadata_, Text)
        if dialect == "sqlite"
        else cast(AuditEvent.metadata_, Text),
        AuditEvent.prev_hash,
        AuditEvent.hash,
    )


def row_body(row: Any) -> dict[str, Any]:
    """The event document without ``hash`` (``recorder.event_document``) from ``_columns``."""
    (
        event_id,
        chain_id,
        seq,
        org_id,
        occurred_at,
        action,
        outcome,
        actor_type,
        actor_id,
        target_type,
        target_id,
        policy_id,
        reason,
        ip,
        user_agent,
        request_id,
        metadata,
        prev_hash,
        _hash,
    ) = row
    return {
        "eventId": event_id,
        "chainId": chain_id,
        "seq": seq,
        "orgId": org_id,
        "occurredAt": occurred_at,
        "action": action,
        "outcome": outcome,
        "actor": {"type": actor_type, "id": actor_id},
        "target": {"type": target_type, "id": target_id},
        "policyId": policy_id,
        "reason": reason,
        "ip": ip,
        "userAgent": user_agent,
        "requestId": request_id,
        "metadata": orjson.loads(metadata) if metadata is not None else {},
        "prevHash": prev_hash,
    }


def header_document(export: AuditExport, checkpoint: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "kind": EXPORT_KIND,
        "formatVersion": FORMAT_VERSION,
        "eventSchema": EVENT_SCHEMA,
        "exportId": str(export.id),
        "orgId": str(export.org_id) if export.org_id else None,
        "chainId": export.chain_id,
        "from": format_timestamp(export.window_from),
        "to": format_timestamp(export.window_to),
        "firstSeq": export.first_seq,
        "lastSeq": export.last_seq,
        "eventCount": export.event_count,
        "anchorHash": export.anchor_hash,
        "checkpoint": checkpoint,
        "keyId": export.key_id,
        "createdAt": format_timestamp(export.created_at),
        "digest": "sha256",
        "signature": "Ed25519 over the 32-byte SHA-256 digest of this file",
    }


async def _checkpoint_for(session: AsyncSession, export: AuditExport) -> dict[str, Any] | None:
    if export.checkpoint_id is None:
        return None
    checkpoint = await session.get(AuditCheckpoint, export.checkpoint_id)
    if checkpoint is None:
        return None
    return {**checkpoint_document(checkpoint), "signature": checkpoint.signature}


@dataclass
class RenderTally:
    events: int = 0


async def render(
    session: AsyncSession,
    export: AuditExport,
    *,
    verify: bool = False,
    tally: RenderTally | None = None,
) -> AsyncIterator[bytes]:
    """The export file in chunks: header line, then every event line in seq order.

    An event line is the canonical JSON of the event without ``hash`` (sorted keys, what the
    hash covers) with ``hash`` appended: one serialisation per event serves both the file and,
    with ``verify``, the check that the stored chain is intact (hash, link, no gap).
    """
    header = orjson.dumps(header_document(export, await _checkpoint_for(session, export)))
    buffer = bytearray(header + b"\n")
    if export.first_seq is not None and export.last_seq is not None:
        expected_prev = export.anchor_hash
        expected_seq = export.first_seq
        connection = await session.connection()
        result = await connection.stream(
            select(*_columns(connection.dialect.name))
            .where(
                AuditEvent.chain_id == export.chain_id,
                AuditEvent.seq >= export.first_seq,
                AuditEvent.seq <= export.last_seq,
            )
            .order_by(AuditEvent.seq)
            .execution_options(yield_per=_FETCH_ROWS)
        )
        partitions = result.partitions().__aiter__()
        pending: asyncio.Future[Any] = asyncio.ensure_future(anext(partitions, None))
        try:
            while True:
                partition = await pending
                if partition is None:
                    break
                # Read ahead: the next rows are fetched while this partition is rendered.
                pending = asyncio.ensure_future(anext(partitions, None))
                await asyncio.sleep(0)
                for row in partition:
                    body = row_body(row)
                    stored_hash: str = row[18]
                    body_bytes = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
                    if verify:
                        seq = row[2]
                        problem = None
                        if not hmac.compare_digest(
                            hashlib.sha256(body_bytes).hexdigest(), stored_hash
                        ):
                            problem = "the event's content does not match its hash"
                        elif body["prevHash"] != expected_prev:
                            problem = "prevHash does not match the previous event"
                        elif seq != expected_seq:
                            problem = f"expected seq {expected_seq}"
                        if problem is not None:
                            event = body["eventId"]
                            raise ChainBroken(
                                f"stored chain broken at seq {seq} (event {event}): {problem}"
                            )
                        expected_prev = stored_hash
                        expected_seq = seq + 1
                    buffer += body_bytes[:-1]
                    buffer += b',"hash":"'
                    buffer += stored_hash.encode()
                    buffer += b'"}\n'
                if tally is not None:
                    tally.events += len(partition)
                if len(buffer) >= _CHUNK_BYTES:
                    yield bytes(buffer)
                    buffer.clear()
        finally:
            if not pending.done():  # stopped early (error, client gone): finish the fetch
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await pending
            await result.close()
    if buffer:
        yield bytes(buffer)


class ChainBroken(Exception):
    pass


class ExportGone(Exception):
    """The export's events were purged by retention after it was produced."""


async def still_available(session: AsyncSession, export: AuditExport) -> bool:
    if export.first_seq is None:
        return True
    sealed = (
        await session.execute(
            select(func.max(AuditCheckpoint.seq)).where(AuditCheckpoint.chain_id == export.chain_id)
        )
    ).scalar_one_or_none()
    return sealed is None or sealed < export.first_seq


async def plan_range(session: AsyncSession, export: AuditExport) -> None:
    """Fix the export's seq range, anchor and checkpoint (before anything is rendered)."""
    in_window = (
        AuditEvent.chain_id == export.chain_id,
        AuditEvent.occurred_at >= export.window_from,
        AuditEvent.occurred_at < export.window_to,
    )
    org_filter: Any
    if export.org_id is None:
        org_filter = AuditEvent.org_id.is_(None)
    else:
        org_filter = AuditEvent.org_id == export.org_id
    first, last = (
        await session.execute(
            select(func.min(AuditEvent.seq), func.max(AuditEvent.seq)).where(org_filter, *in_window)
        )
    ).one()
    checkpoint = (
        await session.execute(
            select(AuditCheckpoint)
            .where(AuditCheckpoint.chain_id == export.chain_id)
            .order_by(AuditCheckpoint.seq.desc())
            .limit(1)
        )
    ).scalar_one_or_none()
    if first is not None and checkpoint is not None and first <= checkpoint.seq:
        first = checkpoint.seq + 1
    if first is None or last is None or first > last:
        export.first_seq = export.last_seq = None
        export.event_count = 0
        export.anchor_hash = None
        export.checkpoint_id = None
        return
    export.first_seq, export.last_seq = int(first), int(last)
    export.event_count = int(last) - int(first) + 1
    anchor = (
        await session.execute(
            select(AuditEvent.prev_hash).where(
                AuditEvent.chain_id == export.chain_id, AuditEvent.seq == first
            )
        )
    ).scalar_one()
    export.anchor_hash = anchor
    export.checkpoint_id = (
        checkpoint.id if checkpoint is not None and checkpoint.seq + 1 == first else None
    )
    if first == 1 and anchor != GENESIS_HASH:
        raise ChainBroken("the chain's first event does not start from the genesis hash")


async def produce(
    *,
    session_factory: async_sessionmaker[AsyncSession],
    read_session_factory: async_sessionmaker[AsyncSession],
    signer: AuditSigner,
    export_id: uuid.UUID,
) -> AuditExport:
    """Plan, render (hash + verify), sign and complete one claimed export."""
    key_id = await signer.active_key_id()
    async with session_factory() as session:
        export = await session.get(AuditExport, export_id)
        if export is None:
            raise LookupError(f"export {export_id} vanished")
        export.key_id = key_id
        await plan_range(session, export)
        await session.commit()
    digest = hashlib.sha256()
    size = 0
    async with read_session_factory() as session:
        export = await session.get(AuditExport, export_id)
        assert export is not None
        tally = RenderTally()
        async for chunk in render(session, export, verify=True, tally=tally):
            digest.update(chunk)
            size += len(chunk)
        if tally.events != (export.event_count or 0):
            raise ChainBroken(
                f"expected {export.event_count} events in seq {export.first_seq}.."
                f"{export.last_seq}, found {tally.events}"
            )
    signature = await signer.sign(digest.digest(), key_id=key_id)
    async with session_factory() as session:
        export = await session.get(AuditExport, export_id)
        assert export is not None
        export.sha256 = digest.hexdigest()
        export.size_bytes = size
        export.signature = signature.b64
        export.status = "completed"
        export.completed_at = utcnow()
        export.claimed_until = None
        export.error = None
        await session.commit()
    AUDIT_EXPORTS.labels("completed").inc()
    log.info(
        "audit_export_completed",
        export_id=str(export_id),
        events=export.event_count,
        bytes=size,
        key_id=key_id,
    )
    return export


class ExportWorker:
    """Runs pending exports in the background; any replica may claim one (SKIP LOCKED)."""

    def __init__(
        self,
        *,
        session_factory: async_sessionmaker[AsyncSession],
        read_session_factory: async_sessionmaker[AsyncSession],
        signer: AuditSigner,
        poll_interval: float = 5.0,
    ) -> None:
        self._session_factory = session_factory
        self._read_session_factory = read_session_factory
        self._signer = signer
        self._poll_interval = poll_interval
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def wake(self) -> None:
        self._wakeup.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="audit-export-worker")

    async def stop(self) -> None:
        self._stopping = True
        self._wakeup.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        while not self._stopping:
            worked = False
            try:
                worked = await self.run_once()
            except Exception:
                log.exception("audit_export_worker_failed")
            if worked and not self._stopping:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout=self._poll_interval)
            self._wakeup.clear()

    async def _claim(self) -> tuple[uuid.UUID, int] | None:
        now = utcnow()
        async with self._session_factory() as session:
            export = (
                await session.execute(
                    select(AuditExport)
                    .where(
                        (AuditExport.status == "pending")
                        | ((AuditExport.status == "running") & (AuditExport.claimed_until < now))
                    )
                    .order_by(AuditExport.created_at)
                    .limit(1)
                    .with_for_update(skip_locked=True)
                )
            ).scalar_one_or_none()
            if export is None:
                return None
            export.status = "running"
            export.attempts += 1
            export.claimed_until = now + dt.timedelta(seconds=CLAIM_SECONDS)
            claimed = (export.id, export.attempts)
            await session.commit()
        return claimed

    async def run_once(self) -> bool:
        """Claim and produce one export; False when there was nothing to do."""
        claimed = await self._claim()
        if claimed is None:
            return False
        export_id, attempts = claimed
        if attempts > MAX_ATTEMPTS:
            await self._finish_failed(export_id, "gave up after repeated failures")
            return True
        try:
            await produce(
                session_factory=self._session_factory,
                read_session_factory=self._read_session_factory,
                signer=self._signer,
                export_id=export_id,
            )
        except ChainBroken as error:
            await self._finish_failed(export_id, f"chain_broken: {error}")
        except (VaultUnavailable, SigningKeyChanged) as error:
            # Transient: back to pending, retried on the next round.
            log.warning("audit_export_retry", export_id=str(export_id), error=str(error))
            await self._set(export_id, status="pending", claimed_until=None, error=str(error))
        except Exception as error:
            log.exception("audit_export_failed", export_id=str(export_id))
            await self._set(
                export_id,
                status="pending",
                claimed_until=None,
                error=f"{type(error).__name__}: {error}"[:500],
            )
        return True

    async def _finish_failed(self, export_id: uuid.UUID, reason: str) -> None:
        AUDIT_EXPORTS.labels("failed").inc()
        log.warning("audit_export_failed", export_id=str(export_id), reason=reason)
        await self._set(
            export_id,
            status="failed",
            claimed_until=None,
            error=reason[:500],
            completed_at=utcnow(),
        )

    async def _set(self, export_id: uuid.UUID, **values: Any) -> None:
        async with self._session_factory() as session:
            await session.execute(
                update(AuditExport).where(AuditExport.id == export_id).values(**values)
            )
            await session.commit()


def chain_label(chain_id: str) -> str:
    return "platform" if chain_id == PLATFORM_CHAIN else chain_id
