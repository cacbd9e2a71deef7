"""The policy decision: given who asks, where, and for what permission, allow or deny with a reason.

Every enforcement point calls ``PolicyEngine.decide``; the Rego engine (authz issue) replaces
the rules below behind this same interface.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from userorg.authz.catalogue import PLATFORM_SCOPES, SCOPES


@dataclass(frozen=True, slots=True)
class AuthzRequest:
    permission: str
    principal_id: str
    principal_type: str
    principal_status: str = "active"
    is_platform_admin: bool = False
    org_id: str | None = None
    org_status: str | None = None
    membership_status: str | None = None
    roles: frozenset[str] = field(default_factory=frozenset)
    granted_scopes: frozenset[str] = field(default_factory=frozenset)
    credential_scopes: frozenset[str] | None = None
    resource: str | None = None  # what the action applies to (the gateway: a model name)


@dataclass(frozen=True, slots=True)
class Decision:
    allow: bool
    reason: str
    policy_id: str


class PolicyEngine(Protocol):
    def decide(self, request: AuthzRequest) -> Decision: ...


# While an org waits for its purge, its owners may still look at it and cancel the deletion.
_CANCEL_DELETE_SCOPES = frozenset({"orgs:read", "orgs:delete"})


class RbacEngine:
    """Role-based rules with tenancy and status checks, deny by default."""

    def decide(self, request: AuthzRequest) -> Decision:
        if request.permission not in SCOPES:
            return Decision(False, "unknown_permission", "userorg.rbac.catalogue")
        if request.principal_status != "active":
            return Decision(False, "principal_suspended", "userorg.rbac.status")
        if request.credential_scopes is not None and request.permission not in (
            request.credential_scopes
        ):
            return Decision(False, "credential_scope_missing", "userorg.rbac.credential")
        if request.is_platform_admin:
            return Decision(True, "platform_admin", "userorg.rbac.platform")
        if request.permission in PLATFORM_SCOPES or request.org_id is None:
            return Decision(False, "platform_admin_required", "userorg.rbac.platform")
        if request.membership_status is None:
            return Decision(False, "not_a_member", "userorg.rbac.tenancy")
        if request.org_status != "active" and not (
            request.org_status == "pending_delete" and request.permission in _CANCEL_DELETE_SCOPES
        ):
            return Decision(False, f"org_{request.org_status}", "userorg.rbac.status")
        if request.membership_status != "active":
            return Decision(False, f"membership_{request.membership_status}", "userorg.rbac.status")
        if request.permission not in request.granted_scopes:
            return Decision(False, "scope_missing", "userorg.rbac.scopes")
        return Decision(True, "granted_by_role", "userorg.rbac.scopes")
