"""Indexes the scale benchmark showed missing (keyset lists of large orgs, prefix filters)

Revision ID: i9_scale_indexes
Revises: i6_budgets
Create Date: 2026-11-25 15:30:00.000000

Measured on 20,000 orgs / 200,000 users / 500,000 keys (bench/bench_scale.py,
docs/performance.md): listing the largest org's members sorted all ~4,800 memberships per page
(36 ms in PostgreSQL), its keys all ~11,900 keys (10-12 ms), and `slugPrefix` / `emailPrefix`
filters scanned (LIKE cannot use a unique index under a non-C collation).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "i9_scale_indexes"
down_revision: str | None = "i6_budgets"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_memberships_org_id_id", "memberships", ["org_id", "id"])
    op.create_index(
        "ix_service_accounts_org_id_id",
        "service_accounts",
        ["org_id", "id"],
        sqlite_where=sa.text("deleted_at IS NULL"),
        postgresql_where=sa.text("deleted_at IS NULL"),
    )
    op.create_index("ix_api_keys_org_id_id", "api_keys", ["org_id", "id"])
    op.create_index("ix_api_keys_org_id_status_id", "api_keys", ["org_id", "status", "id"])
    # Superseded by ix_api_keys_org_id_status_id (same leading columns).
    op.drop_index("ix_api_keys_org_id_status", table_name="api_keys")
    op.create_index(
        "ix_organizations_slug",
        "organizations",
        ["slug"],
        postgresql_ops={"slug": "varchar_pattern_ops"},
    )
    op.create_index(
        "ix_users_email", "users", ["email"], postgresql_ops={"email": "varchar_pattern_ops"}
    )


def downgrade() -> None:
    op.drop_index("ix_users_email", table_name="users")
    op.drop_index("ix_organizations_slug", table_name="organizations")
    op.create_index("ix_api_keys_org_id_status", "api_keys", ["org_id", "status"])
    op.drop_index("ix_api_keys_org_id_status_id", table_name="api_keys")
    op.drop_index("ix_api_keys_org_id_id", table_name="api_keys")
    op.drop_index("ix_service_accounts_org_id_id", table_name="service_accounts")
    op.drop_index("ix_memberships_org_id_id", table_name="memberships")
