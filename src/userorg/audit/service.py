"""Reading the audit trail: filtered, paginated queries and chain verification from storage."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from userorg.audit.chain import ChainVerification, ChainVerifier
from userorg.audit.models import AuditEvent
from userorg.audit.recorder import chain_id_for, event_document
from userorg.errors import BadRequest, ValidationFailed
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


async def verify_stored_chain(session: AsyncSession, *, chain_id: str) -> ChainVerification:
    """Recompute the whole stored chain (streamed in batches) and report the first bad event."""
    result = await session.stream_scalars(
        select(AuditEvent)
        .where(AuditEvent.chain_id == chain_id)
        .order_by(AuditEvent.seq)
        .execution_options(yield_per=1000)
    )
    verifier = ChainVerifier()
    async for event in result:
        if not verifier.feed(event_document(event)):
            break
    return verifier.result()
