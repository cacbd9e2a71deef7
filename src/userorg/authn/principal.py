"""The authenticated caller of a request."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from userorg.context import Actor


@dataclass(frozen=True, slots=True)
class Principal:
    id: uuid.UUID
    type: str  # "user" | "service_account"
    status: str = "active"
    is_platform_admin: bool = False
    email: str | None = None
    session_id: uuid.UUID | None = None
    home_org_id: uuid.UUID | None = None  # service accounts belong to exactly one org
    credential_scopes: frozenset[str] | None = None  # a key or token narrower than its roles
    amr: tuple[str, ...] = ()
    mfa_verified_at: dt.datetime | None = None

    @property
    def actor(self) -> Actor:
        return Actor(type=self.type, id=str(self.id))
