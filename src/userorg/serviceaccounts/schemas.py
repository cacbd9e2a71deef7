"""Service account I/O models."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from userorg.schemas import Description, InputModel, OutputModel, RoleName

ServiceAccountStatus = Literal["active", "disabled"]
ServiceAccountName = Annotated[
    str,
    StringConstraints(min_length=2, max_length=100, pattern=r"^[a-z0-9](?:[a-z0-9._-]*[a-z0-9])?$"),
]


class ServiceAccountCreate(InputModel):
    name: ServiceAccountName
    description: Description | None = None
    roles: Annotated[list[RoleName], Field(min_length=1, max_length=32)]


class ServiceAccountUpdate(InputModel):
    name: ServiceAccountName | None = None
    description: Description | None = None


class ServiceAccountRolesReplace(InputModel):
    roles: Annotated[list[RoleName], Field(min_length=1, max_length=32)]
    justification: Annotated[str, StringConstraints(min_length=1, max_length=1000)] | None = None


class ServiceAccountRead(OutputModel):
    service_account_id: uuid.UUID
    org_id: uuid.UUID
    name: str
    description: str | None = None
    status: ServiceAccountStatus
    roles: list[str]
    created_by: uuid.UUID | None = None
    version: int
    created_at: dt.datetime
    updated_at: dt.datetime
