"""Retention: purge events older than ``USER_ORG_AUDIT_RETENTION_DAYS``, sealing first.

For each chain with expired events the job:

1. picks the seal point: the last event of the leading run of expired events (a chain is only
   ever cut at one point, so what remains is contiguous), never past an event still waiting in
   the outbox (it has not been streamed yet);
2. writes a **checkpoint**: the sealed event's seq and hash, the chain head at sealing time, the
   cutoff, signed (Ed25519 over the SHA-256 of its canonical JSON) by the audit signer;
3. deletes the sealed events in batches (each batch its own short transaction) and records a
   ``system:audit:purge`` event in the chain.

The first remaining event's ``prevHash`` is the checkpoint's ``hash``, so the chain verifies
from the checkpoint on; exports starting there carry the signed checkpoint in their header.
The job is idempotent and resumable: a crash after the checkpoint is finished by the next run,
and two replicas racing write one checkpoint (``(chain_id, seq)`` is unique).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from userorg.audit import recorder
from userorg.audit.chain import canonical_json
from userorg.audit.models import AuditChainHead, AuditCheckpoint, AuditEvent, AuditOutbox
from userorg.audit.signing import AuditSigner
from userorg.context import Actor
from userorg.db import new_id, utcnow
from userorg.telemetry.metrics import AUDIT_PURGED

log = structlog.get_logger("userorg.audit.retention")

CHECKPOINT_KIND = "userorg.audit.checkpoint"
DELETE_BATCH = 5000


def org_filter(chain_id: str) -> Any:
    """The org condition equivalent to a chain id (lets the (org_id, occurred_at) index work)."""
    if chain_id == recorder.PLATFORM_CHAIN:
        return AuditEvent.org_id.is_(None)
    return AuditEvent.org_id == _uuid(chain_id)


def checkpoint_document(checkpoint: AuditCheckpoint) -> dict[str, Any]:
    """The signed body of a checkpoint (the signature covers SHA-256 of its canonical JSON)."""
    return {
        "kind": CHECKPOINT_KIND,
        "version": 1,
        "checkpointId": str(checkpoint.id),
        "chainId": checkpoint.chain_id,
        "seq": checkpoint.seq,
        "hash": checkpoint.hash,
        "occurredAt": recorder.format_timestamp(checkpoint.occurred_at),
        "headSeq": checkpoint.head_seq,
        "headHash": checkpoint.head_hash,
        "retentionCutoff": recorder.format_timestamp(checkpoint.retention_cutoff),
        "sealedAt": recorder.format_timestamp(checkpoint.sealed_at),
        "keyId": checkpoint.key_id,
    }


def checkpoint_digest(document: dict[str, Any]) -> bytes:
    body = {k: v for k, v in document.items() if k != "signature"}
    return hashlib.sha256(canonical_json(body)).digest()


@dataclass
class PurgeReport:
    chains_sealed: int = 0
    events_purged: int = 0
    checkpoints: list[str] = field(default_factory=list)


async def _seal_point(
    session: AsyncSession, chain_id: str, cutoff: dt.datetime
) -> tuple[int, str, dt.datetime] | None:
    first_kept = (
        await session.execute(
            select(func.min(AuditEvent.seq)).where(
                org_filter(chain_id),
                AuditEvent.chain_id == chain_id,
                AuditEvent.occurred_at >= cutoff,
            )
        )
    ).scalar_one_or_none()
    pending = (
        await session.execute(
            select(func.min(AuditOutbox.seq)).where(AuditOutbox.chain_id == chain_id)
        )
    ).scalar_one_or_none()
    limits = [s - 1 for s in (first_kept, pending) if s is not None]
    query = select(AuditEvent.seq, AuditEvent.hash, AuditEvent.occurred_at).where(
        AuditEvent.chain_id == chain_id, AuditEvent.occurred_at < cutoff
    )
    if limits:
        query = query.where(AuditEvent.seq <= min(limits))
    row = (await session.execute(query.order_by(AuditEvent.seq.desc()).limit(1))).first()
    if row is None:
        return None
    return int(row[0]), str(row[1]), row[2]


async def purge_expired(
    *,
    session_factory: async_sessionmaker[AsyncSession],
    signer: AuditSigner,
    retention_days: int,
    now: dt.datetime | None = None,
    max_chains: int = 100,
    only_chains: list[str] | None = None,
) -> PurgeReport:
    now = now or utcnow()
    cutoff = now - dt.timedelta(days=retention_days)
    report = PurgeReport()
    query = select(AuditEvent.chain_id).where(AuditEvent.occurred_at < cutoff)
    if only_chains is not None:
        query = query.where(AuditEvent.chain_id.in_(only_chains))
    async with session_factory() as session:
        chains = list(
            (await session.execute(query.group_by(AuditEvent.chain_id).limit(max_chains))).scalars()
        )
    for chain_id in chains:
        purged = await _purge_chain(
            session_factory=session_factory,
            signer=signer,
            chain_id=chain_id,
            cutoff=cutoff,
            retention_days=retention_days,
            report=report,
        )
        report.events_purged += purged
    if report.events_purged:
        AUDIT_PURGED.inc(report.events_purged)
        log.info(
            "audit_events_purged",
            events=report.events_purged,
            chains=report.chains_sealed,
            cutoff=cutoff.isoformat(),
        )
    return report


async def _purge_chain(
    *,
    session_factory: async_sessionmaker[AsyncSession],
    signer: AuditSigner,
    chain_id: str,
    cutoff: dt.datetime,
    retention_days: int,
    report: PurgeReport,
) -> int:
    async with session_factory() as session:
        seal = await _seal_point(session, chain_id, cutoff)
        existing = (
            await session.execute(
                select(AuditCheckpoint.id, AuditCheckpoint.seq)
                .where(AuditCheckpoint.chain_id == chain_id)
                .order_by(AuditCheckpoint.seq.desc())
                .limit(1)
            )
        ).first()
        head_row = await session.get(AuditChainHead, chain_id)
        head = (head_row.last_seq, head_row.last_hash) if head_row is not None else None
        await session.rollback()
    if seal is None or head is None:
        return 0
    seal_seq, seal_hash, seal_time = seal
    sealed: tuple[Any, int] | None = (existing[0], int(existing[1])) if existing else None
    if sealed is None or sealed[1] < seal_seq:
        key_id = await signer.active_key_id()
        checkpoint = AuditCheckpoint(
            id=new_id(),
            chain_id=chain_id,
            seq=seal_seq,
            hash=seal_hash,
            occurred_at=seal_time,
            head_seq=head[0],
            head_hash=head[1],
            retention_cutoff=cutoff,
            sealed_at=utcnow(),
            key_id=key_id,
            signature="",
        )
        # Sign outside any transaction (Vault is a network call).
        signature = await signer.sign(
            checkpoint_digest(checkpoint_document(checkpoint)), key_id=key_id
        )
        checkpoint.signature = signature.b64
        try:
            async with session_factory() as session:
                session.add(checkpoint)
                await session.commit()
        except IntegrityError:
            return 0  # another replica sealed this point first; it purges
        report.chains_sealed += 1
        report.checkpoints.append(str(checkpoint.id))
        sealed = (checkpoint.id, checkpoint.seq)
    checkpoint_id, checkpoint_seq = sealed
    purged = 0
    while True:
        async with session_factory() as session:
            low = (
                await session.execute(
                    select(func.min(AuditEvent.seq)).where(AuditEvent.chain_id == chain_id)
                )
            ).scalar_one_or_none()
            if low is None or low > checkpoint_seq:
                if purged:
                    await recorder.record(
                        session,
                        action="system:audit:purge",
                        actor=Actor.system("retention"),
                        org_id=None if chain_id == recorder.PLATFORM_CHAIN else _uuid(chain_id),
                        target_type="audit_chain",
                        target_id=chain_id,
                        metadata={
                            "checkpointId": str(checkpoint_id),
                            "sealedSeq": checkpoint_seq,
                            "eventsPurged": purged,
                            "retentionDays": retention_days,
                        },
                    )
                    await session.commit()
                return purged
            upper = min(checkpoint_seq, low + DELETE_BATCH - 1)
            result = await session.execute(
                delete(AuditEvent).where(
                    AuditEvent.chain_id == chain_id,
                    AuditEvent.seq >= low,
                    AuditEvent.seq <= upper,
                )
            )
            await session.commit()
            purged += int(getattr(result, "rowcount", 0) or 0)


def _uuid(value: str) -> Any:
    import uuid

    return uuid.UUID(value)
