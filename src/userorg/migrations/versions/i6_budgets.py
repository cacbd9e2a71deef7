"""Budgets: policies, usage events, monthly spend, reservations, overrides, alerts

Revision ID: i6_budgets
Revises: i4_api_keys
Create Date: 2026-11-25 15:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "i6_budgets"
down_revision: str | None = "i4_api_keys"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
AMOUNT = sa.Numeric(24, 6)


def _org_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["org_id"],
        ["organizations.id"],
        name=op.f(f"fk_{table}_org_id_organizations"),
        ondelete="CASCADE",
    )


def upgrade() -> None:
    op.create_table(
        "budget_policies",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("limit", AMOUNT, nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("period", sa.String(length=10), nullable=False),
        sa.Column("warn_threshold", sa.Integer(), nullable=False),
        sa.Column("block_threshold", sa.Integer(), nullable=False),
        sa.Column("grace_period_minutes", sa.Integer(), nullable=False),
        sa.Column("override_required_roles", JSON, nullable=False),
        sa.Column("notifications", JSON, nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("created_by", sa.Uuid(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "block_threshold >= warn_threshold",
            name=op.f("ck_budget_policies_block_not_below_warn"),
        ),
        _org_fk("budget_policies"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_budget_policies")),
    )
    with op.batch_alter_table("budget_policies", schema=None) as batch_op:
        batch_op.create_index(
            "uq_budget_policies_org_id_active",
            ["org_id"],
            unique=True,
            sqlite_where=sa.text("status = 'active'"),
            postgresql_where=sa.text("status = 'active'"),
        )

    op.create_table(
        "budget_usage_events",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("event_id", sa.String(length=200), nullable=False),
        sa.Column("amount", AMOUNT, nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("month", sa.Date(), nullable=False),
        sa.Column("api_key_id", sa.Uuid(), nullable=True),
        sa.Column("model", sa.String(length=200), nullable=True),
        sa.Column("reservation_id", sa.String(length=64), nullable=True),
        sa.Column("source", sa.String(length=10), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        _org_fk("budget_usage_events"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_budget_usage_events")),
        sa.UniqueConstraint(
            "org_id", "event_id", name=op.f("uq_budget_usage_events_org_id_event_id")
        ),
    )
    with op.batch_alter_table("budget_usage_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_budget_usage_events_org_id_month"), ["org_id", "month"], unique=False
        )

    op.create_table(
        "budget_spend",
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("month", sa.Date(), nullable=False),
        sa.Column("amount", AMOUNT, nullable=False),
        sa.Column("events", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        _org_fk("budget_spend"),
        sa.PrimaryKeyConstraint("org_id", "month", name=op.f("pk_budget_spend")),
    )

    op.create_table(
        "budget_reservations",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("period_key", sa.String(length=10), nullable=False),
        sa.Column("amount", AMOUNT, nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("principal_id", sa.String(length=64), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        _org_fk("budget_reservations"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_budget_reservations")),
    )
    with op.batch_alter_table("budget_reservations", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_budget_reservations_org_id_period_key_status"),
            ["org_id", "period_key", "status"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_budget_reservations_status_expires_at"),
            ["status", "expires_at"],
            unique=False,
        )

    op.create_table(
        "budget_overrides",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("amount", AMOUNT, nullable=False),
        sa.Column("reason", sa.String(length=1000), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("requested_by", sa.Uuid(), nullable=False),
        sa.Column("first_approver", sa.Uuid(), nullable=True),
        sa.Column("second_approver", sa.Uuid(), nullable=True),
        sa.Column("rejected_by", sa.Uuid(), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "status IN ('pending', 'approved', 'rejected')",
            name=op.f("ck_budget_overrides_status_known"),
        ),
        sa.CheckConstraint(
            "(first_approver IS NULL OR first_approver <> requested_by)"
            " AND (second_approver IS NULL OR second_approver <> requested_by)"
            " AND (second_approver IS NULL OR"
            " (first_approver IS NOT NULL AND second_approver <> first_approver))",
            name=op.f("ck_budget_overrides_distinct_approvers"),
        ),
        sa.CheckConstraint(
            "status <> 'approved' OR (first_approver IS NOT NULL AND second_approver IS NOT NULL)",
            name=op.f("ck_budget_overrides_approved_needs_two"),
        ),
        _org_fk("budget_overrides"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_budget_overrides")),
    )
    with op.batch_alter_table("budget_overrides", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_budget_overrides_org_id_status"), ["org_id", "status"], unique=False
        )

    op.create_table(
        "budget_alerts",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("period_key", sa.String(length=10), nullable=False),
        sa.Column("threshold", sa.String(length=10), nullable=False),
        sa.Column("spend", AMOUNT, nullable=False),
        sa.Column("crossed_at", sa.DateTime(timezone=True), nullable=False),
        _org_fk("budget_alerts"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_budget_alerts")),
        sa.UniqueConstraint(
            "org_id",
            "period_key",
            "threshold",
            name=op.f("uq_budget_alerts_org_id_period_key_threshold"),
        ),
    )


def downgrade() -> None:
    op.drop_table("budget_alerts")
    with op.batch_alter_table("budget_overrides", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_budget_overrides_org_id_status"))
    op.drop_table("budget_overrides")
    with op.batch_alter_table("budget_reservations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_budget_reservations_status_expires_at"))
        batch_op.drop_index(batch_op.f("ix_budget_reservations_org_id_period_key_status"))
    op.drop_table("budget_reservations")
    op.drop_table("budget_spend")
    with op.batch_alter_table("budget_usage_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_budget_usage_events_org_id_month"))
    op.drop_table("budget_usage_events")
    with op.batch_alter_table("budget_policies", schema=None) as batch_op:
        batch_op.drop_index("uq_budget_policies_org_id_active")
    op.drop_table("budget_policies")
