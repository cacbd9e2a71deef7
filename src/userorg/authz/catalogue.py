"""The scope catalogue and the system roles: the vocabulary of every authorization decision.

Scopes are ``resource:action`` strings. System roles are read-only; custom roles are named sets
of catalogue scopes defined per org. ``PlatformAdmin`` is global; the others apply inside an org.
"""

from __future__ import annotations

from typing import Final

SCOPES: Final[dict[str, str]] = {
    "orgs:create": "Create organizations (platform level)",
    "orgs:read": "Read the organization's settings",
    "orgs:write": "Change the organization's settings",
    "orgs:suspend": "Suspend and restore organizations (platform level)",
    "identities:suspend": "Suspend and restore user identities everywhere (platform level)",
    "orgs:delete": "Delete the organization (safe delete with a retention window)",
    "users:read": "List and read members",
    "users:write": "Change members: profile, suspend, restore, remove, unlock",
    "users:invite": "Invite new members and revoke invites",
    "roles:read": "List roles and the scope catalogue",
    "roles:write": "Create, change and delete custom roles",
    "roles:assign": "Grant and revoke roles of members and service accounts",
    "sessions:read": "List members' sessions",
    "sessions:revoke": "Revoke members' sessions",
    "service_accounts:read": "List and read service accounts",
    "service_accounts:write": "Create, change, disable and delete service accounts",
    "api_keys:read": "List and read API keys (never their secrets)",
    "api_keys:write": "Issue, rotate and revoke API keys",
    "budgets:read": "Read budget policy, status and history",
    "budgets:write": "Change the budget policy",
    "budgets:usage:write": "Report usage against the budget",
    "budgets:override:request": "Request a budget override",
    "budgets:override:approve": "Approve or reject a budget override",
    "audit:read": "Query the audit trail",
    "audit:export": "Export signed audit trails",
    "declarative:read": "Read declarative configuration status and plans",
    "declarative:write": "Trigger and configure declarative reconciliation",
    "policy:evaluate": "Ask the policy decision point for decisions",
    "inference:invoke": "Call inference through the API gateway",
}

PLATFORM_SCOPES: Final[frozenset[str]] = frozenset(
    {"orgs:create", "orgs:suspend", "identities:suspend", "policy:evaluate"}
)
ORG_SCOPES: Final[frozenset[str]] = frozenset(SCOPES) - PLATFORM_SCOPES

_READ_SCOPES = frozenset(s for s in ORG_SCOPES if s.endswith(":read"))

SYSTEM_ROLES: Final[dict[str, frozenset[str]]] = {
    "PlatformAdmin": frozenset(SCOPES),
    "OrgOwner": ORG_SCOPES,
    "OrgAdmin": ORG_SCOPES - {"orgs:delete", "budgets:override:approve"},
    "BillingAdmin": _READ_SCOPES
    | {
        "budgets:write",
        "budgets:usage:write",
        "budgets:override:request",
        "budgets:override:approve",
        "audit:export",
    },
    "Developer": frozenset(
        {
            "orgs:read",
            "users:read",
            "roles:read",
            "service_accounts:read",
            "api_keys:read",
            "api_keys:write",
            "budgets:read",
            "inference:invoke",
        }
    ),
    "OrgViewer": _READ_SCOPES - {"sessions:read"},
}

SYSTEM_ROLE_DESCRIPTIONS: Final[dict[str, str]] = {
    "PlatformAdmin": "Operates the whole platform; acts in every organization",
    "OrgOwner": "Owns the organization; every organization scope; always requires MFA",
    "OrgAdmin": "Administers members, roles, service accounts and keys",
    "BillingAdmin": "Manages budgets, usage and overrides; reads everything",
    "Developer": "Builds on the platform: API keys and inference",
    "OrgViewer": "Reads the organization's configuration",
}

# Roles that can be granted inside an org (PlatformAdmin is a global flag, never a membership role).
ORG_SYSTEM_ROLES: Final[frozenset[str]] = frozenset(SYSTEM_ROLES) - {"PlatformAdmin"}
OWNER_ROLE: Final = "OrgOwner"
ALWAYS_MFA_ROLES: Final[frozenset[str]] = frozenset({OWNER_ROLE})


# Actions that need a fresh second factor when MFA step-up is enforced
# (USER_ORG_MFA_STEP_UP_SCOPES; this is the documented recommendation, not the default).
RECOMMENDED_MFA_STEP_UP_SCOPES: Final[frozenset[str]] = frozenset(
    {
        "orgs:delete",
        "roles:write",
        "roles:assign",
        "api_keys:write",
        "budgets:override:approve",
        "audit:export",
        "sessions:revoke",
    }
)
# Actions that spend money: a blocked budget denies them (the budget hook of the policy).
BUDGET_GATED_SCOPES: Final[frozenset[str]] = frozenset({"inference:invoke"})


def is_known_scope(scope: str) -> bool:
    return scope in SCOPES
