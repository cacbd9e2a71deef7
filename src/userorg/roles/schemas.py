"""Role I/O models."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from pydantic import Field, StringConstraints

from userorg.schemas import Description, InputModel, OutputModel, RoleName

Scope = Annotated[str, StringConstraints(min_length=3, max_length=64, pattern=r"^[a-z_:]+$")]


class RoleCreate(InputModel):
    name: RoleName
    description: Description | None = None
    scopes: Annotated[list[Scope], Field(min_length=1, max_length=64)]


class RoleUpdate(InputModel):
    description: Description | None = None
    scopes: Annotated[list[Scope], Field(min_length=1, max_length=64)] | None = None


class RoleRead(OutputModel):
    name: str
    description: str | None = None
    scopes: list[str]
    system: bool
    version: int | None = None
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None


class RoleList(OutputModel):
    items: list[RoleRead]


class ScopeRead(OutputModel):
    scope: str
    description: str
    level: str


class ScopeList(OutputModel):
    items: list[ScopeRead]


class RolesReplace(InputModel):
    roles: Annotated[list[RoleName], Field(max_length=32)]
    justification: Annotated[str, StringConstraints(min_length=1, max_length=1000)] | None = None
