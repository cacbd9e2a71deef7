"""API key I/O models (the gateway's hot-path bodies are in ``gateway/schemas.py``)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Literal

from pydantic import Field, StrictInt, StringConstraints

from userorg.schemas import InputModel, OutputModel

ApiKeyStatus = Literal["active", "revoked", "expired"]
PrincipalType = Literal["service_account", "user"]
ScopeName = Annotated[
    str, StringConstraints(min_length=3, max_length=64, pattern=r"^[a-z_]+(:[a-z_]+)+$")
]
KeyName = Annotated[str, StringConstraints(min_length=1, max_length=100)]
AnnotationKey = Annotated[
    str, StringConstraints(min_length=1, max_length=63, pattern=r"^[A-Za-z0-9_./-]+$")
]
AnnotationValue = Annotated[str, StringConstraints(max_length=256)]


class ApiKeyCreate(InputModel):
    name: KeyName | None = None
    scopes: Annotated[list[ScopeName], Field(min_length=1, max_length=64)]
    expires_in_days: StrictInt | None = Field(
        default=None, description="1 to the configured maximum (365 by default); omit for none"
    )
    annotations: Annotated[dict[AnnotationKey, AnnotationValue], Field(max_length=20)] = {}


class ApiKeyRotate(InputModel):
    grace_period_seconds: StrictInt | None = Field(
        default=None,
        description="How long the previous secret keeps working (default 86400; 0 = stop now)",
    )


class ApiKeyCreated(OutputModel):
    """The one response that carries the secret: store it now, it is never shown again."""

    api_key_id: uuid.UUID
    secret: str
    prefix: str
    fingerprint: str
    status: ApiKeyStatus
    scopes: list[str]
    expires_at: dt.datetime | None = None
    name: str | None = None
    org_id: uuid.UUID
    principal_type: PrincipalType
    principal_id: uuid.UUID
    created_at: dt.datetime


class ApiKeyRotated(ApiKeyCreated):
    previous_secret_expires_at: dt.datetime | None = None


class ApiKeyRead(OutputModel):
    api_key_id: uuid.UUID
    org_id: uuid.UUID
    name: str | None = None
    prefix: str
    fingerprint: str
    status: ApiKeyStatus
    scopes: list[str]
    annotations: dict[str, str]
    principal_type: PrincipalType
    principal_id: uuid.UUID
    expires_at: dt.datetime | None = None
    created_at: dt.datetime
    created_by: uuid.UUID | None = None
    rotated_at: dt.datetime | None = None
    previous_secret_expires_at: dt.datetime | None = None
    revoked_at: dt.datetime | None = None
    revoked_reason: str | None = None
    last_used_at: dt.datetime | None = None
    usage_count: int
    version: int
