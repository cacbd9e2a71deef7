"""Authorization over HTTP, in both modes: the role × endpoint matrix, the PDP endpoints,
decision-cache invalidation after commit."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support.api import Env, Member, uid
from userorg.authz.catalogue import ORG_SYSTEM_ROLES, SYSTEM_ROLES
from userorg.authz.engine import AuthzRequest


@dataclass
class Case:
    scope: str
    method: str
    path: str  # {org}, {target} filled in
    body: Callable[[], dict[str, Any]] | None = None


# One representative endpoint per scope the API enforces today. Destructive ones come last.
CASES = [
    Case("orgs:read", "GET", "/v1/orgs/{org}"),
    Case("users:read", "GET", "/v1/orgs/{org}/users"),
    Case("roles:read", "GET", "/v1/orgs/{org}/roles"),
    Case("service_accounts:read", "GET", "/v1/orgs/{org}/service-accounts"),
    Case("audit:read", "GET", "/v1/orgs/{org}/audit-events"),
    Case("orgs:write", "PATCH", "/v1/orgs/{org}", lambda: {"name": f"Renamed {uid()}"}),
    Case(
        "users:write",
        "PATCH",
        "/v1/orgs/{org}/users/{target}",
        lambda: {"displayName": f"Target {uid()}"},
    ),
    Case(
        "users:invite",
        "POST",
        "/v1/orgs/{org}/invites",
        lambda: {"email": f"invitee-{uid()}@example.com", "roles": ["OrgViewer"]},
    ),
    Case(
        "roles:write",
        "POST",
        "/v1/orgs/{org}/roles",
        lambda: {"name": f"Reader{uid()}", "scopes": ["orgs:read"]},
    ),
    Case(
        "roles:assign",
        "PUT",
        "/v1/orgs/{org}/users/{target}/roles",
        lambda: {"roles": ["OrgViewer"], "justification": "matrix test"},
    ),
    Case(
        "service_accounts:write",
        "POST",
        "/v1/orgs/{org}/service-accounts",
        lambda: {"name": f"bot-{uid()}", "roles": ["OrgViewer"]},
    ),
    Case("orgs:create", "POST", "/v1/orgs", None),
    Case("orgs:suspend", "POST", "/v1/orgs/{org}/suspend", lambda: {"reason": "matrix test"}),
    Case("policy:evaluate", "GET", "/v1/policy/info"),
    Case("orgs:delete", "DELETE", "/v1/orgs/{org}"),
]


def org_create_body() -> dict[str, Any]:
    slug = f"org-{uid()}"
    return {"name": slug, "slug": slug, "billingOwnerEmail": f"b@{slug}.example.com"}


@pytest.mark.parametrize("role", sorted(ORG_SYSTEM_ROLES))
async def test_role_endpoint_matrix_over_http(env: Env, role: str) -> None:
    """Each system role against one endpoint per scope: 2xx when the role holds the scope,
    else the one 403 body naming the permission, the reason and the policy."""
    org = await env.create_org()
    member = await env.add_member(org["orgId"], [role])
    target = await env.add_member(org["orgId"], ["OrgViewer"])
    for case in CASES:
        body = org_create_body() if case.scope == "orgs:create" else None
        if case.body is not None:
            body = case.body()
        url = case.path.format(org=org["orgId"], target=target.user_id)
        response = await env.client.request(case.method, url, json=body, headers=member.headers)
        allowed = case.scope in SYSTEM_ROLES[role] and case.scope not in {
            "orgs:create",
            "orgs:suspend",
            "policy:evaluate",
        }
        if allowed:
            assert 200 <= response.status_code < 300, (role, case.scope, response.text)
        else:
            assert response.status_code == 403, (role, case.scope, response.text)
            error = response.json()
            assert error["code"] == "forbidden"
            assert error["details"]["permission"] == case.scope
            assert error["details"]["reason"] in {"scope_missing", "platform_admin_required"}
            assert error["details"]["policyId"].startswith("userorg.authz.")


async def test_denial_is_audited_with_policy_and_reason(env: Env) -> None:
    org = await env.create_org()
    viewer = await env.add_member(org["orgId"], ["OrgViewer"])
    denied = await env.client.post(
        f"/v1/orgs/{org['orgId']}/roles",
        json={"name": "Nope", "scopes": ["orgs:read"]},
        headers=viewer.headers,
    )
    assert denied.status_code == 403
    details = denied.json()["details"]
    events = await env.audit_events(org["orgId"], action="authz:access:deny")
    mine = [e for e in events if e["actor"]["id"] == viewer.user_id]
    assert mine
    assert mine[0]["policyId"] == details["policyId"] == "userorg.authz.rbac"
    assert mine[0]["reason"] == details["reason"] == "scope_missing"


# -- the policy decision point ----------------------------------------------------------------
async def evaluate(env: Env, body: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
    return await env.client.post(
        "/v1/policy/evaluate", json=body, headers=headers or await env.admin_headers()
    )


def subject(member: Member, org_id: str, **extra: Any) -> dict[str, Any]:
    return {"orgId": org_id, "principalId": member.user_id, "principalType": "user", **extra}


async def test_evaluate_allows_and_denies_with_reasons(env: Env) -> None:
    org = await env.create_org()
    dev = await env.add_member(org["orgId"], ["Developer"])
    allowed = await evaluate(
        env, {"subject": subject(dev, org["orgId"]), "action": "inference:invoke"}
    )
    assert allowed.status_code == 200, allowed.text
    assert allowed.json() == {
        "decision": "allow",
        "policyId": "userorg.authz.rbac",
        "reason": "granted_by_role",
        "ttlSeconds": env.settings.policy_decision_ttl_seconds,
        "obligations": [],
    }
    denied = await evaluate(env, {"subject": subject(dev, org["orgId"]), "action": "users:write"})
    assert denied.status_code == 200
    assert denied.json()["decision"] == "deny"
    assert denied.json()["reason"] == "scope_missing"
    # The slug works as the org reference; the caller may narrow the roles, never widen them.
    narrowed = await evaluate(
        env,
        {"subject": subject(dev, org["slug"], roles=["OrgViewer"]), "action": "inference:invoke"},
    )
    assert narrowed.json()["decision"] == "deny"
    widened = await evaluate(
        env,
        {
            "subject": subject(dev, org["orgId"], roles=["Developer", "OrgOwner"]),
            "action": "users:write",
        },
    )
    assert widened.json()["decision"] == "deny"
    # Every PDP denial is audited with the policy id and the reason.
    events = await env.audit_events(org["orgId"], action="pdp:decision:deny")
    assert len(events) >= 3
    assert {e["reason"] for e in events} == {"scope_missing"}
    assert all(e["policyId"] == "userorg.authz.rbac" for e in events)


async def test_evaluate_tenancy_and_status(env: Env) -> None:
    org_a = await env.create_org()
    org_b = await env.create_org()
    owner_a = await env.add_member(org_a["orgId"], ["OrgOwner"])
    outsider = await evaluate(
        env, {"subject": subject(owner_a, org_b["orgId"]), "action": "orgs:read"}
    )
    assert outsider.json()["decision"] == "deny"
    assert outsider.json()["reason"] == "not_a_member"
    assert outsider.json()["policyId"] == "userorg.authz.tenancy"
    cross = await evaluate(
        env,
        {
            "subject": subject(owner_a, org_a["orgId"]),
            "action": "api_keys:write",
            "resource": {"type": "api_key", "id": "k1", "orgId": org_b["orgId"]},
        },
    )
    assert cross.json()["reason"] == "cross_tenant"
    same = await evaluate(
        env,
        {
            "subject": subject(owner_a, org_a["orgId"]),
            "action": "api_keys:write",
            "resource": {"type": "api_key", "id": "k1", "orgId": org_a["orgId"]},
            "context": {"ip": "10.0.0.1", "labels": ["a", "b"]},
        },
    )
    assert same.json()["decision"] == "allow"
    admin = await env.admin_headers()
    admin_a = await env.add_member(org_a["orgId"], ["OrgAdmin"])
    suspended = await env.client.post(
        f"/v1/orgs/{org_a['orgId']}/users/{admin_a.user_id}/suspend",
        json={"reasonCode": "policy_test"},
        headers=admin,
    )
    assert suspended.status_code == 200, suspended.text
    after = await evaluate(
        env, {"subject": subject(admin_a, org_a["orgId"]), "action": "orgs:read"}
    )
    assert after.json()["reason"] == "membership_suspended"
    member_b = await env.add_member(org_b["orgId"], ["OrgOwner"])
    await env.client.post(
        f"/v1/orgs/{org_b['orgId']}/suspend", json={"reason": "test"}, headers=admin
    )
    in_suspended_org = await evaluate(
        env, {"subject": subject(member_b, org_b["orgId"]), "action": "orgs:read"}
    )
    assert in_suspended_org.json()["reason"] == "org_suspended"
    # A service account acts in its own org only.
    account = await env.client.post(
        f"/v1/orgs/{org_a['orgId']}/service-accounts",
        json={"name": f"bot-{uid()}", "roles": ["Developer"]},
        headers=admin,
    )
    assert account.status_code == 201, account.text
    sa = account.json()["serviceAccountId"]
    ok = await evaluate(
        env,
        {
            "subject": {
                "orgId": org_a["orgId"],
                "principalId": sa,
                "principalType": "service_account",
            },
            "action": "inference:invoke",
        },
    )
    assert ok.json()["decision"] == "allow"
    elsewhere = await evaluate(
        env,
        {
            "subject": {
                "orgId": org_b["orgId"],
                "principalId": sa,
                "principalType": "service_account",
            },
            "action": "inference:invoke",
        },
    )
    assert elsewhere.json()["reason"] == "not_a_member"


async def test_evaluate_bad_input_is_a_clear_4xx_and_changes_nothing(env: Env) -> None:
    org = await env.create_org()
    dev = await env.add_member(org["orgId"], ["Developer"])
    before = await env.audit_count()
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"subject": subject(dev, org["orgId"]), "action": "made:up"}, 422, "unknown_action"),
        (
            {
                "subject": subject(dev, org["orgId"]),
                "action": "orgs:read",
                "resource": {"type": "spaceship"},
            },
            422,
            "validation_error",
        ),
        ({"subject": {"orgId": org["orgId"]}, "action": "orgs:read"}, 422, "validation_error"),
        ({"action": "orgs:read"}, 422, "validation_error"),
        (
            {
                "subject": subject(dev, org["orgId"]),
                "action": "orgs:read",
                "context": {"blob": "x" * 20_000},
            },
            422,
            "context_too_large",
        ),
        (
            {"subject": subject(dev, str(uuid.uuid4())), "action": "orgs:read"},
            404,
            "organization_not_found",
        ),
        (
            {
                "subject": {
                    "orgId": org["orgId"],
                    "principalId": str(uuid.uuid4()),
                    "principalType": "user",
                },
                "action": "orgs:read",
            },
            404,
            "principal_not_found",
        ),
        (
            {
                "subject": {**subject(dev, org["orgId"]), "principalType": "robot"},
                "action": "orgs:read",
            },
            422,
            "validation_error",
        ),
    ]
    for body, status, code in cases:
        response = await evaluate(env, body)
        assert response.status_code == status, (body, response.text)
        assert response.json()["code"] == code, response.text
    assert await env.audit_count() == before


async def test_evaluate_needs_the_pdp_scope(env: Env) -> None:
    org = await env.create_org()
    owner = await env.add_member(org["orgId"], ["OrgOwner"])
    response = await evaluate(
        env, {"subject": subject(owner, org["orgId"]), "action": "orgs:read"}, owner.headers
    )
    assert response.status_code == 403
    assert response.json()["details"] == {
        "permission": "policy:evaluate",
        "reason": "platform_admin_required",
        "policyId": "userorg.authz.platform",
    }
    info = await env.client.get("/v1/policy/info", headers=owner.headers)
    assert info.status_code == 403


async def test_policy_info_and_readiness(env: Env) -> None:
    info = await env.client.get("/v1/policy/info", headers=await env.admin_headers())
    assert info.status_code == 200
    body = info.json()
    assert body["engine"] == "regorus"
    assert body["evaluator"] == "compiled"
    assert len(body["revision"]) == 16
    assert body["packages"] == ["data.userorg.authz"]
    assert "userorg/authz/main.rego" in body["modules"]
    assert not any(m.endswith("_test.rego") for m in body["modules"])
    assert body["lastReloadError"] is None
    ready = await env.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"]["policy"] == {
        "status": "up",
        "engine": "regorus",
        "revision": body["revision"],
    }


async def test_evaluate_fails_closed_when_the_engine_cannot_decide(env: Env) -> None:
    org = await env.create_org()
    dev = await env.add_member(org["orgId"], ["Developer"])
    headers = await env.admin_headers()
    engine = env.container.policy_engine
    policy = engine._policy
    try:
        engine._policy = None
        engine.clear_cache()
        response = await evaluate(
            env, {"subject": subject(dev, org["orgId"]), "action": "orgs:read"}, headers
        )
        assert response.status_code == 503
        assert response.json()["code"] == "policy_unavailable"
        # Every enforcement point fails closed too.
        listed = await env.client.get(f"/v1/orgs/{org['orgId']}/users", headers=dev.headers)
        assert listed.status_code == 503
        ready = await env.client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["policy"]["status"] == "down"
    finally:
        engine._policy = policy


# -- decision cache invalidation ----------------------------------------------------------------
async def cached_request(env: Env, member: Member, org_id: str, permission: str) -> AuthzRequest:
    """A decision as a caller holding (possibly stale) inputs would ask it: cached allow."""
    roles = frozenset({"OrgAdmin"})
    request = AuthzRequest(
        permission=permission,
        principal_id=member.user_id,
        principal_type="user",
        org_id=org_id,
        org_status="active",
        membership_status="active",
        roles=roles,
        custom_role_scopes=frozenset(),
    )
    engine = env.container.policy_engine
    assert engine.decide(request).allow
    assert request in engine.cache.entries
    return request


Step = Callable[[Env, dict[str, Any], Member, dict[str, str]], Awaitable[None]]


async def change_roles(
    env: Env, org: dict[str, Any], member: Member, admin: dict[str, str]
) -> None:
    response = await env.client.put(
        f"/v1/orgs/{org['orgId']}/users/{member.user_id}/roles",
        json={"roles": ["OrgViewer"], "justification": "cache test"},
        headers=admin,
    )
    assert response.status_code == 200, response.text


async def suspend_member(
    env: Env, org: dict[str, Any], member: Member, admin: dict[str, str]
) -> None:
    response = await env.client.post(
        f"/v1/orgs/{org['orgId']}/users/{member.user_id}/suspend",
        json={"reasonCode": "cache_test"},
        headers=admin,
    )
    assert response.status_code == 200, response.text


async def suspend_org(
    env: Env, org: dict[str, Any], _member: Member, admin: dict[str, str]
) -> None:
    response = await env.client.post(
        f"/v1/orgs/{org['orgId']}/suspend", json={"reason": "cache test"}, headers=admin
    )
    assert response.status_code == 200, response.text


async def change_custom_role(
    env: Env, org: dict[str, Any], _member: Member, admin: dict[str, str]
) -> None:
    response = await env.client.post(
        f"/v1/orgs/{org['orgId']}/roles",
        json={"name": "Extra", "scopes": ["orgs:read"]},
        headers=admin,
    )
    assert response.status_code == 201, response.text


@pytest.mark.parametrize("step", [change_roles, suspend_member, suspend_org, change_custom_role])
async def test_changes_drop_cached_decisions_at_once(env: Env, step: Step) -> None:
    org = await env.create_org()
    member = await env.add_member(org["orgId"], ["OrgAdmin"])
    other_org = await env.create_org()
    bystander = await env.add_member(other_org["orgId"], ["OrgAdmin"])
    stale = await cached_request(env, member, org["orgId"], "users:write")
    unrelated = await cached_request(env, bystander, other_org["orgId"], "users:write")
    await step(env, org, member, await env.admin_headers())
    # Dropped before the response was sent; the other org's decisions stay cached.
    engine = env.container.policy_engine
    assert stale not in engine.cache.entries
    assert unrelated in engine.cache.entries


async def test_failed_change_publishes_nothing(env: Env) -> None:
    org = await env.create_org()
    member = await env.add_member(org["orgId"], ["OrgAdmin"])
    stale = await cached_request(env, member, org["orgId"], "users:write")
    refused = await env.client.put(
        f"/v1/orgs/{org['orgId']}/users/{member.user_id}/roles",
        json={"roles": ["NoSuchRole"], "justification": "x"},
        headers=await env.admin_headers(),
    )
    assert refused.status_code == 422
    assert stale in env.container.policy_engine.cache.entries


async def test_concurrent_requests_under_load(env: Env) -> None:
    """Many decisions in flight at once (the PEP and the PDP), from the event loop and from
    worker threads at the same time: every answer right, the engine never crashes."""
    import asyncio

    org = await env.create_org()
    dev = await env.add_member(org["orgId"], ["Developer"])
    admin = await env.admin_headers()
    engine = env.container.policy_engine

    def from_thread(index: int) -> bool:
        request = AuthzRequest(
            permission="users:write" if index % 2 else "inference:invoke",
            principal_id=f"thread-{index % 7}",
            principal_type="user",
            org_id=org["orgId"],
            org_status="active",
            membership_status="active",
            roles=frozenset({"Developer"}),
            custom_role_scopes=frozenset(),
        )
        return engine.decide(request).allow is (index % 2 == 0)

    async def over_http(index: int) -> bool:
        action = "users:write" if index % 2 else "inference:invoke"
        response = await evaluate(
            env, {"subject": subject(dev, org["orgId"]), "action": action}, admin
        )
        listed = await env.client.get(f"/v1/orgs/{org['orgId']}/users", headers=dev.headers)
        return (
            response.status_code == 200
            and response.json()["decision"] == ("deny" if index % 2 else "allow")
            and listed.status_code == 200
        )

    results = await asyncio.gather(
        *(over_http(i) for i in range(60)),
        *(asyncio.to_thread(lambda i=i: [from_thread(i + k) for k in range(50)]) for i in range(8)),
    )
    flat = [r for item in results for r in (item if isinstance(item, list) else [item])]
    assert all(flat)
