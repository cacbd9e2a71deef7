"""Routes: querying the audit trail."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from fastapi import APIRouter, Query

from userorg.audit import service
from userorg.audit.models import AuditEvent
from userorg.audit.recorder import event_document
from userorg.audit.schemas import AuditEventRead
from userorg.deps import AuthContext, UoW, require
from userorg.http import Cursor, Limit
from userorg.schemas import Page

router = APIRouter(tags=["audit"])


def _read(event: AuditEvent) -> AuditEventRead:
    return AuditEventRead.model_validate(event_document(event))


@router.get(
    "/v1/orgs/{orgId}/audit-events",
    response_model=Page[AuditEventRead],
    summary="Query the org's audit trail (newest first)",
)
async def list_audit_events(
    uow: UoW,
    ctx: AuthContext = require("audit:read"),
    limit: Limit = 50,
    cursor: Cursor = None,
    since: Annotated[dt.datetime | None, Query(alias="from")] = None,
    until: Annotated[dt.datetime | None, Query(alias="to")] = None,
    actor_id: Annotated[str | None, Query(alias="actorId", max_length=100)] = None,
    target_id: Annotated[str | None, Query(alias="targetId", max_length=100)] = None,
    action: Annotated[str | None, Query(max_length=100)] = None,
    outcome: Literal["success", "failure", "denied"] | None = None,
) -> Page[AuditEventRead]:
    rows, next_cursor = await service.query_events(
        uow.session,
        org_id=ctx.org_required.id,
        limit=limit,
        cursor=cursor,
        since=_aware(since),
        until=_aware(until),
        actor_id=actor_id,
        action=action,
        outcome=outcome,
        target_id=target_id,
    )
    return Page[AuditEventRead](items=[_read(e) for e in rows], next_cursor=next_cursor)


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value
