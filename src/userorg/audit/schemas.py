"""Audit event I/O models."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any

from pydantic import AwareDatetime, Field, StringConstraints

from userorg.schemas import InputModel, OutputModel


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


class ExportCreate(InputModel):
    """``orgId`` is the org's UUID or slug (``platform`` for the platform chain: platform
    admins only). The window is ``[from, to)``; both bounds are required."""

    org_id: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    from_: Annotated[AwareDatetime, Field(alias="from")]
    to: AwareDatetime


class ExportAccepted(OutputModel):
    export_id: uuid.UUID
    status: str


class ExportRead(OutputModel):
    export_id: uuid.UUID
    org_id: str
    status: str = Field(description="pending | running | completed | failed")
    from_: dt.datetime = Field(alias="from")
    to: dt.datetime
    event_count: int | None = None
    first_seq: int | None = None
    last_seq: int | None = None
    sha256: str | None = Field(default=None, description="SHA-256 (hex) of the NDJSON file")
    size_bytes: int | None = None
    key_id: str | None = Field(default=None, description="Id of the key that signed it")
    signature: str | None = Field(
        default=None, description="Ed25519 signature (base64) of the file's SHA-256 digest"
    )
    error: str | None = None
    created_at: dt.datetime
    completed_at: dt.datetime | None = None


class AuditKeyRead(OutputModel):
    key_id: str
    algorithm: str
    public_key_pem: str
    status: str = Field(description="active (signs new exports) | retired (verifies old ones)")
    created_at: dt.datetime | None = None
    backend: str


class AuditKeys(OutputModel):
    keys: list[AuditKeyRead]
