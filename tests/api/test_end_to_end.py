"""The foundation's end-to-end story over HTTP, with the invite delivered to a real webhook."""

from __future__ import annotations

from tests.support.api import STRONG_PASSWORD, Env, bearer, uid


async def test_admin_to_denied_member(env: Env) -> None:
    # The platform admin signs in and creates an org.
    admin = await env.login(env.admin_email, env.admin_password)
    slug = f"e2e-{uid()}"
    org = await env.client.post(
        "/v1/orgs",
        json={"name": "E2E Inc", "slug": slug, "billingOwnerEmail": "billing@e2e.example.com"},
        headers=bearer(admin),
    )
    assert org.status_code == 201
    org_id = org.json()["orgId"]

    # Invites an org admin; the token arrives at a real HTTP receiver, HMAC-signed.
    email = f"ops-{uid()}@e2e.example.com"
    invite = await env.client.post(
        f"/v1/orgs/{slug}/invites",
        json={"email": email, "roles": ["OrgAdmin"]},
        headers=bearer(admin),
    )
    assert invite.status_code == 202
    assert invite.json()["status"] == "pending"
    message = await env.receiver.wait_for(kind="invite", inviteId=invite.json()["inviteId"])
    assert message["to"] == email

    # The invitee accepts, signs in, and creates a service account as OrgAdmin.
    accepted = await env.client.post(
        "/v1/invites/accept", json={"token": message["token"], "password": STRONG_PASSWORD}
    )
    assert accepted.status_code == 200
    org_admin = await env.login(email, STRONG_PASSWORD)
    account = await env.client.post(
        f"/v1/orgs/{slug}/service-accounts",
        json={"name": "inference-gw", "roles": ["Developer"]},
        headers=bearer(org_admin),
    )
    assert account.status_code == 201

    # A member without the scope is denied with 403, and the denial is in the audit trail.
    viewer_email = f"viewer-{uid()}@e2e.example.com"
    viewer_invite = await env.client.post(
        f"/v1/orgs/{slug}/invites",
        json={"email": viewer_email, "roles": ["OrgViewer"]},
        headers=bearer(org_admin),
    )
    viewer_message = await env.receiver.wait_for(
        kind="invite", inviteId=viewer_invite.json()["inviteId"]
    )
    await env.client.post(
        "/v1/invites/accept", json={"token": viewer_message["token"], "password": STRONG_PASSWORD}
    )
    viewer = await env.login(viewer_email, STRONG_PASSWORD)
    denied = await env.client.post(
        f"/v1/orgs/{slug}/service-accounts",
        json={"name": "sneaky", "roles": ["OrgViewer"]},
        headers=bearer(viewer),
    )
    assert denied.status_code == 403
    assert denied.json()["details"]["permission"] == "service_accounts:write"
    trail = await env.client.get(
        f"/v1/orgs/{slug}/audit-events",
        params={"action": "authz:access:deny"},
        headers=bearer(org_admin),
    )
    assert trail.status_code == 200
    denial = trail.json()["items"][0]
    assert denial["outcome"] == "denied"
    assert denial["metadata"]["permission"] == "service_accounts:write"
    assert denial["requestId"] == denied.headers["x-request-id"]
    actions = {e["action"] for e in (await env.audit_events(org_id, limit=100))}
    assert {
        "api:organization:create",
        "api:invite:create",
        "api:invite:accept",
        "api:service_account:create",
        "authz:access:deny",
    } <= actions


async def test_webhook_delivery_is_retried(env: Env) -> None:
    org = await env.create_org()
    env.receiver.fail_next = 2
    email = f"retry-{uid()}@example.com"
    response = await env.client.post(
        f"/v1/orgs/{org['orgId']}/invites",
        json={"email": email, "roles": ["OrgViewer"]},
        headers=await env.admin_headers(),
    )
    message = await env.receiver.wait_for(
        timeout=15, kind="invite", inviteId=response.json()["inviteId"]
    )
    assert message["to"] == email
    assert env.receiver.fail_next == 0
