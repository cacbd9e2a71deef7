"""The role × scope matrix: every system role against every scope of the catalogue."""

from __future__ import annotations

import pytest

from userorg.authz.catalogue import (
    ORG_SCOPES,
    ORG_SYSTEM_ROLES,
    PLATFORM_SCOPES,
    SCOPES,
    SYSTEM_ROLES,
)
from userorg.authz.engine import AuthzRequest
from userorg.authz.policyset import PolicyConfig
from userorg.authz.rego import RegoEngine
from userorg.settings import Settings

ENGINE = RegoEngine(directory=Settings().effective_policy_dir, config=PolicyConfig())
ENGINE.load()


def request(permission: str, role: str, **overrides: object) -> AuthzRequest:
    values: dict[str, object] = {
        "permission": permission,
        "principal_id": "u1",
        "principal_type": "user",
        "org_id": "o1",
        "org_status": "active",
        "membership_status": "active",
        "roles": frozenset({role}),
        "granted_scopes": SYSTEM_ROLES[role],
    }
    values.update(overrides)
    return AuthzRequest(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize("role", sorted(ORG_SYSTEM_ROLES))
@pytest.mark.parametrize("scope", sorted(SCOPES))
def test_matrix(role: str, scope: str) -> None:
    decision = ENGINE.decide(request(scope, role))
    expected = scope in SYSTEM_ROLES[role] and scope in ORG_SCOPES
    assert decision.allow is expected, (role, scope, decision)
    if not expected:
        assert decision.reason in {"scope_missing", "platform_admin_required"}


def test_role_shapes() -> None:
    assert SYSTEM_ROLES["OrgOwner"] == ORG_SCOPES
    assert "budgets:override:approve" not in SYSTEM_ROLES["OrgAdmin"]
    assert "budgets:override:approve" in SYSTEM_ROLES["BillingAdmin"]
    assert all(s.endswith(":read") for s in SYSTEM_ROLES["OrgViewer"])
    assert "inference:invoke" in SYSTEM_ROLES["Developer"]


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"membership_status": None}, "not_a_member"),
        ({"org_status": "suspended"}, "org_suspended"),
        ({"membership_status": "suspended"}, "membership_suspended"),
        ({"principal_status": "suspended"}, "principal_suspended"),
        ({"credential_scopes": frozenset({"orgs:write"})}, "credential_scope_missing"),
        ({"permission": "made:up"}, "unknown_permission"),
    ],
)
def test_denials_carry_reasons(overrides: dict[str, object], reason: str) -> None:
    decision = ENGINE.decide(
        request(overrides.pop("permission", "orgs:read"), "OrgOwner", **overrides)
    )  # type: ignore[arg-type]
    assert not decision.allow
    assert decision.reason == reason
    assert decision.policy_id


def test_platform_admin_acts_anywhere_but_platform_scopes_need_it() -> None:
    for scope in PLATFORM_SCOPES:
        assert not ENGINE.decide(request(scope, "OrgOwner")).allow
        assert ENGINE.decide(request(scope, "OrgOwner", is_platform_admin=True)).allow
    assert ENGINE.decide(
        request("users:write", "OrgViewer", is_platform_admin=True, membership_status=None)
    ).allow


def test_pending_delete_org_allows_only_cancellation() -> None:
    assert ENGINE.decide(request("orgs:delete", "OrgOwner", org_status="pending_delete")).allow
    assert ENGINE.decide(request("orgs:read", "OrgOwner", org_status="pending_delete")).allow
    assert not ENGINE.decide(request("users:read", "OrgOwner", org_status="pending_delete")).allow
