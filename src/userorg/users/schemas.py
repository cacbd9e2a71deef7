"""Member and invite I/O models."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Literal

from pydantic import Field, StrictInt, StringConstraints

from userorg.schemas import Email, InputModel, Name, OutputModel, ReasonCode, RoleName

MembershipStatus = Literal["active", "suspended", "removed"]
InviteStatus = Literal["pending", "accepted", "revoked", "expired"]
AttributeKey = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
]
AttributeValue = Annotated[str, StringConstraints(max_length=500)]
Password = Annotated[str, StringConstraints(min_length=1, max_length=256)]


class MemberRead(OutputModel):
    user_id: uuid.UUID
    email: str
    display_name: str | None = None
    status: MembershipStatus
    status_reason: str | None = None
    roles: list[str]
    attributes: dict[str, str]
    joined_at: dt.datetime
    last_login_at: dt.datetime | None = None
    version: int


class MemberUpdate(InputModel):
    display_name: Name | None = None
    attributes: Annotated[dict[AttributeKey, AttributeValue], Field(max_length=50)] | None = None


class MemberSuspend(InputModel):
    reason_code: ReasonCode
    comment: Annotated[str, StringConstraints(max_length=1000)] | None = None


class InviteCreate(InputModel):
    email: Email
    roles: Annotated[list[RoleName], Field(min_length=1, max_length=32)]
    expires_in_hours: Annotated[StrictInt, Field(ge=1, le=720)] = 72


class InviteRead(OutputModel):
    invite_id: uuid.UUID = Field(validation_alias="id")
    org_id: uuid.UUID
    email: str
    roles: list[str]
    status: InviteStatus
    expires_at: dt.datetime
    created_at: dt.datetime
    invited_by: uuid.UUID | None = None
    accepted_at: dt.datetime | None = None


class InviteAccept(InputModel):
    token: Annotated[str, StringConstraints(min_length=10, max_length=200)]
    password: Password | None = None
    display_name: Name | None = None


class InviteAccepted(OutputModel):
    user_id: uuid.UUID
    org_id: uuid.UUID
    status: Literal["accepted"] = "accepted"
    new_identity: bool
