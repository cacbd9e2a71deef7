"""declarative: sync state with lease, revisions, runs

Revision ID: i8_declarative
Revises: i3_authn
Create Date: 2026-11-25 12:35:29.176538
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "i8_declarative"
down_revision: str | None = "i3_authn"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "declarative_revisions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("commit_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("trigger", sa.String(length=20), nullable=False),
        sa.Column(
            "error",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("operations", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("synced_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_declarative_revisions_org_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_declarative_revisions")),
        sa.UniqueConstraint(
            "org_id", "commit_id", name=op.f("uq_declarative_revisions_org_id_commit_id")
        ),
    )
    op.create_table(
        "declarative_runs",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("revision_id", sa.Uuid(), nullable=True),
        sa.Column("commit_id", sa.String(length=64), nullable=True),
        sa.Column("trigger", sa.String(length=20), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("dry_run", sa.Boolean(), nullable=False),
        sa.Column("reconciler_id", sa.String(length=100), nullable=True),
        sa.Column("operations", sa.Integer(), nullable=False),
        sa.Column(
            "summary",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "error",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_declarative_runs_org_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_declarative_runs")),
    )
    with op.batch_alter_table("declarative_runs", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_declarative_runs_org_id_started_at"),
            ["org_id", "started_at"],
            unique=False,
        )
        batch_op.create_index(batch_op.f("ix_declarative_runs_status"), ["status"], unique=False)

    op.create_table(
        "declarative_states",
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("repo_url", sa.String(length=2048), nullable=True),
        sa.Column("branch", sa.String(length=255), nullable=True),
        sa.Column("last_applied_commit", sa.String(length=64), nullable=True),
        sa.Column("last_applied_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "applied_config",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("current_revision_id", sa.Uuid(), nullable=True),
        sa.Column("last_run_id", sa.Uuid(), nullable=True),
        sa.Column(
            "last_error",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "drift",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "warnings",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("sync_requested_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sync_trigger", sa.String(length=20), nullable=True),
        sa.Column("force_commit", sa.String(length=64), nullable=True),
        sa.Column("check_requested_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_poll_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("retry_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_checked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_owner", sa.String(length=100), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_declarative_states_org_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("org_id", name=op.f("pk_declarative_states")),
    )
    with op.batch_alter_table("declarative_states", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_declarative_states_next_poll_at"), ["next_poll_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("declarative_states", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_declarative_states_next_poll_at"))

    op.drop_table("declarative_states")
    with op.batch_alter_table("declarative_runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_declarative_runs_status"))
        batch_op.drop_index(batch_op.f("ix_declarative_runs_org_id_started_at"))

    op.drop_table("declarative_runs")
    op.drop_table("declarative_revisions")
