"""Audit event I/O models."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from userorg.schemas import OutputModel


class AuditParty(OutputModel):
    type: str | None = None
    id: str | None = None


class AuditEventRead(OutputModel):
    event_id: uuid.UUID
    chain_id: str
    seq: int
    org_id: uuid.UUID | None = None
    occurred_at: dt.datetime
    action: str
    outcome: str
    actor: AuditParty
    target: AuditParty
    policy_id: str | None = None
    reason: str | None = None
    ip: str | None = None
    user_agent: str | None = None
    request_id: str | None = None
    metadata: dict[str, Any]
    prev_hash: str
    hash: str
