"""Reading the audit trail: filtered, paginated queries and chain verification from storage."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from userorg.audit.chain import ChainVerification, ChainVerifier
from userorg.audit.models import AuditCheckpoint, AuditEvent, AuditExport
from userorg.audit.recorder import chain_id_for, event_document, record
from userorg.audit.signing import AuditSigner
from userorg.context import Actor
from userorg.db import UnitOfWork, new_id, utcnow
from userorg.errors import BadRequest, Conflict, NotFound, ValidationFailed
from userorg.schemas import decode_cursor, encode_cursor


async def query_events(
    session: AsyncSession,
    *,
    org_id: uuid.UUID,
    limit: int,
    cursor: str | None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    actor_id: str | None = None,
    action: str | None = None,
    outcome: str | None = None,
    target_id: str | None = None,
) -> tuple[list[AuditEvent], str | None]:
    """Newest first. ``action`` matches exactly, or as a prefix when it ends with ``*``."""
    if since and until and since > until:
        raise ValidationFailed("'from' must not be after 'to'", code="invalid_time_window")
    query = (
        select(AuditEvent)
        .where(AuditEvent.chain_id == chain_id_for(org_id))
        .order_by(AuditEvent.seq.desc())
        .limit(limit + 1)
    )
    position = decode_cursor(cursor)
    if position is not None:
        before = position.get("seq")
        if not isinstance(before, int):
            raise BadRequest("The cursor is not valid", code="invalid_cursor")
        query = query.where(AuditEvent.seq < before)
    if since is not None:
        query = query.where(AuditEvent.occurred_at >= since)
    if until is not None:
        query = query.where(AuditEvent.occurred_at < until)
    if actor_id is not None:
        query = query.where(AuditEvent.actor_id == actor_id)
    if target_id is not None:
        query = query.where(AuditEvent.target_id == target_id)
    if outcome is not None:
        query = query.where(AuditEvent.outcome == outcome)
    if action is not None:
        if action.endswith("*"):
            prefix = action[:-1].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            query = query.where(AuditEvent.action.like(f"{prefix}%", escape="\\"))
        else:
            query = query.where(AuditEvent.action == action)
    rows = list((await session.execute(query)).scalars())
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor({"seq": rows[-1].seq})
    return rows, next_cursor


async def latest_checkpoint(session: AsyncSession, chain_id: str) -> AuditCheckpoint | None:
    return (
        await session.execute(
            select(AuditCheckpoint)
            .where(AuditCheckpoint.chain_id == chain_id)
            .order_by(AuditCheckpoint.seq.desc())
            .limit(1)
        )
    ).scalar_one_or_none()


async def verify_stored_chain(session: AsyncSession, *, chain_id: str) -> ChainVerification:
    """Recompute the stored chain (streamed in batches) and report the first bad event.

    After a retention purge the chain starts at its latest checkpoint: the first remaining
    event must follow the checkpoint's seq and hash (the checkpoint's own signature is checked
    by ``userorg audit verify-db``).
    """
    checkpoint = await latest_checkpoint(session, chain_id)
    query = select(AuditEvent).where(AuditEvent.chain_id == chain_id)
    if checkpoint is not None:
        query = query.where(AuditEvent.seq > checkpoint.seq)
        verifier = ChainVerifier(
            expected_prev_hash=checkpoint.hash, expected_first_seq=checkpoint.seq + 1
        )
    else:
        verifier = ChainVerifier()
    result = await session.stream_scalars(
        query.order_by(AuditEvent.seq).execution_options(yield_per=1000)
    )
    async for event in result:
        if not verifier.feed(event_document(event)):
            break
    return verifier.result()


# -- exports -------------------------------------------------------------------------------
MAX_OPEN_EXPORTS_PER_CHAIN = 3
CLOCK_SKEW = dt.timedelta(minutes=1)


async def create_export(
    uow: UnitOfWork,
    *,
    actor: Actor,
    org_id: uuid.UUID | None,
    window_from: dt.datetime,
    window_to: dt.datetime,
    max_window_days: int,
) -> AuditExport:
    """Queue an export of the org's chain (``org_id=None``: the platform chain)."""
    now = utcnow()
    window = {"from": window_from.isoformat(), "to": window_to.isoformat()}
    if window_from >= window_to:
        raise ValidationFailed(
            "'from' must be before 'to'", code="invalid_time_window", details=window
        )
    if window_to > now + CLOCK_SKEW:
        raise ValidationFailed(
            "'to' must not be in the future: an export covers events already recorded",
            code="window_in_future",
            details={**window, "now": now.isoformat()},
        )
    if window_to - window_from > dt.timedelta(days=max_window_days):
        raise ValidationFailed(
            f"The window may span at most {max_window_days} days; split the export",
            code="window_too_large",
            details={**window, "maxWindowDays": max_window_days},
        )
    chain_id = chain_id_for(org_id)
    open_exports = (
        await uow.session.execute(
            select(func.count())
            .select_from(AuditExport)
            .where(AuditExport.chain_id == chain_id, AuditExport.status.in_(("pending", "running")))
        )
    ).scalar_one()
    if open_exports >= MAX_OPEN_EXPORTS_PER_CHAIN:
        raise Conflict(
            "Too many exports of this organization are still running; wait for them",
            code="too_many_exports",
            details={"running": int(open_exports), "limit": MAX_OPEN_EXPORTS_PER_CHAIN},
        )
    export = AuditExport(
        id=new_id(),
        org_id=org_id,
        chain_id=chain_id,
        window_from=window_from,
        window_to=window_to,
        status="pending",
        requested_by_type=actor.type,
        requested_by_id=actor.id,
        attempts=0,
        created_at=now,
    )
    uow.session.add(export)
    await record(
        uow.session,
        action="api:audit_export:create",
        actor=actor,
        org_id=org_id,
        target_type="audit_export",
        target_id=export.id,
        metadata={"from": window["from"], "to": window["to"]},
    )
    return export


async def get_export(session: AsyncSession, export_id: uuid.UUID) -> AuditExport:
    export = await session.get(AuditExport, export_id)
    if export is None:
        raise NotFound("audit_export", export_id)
    return export


async def verify_checkpoint(
    session: AsyncSession, *, signer: AuditSigner, chain_id: str
) -> bool | None:
    """The latest checkpoint's signature against the published keys (None: no checkpoint)."""
    import base64

    from userorg.audit.retention import checkpoint_digest, checkpoint_document
    from userorg.audit.signing import load_public_key, verify_signature

    checkpoint = await latest_checkpoint(session, chain_id)
    if checkpoint is None:
        return None
    keys = {k.key_id: k for k in await signer.public_keys()}
    key = keys.get(checkpoint.key_id)
    if key is None:
        return False
    return verify_signature(
        load_public_key(key.public_key_pem),
        base64.b64decode(checkpoint.signature),
        checkpoint_digest(checkpoint_document(checkpoint)),
    )
