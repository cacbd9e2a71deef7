"""Append audit events to the per-org hash chain inside the caller's transaction.

The same transaction writes an outbox row, which the relay (``audit.relay``) streams to Kafka
or a JSONL file after the commit: an event is streamed if and only if it was committed.

Each event's hash covers every field and the previous event's hash, so altering, removing,
inserting or reordering a stored event breaks the chain (see ``audit.chain``). Appends to one
chain are serialised by a row lock on its head (PostgreSQL) or by SQLite's single writer.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from userorg.audit.chain import GENESIS_HASH, event_hash
from userorg.audit.models import AuditChainHead, AuditEvent, AuditOutbox
from userorg.audit.redaction import redact
from userorg.context import Actor, current_request
from userorg.db import new_id, utcnow

PLATFORM_CHAIN = "platform"
# Set on a session that wrote audit events; the container wakes the relay after its commit.
OUTBOX_WRITTEN = "userorg.audit.outbox_pending"


def chain_id_for(org_id: uuid.UUID | None) -> str:
    return str(org_id) if org_id is not None else PLATFORM_CHAIN


async def _lock_chain_head(session: AsyncSession, chain_id: str) -> AuditChainHead:
    """The chain's head row, locked for this transaction (created on the chain's first event).
    The common case, an existing chain, is one statement."""
    locked = (
        select(AuditChainHead)
        .where(AuditChainHead.chain_id == chain_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    head = (await session.execute(locked)).scalar_one_or_none()
    if head is not None:
        return head
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    await session.execute(
        insert(AuditChainHead)
        .values(chain_id=chain_id, last_seq=0, last_hash=GENESIS_HASH)
        .on_conflict_do_nothing(index_elements=["chain_id"])
    )
    return (await session.execute(locked)).scalar_one()


async def record(
    session: AsyncSession,
    *,
    action: str,
    actor: Actor,
    org_id: uuid.UUID | None,
    target_type: str | None = None,
    target_id: object | None = None,
    outcome: str = "success",
    policy_id: str | None = None,
    reason: str | None = None,
    metadata: dict[str, Any] | None = None,
    occurred_at: dt.datetime | None = None,
) -> AuditEvent:
    """Write one audit event in the session's transaction (the caller's unit of work commits)."""
    request = current_request()
    chain_id = chain_id_for(org_id)
    head = await _lock_chain_head(session, chain_id)
    event = AuditEvent(
        id=new_id(),
        chain_id=chain_id,
        seq=head.last_seq + 1,
        org_id=org_id,
        occurred_at=occurred_at or utcnow(),
        action=action,
        outcome=outcome,
        actor_type=actor.type,
        actor_id=actor.id,
        target_type=target_type,
        target_id=str(target_id) if target_id is not None else None,
        policy_id=policy_id,
        reason=reason,
        ip=request.ip,
        user_agent=(request.user_agent or "")[:500] or None,
        request_id=request.request_id,
        metadata_=redact(metadata or {}),
        prev_hash=head.last_hash,
        hash="",
    )
    event.hash = event_hash(event_document(event))
    head.last_seq = event.seq
    head.last_hash = event.hash
    session.add(event)
    # The transactional outbox: the relay streams the event once this transaction commits.
    session.add(
        AuditOutbox(
            event_id=event.id, chain_id=chain_id, seq=event.seq, created_at=event.occurred_at
        )
    )
    session.info[OUTBOX_WRITTEN] = True
    return event


def event_document(event: AuditEvent) -> dict[str, Any]:
    """The canonical, exported form of an event (camelCase, RFC 3339 UTC timestamps)."""
    return {
        "eventId": str(event.id),
        "chainId": event.chain_id,
        "seq": event.seq,
        "orgId": str(event.org_id) if event.org_id else None,
        "occurredAt": format_timestamp(event.occurred_at),
        "action": event.action,
        "outcome": event.outcome,
        "actor": {"type": event.actor_type, "id": event.actor_id},
        "target": {"type": event.target_type, "id": event.target_id},
        "policyId": event.policy_id,
        "reason": event.reason,
        "ip": event.ip,
        "userAgent": event.user_agent,
        "requestId": event.request_id,
        "metadata": event.metadata_,
        "prevHash": event.prev_hash,
        "hash": event.hash,
    }


def format_timestamp(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
