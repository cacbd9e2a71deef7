"""Budget tables: the policy, usage events and their monthly totals, reservations (embedded
mode), overrides (with their dual-approval rule as a database constraint), threshold alerts."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Numeric,
    String,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from userorg.db import Base, JSONType, UTCDateTime, new_id, utcnow

Amount = Numeric(24, 6)


class BudgetPolicy(Base):
    __tablename__ = "budget_policies"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    limit: Mapped[Decimal] = mapped_column(Amount)
    currency: Mapped[str] = mapped_column(String(3))
    period: Mapped[str] = mapped_column(String(10))  # monthly | quarterly | annual
    warn_threshold: Mapped[int] = mapped_column(default=80)
    block_threshold: Mapped[int] = mapped_column(default=100)
    grace_period_minutes: Mapped[int] = mapped_column(default=0)
    override_required_roles: Mapped[list[str]] = mapped_column(JSONType, default=list)
    notifications: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    status: Mapped[str] = mapped_column(String(10), default="active")  # active | archived
    created_by: Mapped[uuid.UUID | None] = mapped_column(Uuid, default=None)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    version: Mapped[int] = mapped_column(default=1)

    __mapper_args__ = {"version_id_col": version}
    __table_args__ = (
        # One active policy per org.
        Index(
            "uq_budget_policies_org_id_active",
            "org_id",
            unique=True,
            sqlite_where=text("status = 'active'"),
            postgresql_where=text("status = 'active'"),
        ),
        CheckConstraint("block_threshold >= warn_threshold", name="block_not_below_warn"),
    )


class BudgetUsageEvent(Base):
    """One usage event, recorded once: ``(org_id, event_id)`` is unique (replays are no-ops)."""

    __tablename__ = "budget_usage_events"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    event_id: Mapped[str] = mapped_column(String(200))
    amount: Mapped[Decimal] = mapped_column(Amount)
    currency: Mapped[str] = mapped_column(String(3))
    occurred_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    month: Mapped[dt.date] = mapped_column(Date)
    api_key_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, default=None)
    model: Mapped[str | None] = mapped_column(String(200), default=None)
    reservation_id: Mapped[str | None] = mapped_column(String(64), default=None)
    source: Mapped[str] = mapped_column(String(10))  # api | kafka
    recorded_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (UniqueConstraint("org_id", "event_id"), Index(None, "org_id", "month"))


class BudgetSpend(Base):
    """Committed spend per org and calendar month (UTC); periods sum their months."""

    __tablename__ = "budget_spend"

    org_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True
    )
    month: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    amount: Mapped[Decimal] = mapped_column(Amount, default=Decimal(0))
    events: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class BudgetReservation(Base):
    """A held estimate (embedded mode; production holds them in Redis)."""

    __tablename__ = "budget_reservations"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    period_key: Mapped[str] = mapped_column(String(10))
    amount: Mapped[Decimal] = mapped_column(Amount)
    status: Mapped[str] = mapped_column(String(10), default="held")  # held|settled|expired
    principal_id: Mapped[str | None] = mapped_column(String(64), default=None)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        Index(None, "org_id", "period_key", "status"),
        Index(None, "status", "expires_at"),
    )


class BudgetOverride(Base):
    """A temporary raise of the block limit. Approval needs two distinct approvers, neither
    the requester: the CHECK constraint holds it even against code that forgets."""

    __tablename__ = "budget_overrides"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    amount: Mapped[Decimal] = mapped_column(Amount)
    reason: Mapped[str] = mapped_column(String(1000))
    status: Mapped[str] = mapped_column(String(10), default="pending")
    requested_by: Mapped[uuid.UUID] = mapped_column(Uuid)
    first_approver: Mapped[uuid.UUID | None] = mapped_column(Uuid, default=None)
    second_approver: Mapped[uuid.UUID | None] = mapped_column(Uuid, default=None)
    rejected_by: Mapped[uuid.UUID | None] = mapped_column(Uuid, default=None)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    decided_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, default=None)
    version: Mapped[int] = mapped_column(default=1)

    __mapper_args__ = {"version_id_col": version}
    __table_args__ = (
        CheckConstraint("status IN ('pending', 'approved', 'rejected')", name="status_known"),
        CheckConstraint(
            "(first_approver IS NULL OR first_approver <> requested_by)"
            " AND (second_approver IS NULL OR second_approver <> requested_by)"
            " AND (second_approver IS NULL OR"
            " (first_approver IS NOT NULL AND second_approver <> first_approver))",
            name="distinct_approvers",
        ),
        CheckConstraint(
            "status <> 'approved' OR (first_approver IS NOT NULL AND second_approver IS NOT NULL)",
            name="approved_needs_two",
        ),
        Index(None, "org_id", "status"),
    )


class BudgetAlert(Base):
    """A threshold crossing, once per org, period and threshold (the unique key says so)."""

    __tablename__ = "budget_alerts"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    period_key: Mapped[str] = mapped_column(String(10))
    threshold: Mapped[str] = mapped_column(String(10))  # warn | block
    spend: Mapped[Decimal] = mapped_column(Amount)
    crossed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (UniqueConstraint("org_id", "period_key", "threshold"),)
