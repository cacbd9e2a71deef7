"""Every table, imported once so that metadata (Alembic, schema drift) sees them all."""

from userorg.apikeys.models import ApiKey
from userorg.audit.models import (
    AuditChainHead,
    AuditCheckpoint,
    AuditEvent,
    AuditExport,
    AuditOutbox,
    AuditSigningKey,
)
from userorg.authn.models import RefreshToken, Session, SigningKey
from userorg.budgets.models import (
    BudgetAlert,
    BudgetOverride,
    BudgetPolicy,
    BudgetReservation,
    BudgetSpend,
    BudgetUsageEvent,
)
from userorg.db import Base
from userorg.declarative.models import DeclarativeRevision, DeclarativeRun, DeclarativeState
from userorg.notifications.models import Notification
from userorg.orgs.models import Organization
from userorg.platform.leases import LeaseRow
from userorg.roles.models import CustomRole, RoleAssignment
from userorg.serviceaccounts.models import ServiceAccount
from userorg.users.models import Invite, Membership, User

__all__ = [
    "ApiKey",
    "AuditChainHead",
    "AuditCheckpoint",
    "AuditEvent",
    "AuditExport",
    "AuditOutbox",
    "AuditSigningKey",
    "Base",
    "BudgetAlert",
    "BudgetOverride",
    "BudgetPolicy",
    "BudgetReservation",
    "BudgetSpend",
    "BudgetUsageEvent",
    "CustomRole",
    "DeclarativeRevision",
    "DeclarativeRun",
    "DeclarativeState",
    "Invite",
    "LeaseRow",
    "Membership",
    "Notification",
    "Organization",
    "RefreshToken",
    "RoleAssignment",
    "ServiceAccount",
    "Session",
    "SigningKey",
    "User",
]
