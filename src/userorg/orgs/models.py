"""Organization table."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import Index, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from userorg.db import Base, JSONType, UTCDateTime, new_id, utcnow


class Organization(Base):
    __tablename__ = "organizations"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    slug: Mapped[str] = mapped_column(String(63), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    billing_owner_email: Mapped[str] = mapped_column(String(320))
    status: Mapped[str] = mapped_column(String(20), default="active")
    status_reason: Mapped[str | None] = mapped_column(String(500), default=None)
    purge_after: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, default=None)
    mfa_required_roles: Mapped[list[str]] = mapped_column(JSONType, default=list)
    declarative: Mapped[dict[str, Any] | None] = mapped_column(JSONType, default=None)
    settings: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    version: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    __mapper_args__ = {"version_id_col": version}
    __table_args__ = (
        Index(None, "status", "purge_after"),
        # `slugPrefix` filters (LIKE 'prefix%'): usable by LIKE whatever the collation.
        Index(None, "slug", postgresql_ops={"slug": "varchar_pattern_ops"}),
    )
