"""Sign-in and session I/O models."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

from pydantic import StringConstraints

from userorg.schemas import InputModel, OutputModel

LoginEmail = Annotated[str, StringConstraints(min_length=1, max_length=320)]
LoginPassword = Annotated[str, StringConstraints(min_length=1, max_length=256)]
OpaqueToken = Annotated[str, StringConstraints(min_length=1, max_length=512)]


class LoginRequest(InputModel):
    email: LoginEmail
    password: LoginPassword


class TokenResponse(OutputModel):
    access_token: str
    refresh_token: str
    session_id: uuid.UUID
    expires_at: dt.datetime
    mfa_verified: bool
    token_type: str = "Bearer"


class RefreshRequest(InputModel):
    refresh_token: OpaqueToken | None = None


class SessionRead(OutputModel):
    session_id: uuid.UUID
    created_at: dt.datetime
    last_used_at: dt.datetime
    expires_at: dt.datetime
    ip: str | None = None
    user_agent: str | None = None
    mfa_verified: bool
    amr: list[str]
    current: bool


class SessionList(OutputModel):
    items: list[SessionRead]


class MembershipSummary(OutputModel):
    org_id: uuid.UUID
    slug: str
    name: str
    status: str
    org_status: str
    roles: list[str]


class MeRead(OutputModel):
    user_id: uuid.UUID
    email: str
    display_name: str | None = None
    is_platform_admin: bool
    session_id: uuid.UUID | None = None
    amr: list[str]
    memberships: list[MembershipSummary]
