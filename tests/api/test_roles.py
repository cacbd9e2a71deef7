"""Roles and the scope catalogue over HTTP, in both modes."""

from __future__ import annotations

from tests.support.api import Env


async def test_catalogue_and_system_roles(env: Env) -> None:
    org = await env.create_org()
    headers = await env.admin_headers()
    scopes = (await env.client.get("/v1/scopes", headers=headers)).json()["items"]
    names = {s["scope"] for s in scopes}
    assert {
        "orgs:read",
        "users:write",
        "api_keys:write",
        "budgets:override:approve",
        "audit:export",
        "inference:invoke",
    } <= names
    roles = (await env.client.get(f"/v1/orgs/{org['orgId']}/roles", headers=headers)).json()[
        "items"
    ]
    system = {r["name"] for r in roles if r["system"]}
    assert system == {"OrgOwner", "OrgAdmin", "BillingAdmin", "Developer", "OrgViewer"}
    for name in system:
        patched = await env.client.patch(
            f"/v1/orgs/{org['orgId']}/roles/{name}", json={"description": "x"}, headers=headers
        )
        assert patched.status_code == 409
        assert patched.json()["code"] == "system_role_read_only"


async def test_custom_role_lifecycle(env: Env) -> None:
    org = await env.create_org()
    headers = await env.admin_headers()
    base = f"/v1/orgs/{org['orgId']}/roles"
    created = await env.client.post(
        base,
        json={"name": "KeyManager", "scopes": ["api_keys:read", "api_keys:write"]},
        headers=headers,
    )
    assert created.status_code == 201, created.text
    assert created.json()["scopes"] == ["api_keys:read", "api_keys:write"]
    dup = await env.client.post(
        base, json={"name": "KeyManager", "scopes": ["api_keys:read"]}, headers=headers
    )
    assert dup.status_code == 409
    clash = await env.client.post(
        base, json={"name": "OrgOwner", "scopes": ["api_keys:read"]}, headers=headers
    )
    assert clash.status_code == 409
    unknown = await env.client.post(
        base, json={"name": "Weird", "scopes": ["nope:nope"]}, headers=headers
    )
    assert unknown.status_code == 422
    assert unknown.json()["code"] == "unknown_scope"
    platform_scope = await env.client.post(
        base, json={"name": "Sneaky", "scopes": ["orgs:create"]}, headers=headers
    )
    assert platform_scope.status_code == 422

    member = await env.add_member(org["orgId"], ["KeyManager"])
    # The custom role grants exactly its scopes.
    assert (
        await env.client.get(f"/v1/orgs/{org['orgId']}/service-accounts", headers=member.headers)
    ).status_code == 403
    updated = await env.client.patch(
        f"{base}/KeyManager",
        json={"scopes": ["api_keys:read", "service_accounts:read"]},
        headers={**headers, "If-Match": '"1"'},
    )
    assert updated.status_code == 200, updated.text
    assert (
        await env.client.get(f"/v1/orgs/{org['orgId']}/service-accounts", headers=member.headers)
    ).status_code == 200

    in_use = await env.client.delete(f"{base}/KeyManager", headers=headers)
    assert in_use.status_code == 409
    assert in_use.json()["code"] == "role_in_use"
    assert in_use.json()["details"]["assignments"] == 1
    await env.client.put(
        f"/v1/orgs/{org['orgId']}/users/{member.user_id}/roles",
        json={"roles": ["OrgViewer"]},
        headers=headers,
    )
    stale = await env.client.delete(f"{base}/KeyManager", headers={**headers, "If-Match": '"1"'})
    assert stale.status_code == 412
    gone = await env.client.delete(f"{base}/KeyManager", headers=headers)
    assert gone.status_code == 204
    assert (await env.client.delete(f"{base}/KeyManager", headers=headers)).status_code == 404
    actions = [e["action"] for e in await env.audit_events(org["orgId"], action="api:role:*")]
    assert actions == ["api:role:delete", "api:role:update", "api:role:create"]


async def test_role_referenced_by_pending_invite_or_mfa_policy_is_in_use(env: Env) -> None:
    org = await env.create_org()
    headers = await env.admin_headers()
    base = f"/v1/orgs/{org['orgId']}/roles"
    await env.client.post(base, json={"name": "Auditor", "scopes": ["audit:read"]}, headers=headers)
    await env.invite(org["orgId"], "auditor@example.com", ["Auditor"])
    response = await env.client.delete(f"{base}/Auditor", headers=headers)
    assert response.status_code == 409
    assert response.json()["details"]["pendingInvites"] == 1


async def test_custom_role_cannot_exceed_author(env: Env) -> None:
    org = await env.create_org()
    admin = await env.add_member(org["orgId"], ["OrgAdmin"])
    response = await env.client.post(
        f"/v1/orgs/{org['orgId']}/roles",
        json={"name": "Approver", "scopes": ["budgets:override:approve"]},
        headers=admin.headers,
    )
    assert response.status_code == 403
    assert response.json()["code"] == "privilege_escalation"
