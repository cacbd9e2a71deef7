"""Service accounts over HTTP, in both modes."""

from __future__ import annotations

from tests.support.api import Env


async def test_service_account_lifecycle(env: Env) -> None:
    org = await env.create_org()
    admin = await env.add_member(org["orgId"], ["OrgAdmin"])
    base = f"/v1/orgs/{org['orgId']}/service-accounts"
    no_roles = await env.client.post(
        base, json={"name": "batch-runner", "roles": []}, headers=admin.headers
    )
    assert no_roles.status_code == 422
    created = await env.client.post(
        base,
        json={"name": "batch-runner", "description": "nightly", "roles": ["Developer"]},
        headers=admin.headers,
    )
    assert created.status_code == 201, created.text
    account = created.json()
    assert account["roles"] == ["Developer"]
    assert account["status"] == "active"
    assert created.headers["location"].endswith(account["serviceAccountId"])
    dup = await env.client.post(
        base, json={"name": "batch-runner", "roles": ["Developer"]}, headers=admin.headers
    )
    assert dup.status_code == 409
    url = f"{base}/{account['serviceAccountId']}"

    renamed = await env.client.patch(
        url, json={"name": "batch-runner-2"}, headers={**admin.headers, "If-Match": '"1"'}
    )
    assert renamed.status_code == 200
    assert renamed.json()["name"] == "batch-runner-2"
    assert (
        await env.client.patch(
            url, json={"name": "x1"}, headers={**admin.headers, "If-Match": '"1"'}
        )
    ).status_code == 412

    disabled = await env.client.post(f"{url}/disable", headers=admin.headers)
    assert disabled.json()["status"] == "disabled"
    listed = await env.client.get(base, params={"status": "disabled"}, headers=admin.headers)
    assert [a["serviceAccountId"] for a in listed.json()["items"]] == [account["serviceAccountId"]]
    enabled = await env.client.post(f"{url}/enable", headers=admin.headers)
    assert enabled.json()["status"] == "active"

    roles = await env.client.put(
        f"{url}/roles", json={"roles": ["OrgViewer", "Developer"]}, headers=admin.headers
    )
    assert roles.json()["roles"] == ["Developer", "OrgViewer"]
    empty = await env.client.put(f"{url}/roles", json={"roles": []}, headers=admin.headers)
    assert empty.status_code == 422

    deleted = await env.client.delete(url, headers=admin.headers)
    assert deleted.status_code == 204
    assert (await env.client.get(url, headers=admin.headers)).status_code == 404
    # The name is free again once the account is deleted.
    again = await env.client.post(
        base, json={"name": "batch-runner-2", "roles": ["Developer"]}, headers=admin.headers
    )
    assert again.status_code == 201
    actions = [
        e["action"]
        for e in await env.audit_events(org["orgId"], targetId=account["serviceAccountId"])
    ]
    assert actions[:2] == ["api:service_account:delete", "api:service_account:roles_update"]
    assert "api:service_account:create" in actions


async def test_service_account_of_other_org_is_404(env: Env) -> None:
    a = await env.create_org()
    b = await env.create_org()
    headers = await env.admin_headers()
    created = await env.client.post(
        f"/v1/orgs/{a['orgId']}/service-accounts",
        json={"name": "svc", "roles": ["Developer"]},
        headers=headers,
    )
    sa_id = created.json()["serviceAccountId"]
    wrong = await env.client.get(f"/v1/orgs/{b['orgId']}/service-accounts/{sa_id}", headers=headers)
    assert wrong.status_code == 404
    assert wrong.json()["code"] == "service_account_not_found"


async def test_developer_cannot_manage_service_accounts(env: Env) -> None:
    org = await env.create_org()
    dev = await env.add_member(org["orgId"], ["Developer"])
    base = f"/v1/orgs/{org['orgId']}/service-accounts"
    assert (await env.client.get(base, headers=dev.headers)).status_code == 200
    denied = await env.client.post(
        base, json={"name": "mine", "roles": ["Developer"]}, headers=dev.headers
    )
    assert denied.status_code == 403
    body = denied.json()
    assert body == {
        "code": "forbidden",
        "message": body["message"],
        "details": {
            "permission": "service_accounts:write",
            "reason": "scope_missing",
            "policyId": body["details"]["policyId"],
        },
    }
    events = await env.audit_events(org["orgId"], action="authz:access:deny", actorId=dev.user_id)
    assert events[0]["outcome"] == "denied"
    assert events[0]["metadata"]["permission"] == "service_accounts:write"
