"""Declarative management tables: per-org sync state (with the reconciler's lease), the
revisions seen in Git, and the runs that processed them."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from userorg.db import Base, JSONType, UTCDateTime, new_id, utcnow

REVISION_STATUSES = ("pending", "synced", "failed", "drift_detected", "paused")
RUN_STATUSES = ("running", "successful", "failed")


class DeclarativeState(Base):
    """One row per org that has (or had) declarative management enabled.

    ``applied_config`` is the normalized desired state of ``last_applied_commit``: drift checks
    and the API's lock mode compare against it without going to Git. The lease columns make
    sure that only one reconciler works on an org at a time; the ``*_requested_at`` columns
    are the durable work queue that the admin-api writes and the reconciler drains.
    """

    __tablename__ = "declarative_states"

    org_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True
    )
    repo_url: Mapped[str | None] = mapped_column(String(2048), default=None)
    branch: Mapped[str | None] = mapped_column(String(255), default=None)
    last_applied_commit: Mapped[str | None] = mapped_column(String(64), default=None)
    last_applied_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, default=None)
    applied_config: Mapped[dict[str, Any] | None] = mapped_column(JSONType, default=None)
    current_revision_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, default=None)
    last_run_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, default=None)
    last_error: Mapped[dict[str, Any] | None] = mapped_column(JSONType, default=None)
    drift: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    warnings: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    # Work queue: a sync (fetch + apply) or a drift check requested by the API or a webhook.
    sync_requested_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, default=None)
    sync_trigger: Mapped[str | None] = mapped_column(String(20), default=None)
    force_commit: Mapped[str | None] = mapped_column(String(64), default=None)
    check_requested_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, default=None)
    next_poll_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, default=None)
    retry_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, default=None)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_checked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, default=None)
    # The lease: one reconciler per org at a time, across replicas.
    lease_owner: Mapped[str | None] = mapped_column(String(100), default=None)
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, default=None)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    __table_args__ = (Index(None, "next_poll_at"),)


class DeclarativeRevision(Base):
    """A commit of an org's branch as the reconciler saw it, and what became of it."""

    __tablename__ = "declarative_revisions"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    commit_id: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(20), default="pending")
    trigger: Mapped[str] = mapped_column(String(20))
    error: Mapped[dict[str, Any] | None] = mapped_column(JSONType, default=None)
    operations: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    synced_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, default=None)

    __table_args__ = (UniqueConstraint("org_id", "commit_id"),)


class DeclarativeRun(Base):
    """One reconciliation that did something (applied, healed, failed, or a dry run)."""

    __tablename__ = "declarative_runs"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    revision_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, default=None)
    commit_id: Mapped[str | None] = mapped_column(String(64), default=None)
    trigger: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20), default="running")
    dry_run: Mapped[bool] = mapped_column(Boolean, default=False)
    reconciler_id: Mapped[str | None] = mapped_column(String(100), default=None)
    operations: Mapped[int] = mapped_column(Integer, default=0)
    summary: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSONType, default=None)
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, default=None)
    duration_ms: Mapped[int | None] = mapped_column(Integer, default=None)

    __table_args__ = (Index(None, "org_id", "started_at"), Index(None, "status"))
