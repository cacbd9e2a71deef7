"""Sessions (own and admin), suspension refusing live tokens, password reset and change."""

from __future__ import annotations

from tests.support.api import STRONG_PASSWORD, Env, bearer, uid

NEW_PASSWORD = "Another-Long-Passphrase-77"


async def test_revoke_others_keeps_only_the_current_session(env: Env) -> None:
    org = await env.create_org()
    member = await env.add_member(org["orgId"], ["OrgViewer"])
    others = [await env.login(member.email, STRONG_PASSWORD) for _ in range(2)]
    response = await env.client.post("/v1/auth/sessions/revoke-others", headers=member.headers)
    assert response.status_code == 200
    assert response.json() == {"revoked": 2}
    for token in others:
        refused = await env.client.get("/v1/auth/me", headers=bearer(token))
        assert refused.status_code == 401
        assert refused.json()["code"] == "session_revoked"
    assert (await env.client.get("/v1/auth/me", headers=member.headers)).status_code == 200
    assert await env.audit_count(action="auth:session:revoke_others", actor_id=member.user_id) == 1


async def test_org_admins_list_and_revoke_member_sessions(env: Env) -> None:
    org = await env.create_org()
    admin = await env.add_member(org["orgId"], ["OrgAdmin"])
    member = await env.add_member(org["orgId"], ["Developer"])
    second = await env.login(member.email, STRONG_PASSWORD)
    base = f"/v1/orgs/{org['orgId']}/users/{member.user_id}/sessions"
    listed = await env.client.get(base, headers=admin.headers)
    assert listed.status_code == 200
    sessions = listed.json()["items"]
    assert len(sessions) == 2
    assert all(not s["current"] and s["mfaVerified"] is False for s in sessions)
    # A developer may not see them.
    assert (await env.client.get(base, headers=member.headers)).status_code == 403
    one = sessions[0]["sessionId"]
    revoked = await env.client.delete(base, params={"sessionId": one}, headers=admin.headers)
    assert revoked.status_code == 200 and revoked.json() == {"revoked": 1}
    rest = await env.client.delete(base, headers=admin.headers)
    assert rest.json() == {"revoked": 1}
    for token in (member.token, second):
        assert (await env.client.get("/v1/auth/me", headers=bearer(token))).status_code == 401
    assert (await env.audit_count(action="api:session:revoke", target_id=member.user_id)) == 2
    # A platform admin who is a member is out of an org admin's reach.
    platform = await env.client.get("/v1/auth/me", headers=await env.admin_headers())
    admin_id = platform.json()["userId"]
    url = f"/v1/orgs/{org['orgId']}/users/{admin_id}/sessions"
    assert (await env.client.delete(url, headers=admin.headers)).status_code == 404


async def test_suspending_an_identity_refuses_its_live_tokens(env: Env) -> None:
    org = await env.create_org()
    member = await env.add_member(org["orgId"], ["Developer"])
    refresh = (
        await env.client.post(
            "/v1/auth/login", json={"email": member.email, "password": STRONG_PASSWORD}
        )
    ).json()["refreshToken"]
    assert (await env.client.get("/v1/auth/me", headers=member.headers)).status_code == 200
    admin = await env.admin_headers()
    # Only platform admins suspend identities.
    owner = await env.add_member(org["orgId"], ["OrgOwner"])
    denied = await env.client.post(
        f"/v1/users/{member.user_id}/suspend", json={"reasonCode": "fraud"}, headers=owner.headers
    )
    assert denied.status_code == 403
    suspended = await env.client.post(
        f"/v1/users/{member.user_id}/suspend", json={"reasonCode": "fraud"}, headers=admin
    )
    assert suspended.status_code == 200, suspended.text
    assert suspended.json()["status"] == "suspended"
    # The access token issued before the suspension is refused right after it.
    refused = await env.client.get("/v1/auth/me", headers=member.headers)
    assert refused.status_code == 401
    assert refused.json()["code"] in {"session_revoked", "principal_suspended"}
    assert (
        await env.client.get(f"/v1/orgs/{org['orgId']}", headers=member.headers)
    ).status_code == 401
    assert (
        await env.client.post("/v1/auth/refresh", json={"refreshToken": refresh})
    ).status_code == 401
    login = await env.client.post(
        "/v1/auth/login", json={"email": member.email, "password": STRONG_PASSWORD}
    )
    assert login.status_code == 401
    assert login.json()["code"] == "invalid_credentials"
    assert await env.audit_count(action="api:user:suspend_identity", target_id=member.user_id) == 1
    restored = await env.client.post(f"/v1/users/{member.user_id}/restore", headers=admin)
    assert restored.json()["status"] == "active"
    assert await env.login(member.email, STRONG_PASSWORD)


async def test_suspending_a_membership_denies_in_that_org_at_once(env: Env) -> None:
    org = await env.create_org()
    member = await env.add_member(org["orgId"], ["Developer"])
    assert (
        await env.client.get(f"/v1/orgs/{org['orgId']}", headers=member.headers)
    ).status_code == 200
    suspended = await env.client.post(
        f"/v1/orgs/{org['orgId']}/users/{member.user_id}/suspend",
        json={"reasonCode": "offboarding"},
        headers=await env.admin_headers(),
    )
    assert suspended.status_code == 200
    denied = await env.client.get(f"/v1/orgs/{org['orgId']}", headers=member.headers)
    assert denied.status_code == 403
    assert denied.json()["details"]["reason"] == "membership_suspended"


async def test_password_reset_flow(env: Env) -> None:
    org = await env.create_org()
    member = await env.add_member(org["orgId"], ["OrgViewer"])
    unknown = await env.client.post(
        "/v1/auth/password/forgot", json={"email": f"ghost-{uid()}@example.com"}
    )
    known = await env.client.post("/v1/auth/password/forgot", json={"email": member.email})
    assert unknown.status_code == known.status_code == 202
    assert unknown.json() == known.json() == {"status": "accepted"}
    message = await env.receiver.wait_for(kind="password_reset", to=member.email)
    token = message["token"]
    assert token in message["link"]
    weak = await env.client.post(
        "/v1/auth/password/reset", json={"token": token, "newPassword": "password"}
    )
    assert weak.status_code == 422
    assert weak.json()["code"] == "weak_password"
    done = await env.client.post(
        "/v1/auth/password/reset", json={"token": token, "newPassword": NEW_PASSWORD}
    )
    assert done.status_code == 204
    # Every session ended; the token is spent; the new password works.
    assert (await env.client.get("/v1/auth/me", headers=member.headers)).status_code == 401
    again = await env.client.post(
        "/v1/auth/password/reset", json={"token": token, "newPassword": NEW_PASSWORD + "x"}
    )
    assert again.status_code == 400
    assert again.json()["code"] == "invalid_reset_token"
    assert (
        await env.client.post(
            "/v1/auth/login", json={"email": member.email, "password": STRONG_PASSWORD}
        )
    ).status_code == 401
    assert await env.login(member.email, NEW_PASSWORD)
    forged = await env.client.post(
        "/v1/auth/password/reset", json={"token": "uopr_forged", "newPassword": NEW_PASSWORD}
    )
    assert forged.status_code == 400
    assert await env.audit_count(action="auth:password:reset", target_id=member.user_id) == 1


async def test_password_change_needs_the_current_one(env: Env) -> None:
    org = await env.create_org()
    member = await env.add_member(org["orgId"], ["OrgViewer"])
    other = await env.login(member.email, STRONG_PASSWORD)
    wrong = await env.client.post(
        "/v1/auth/password/change",
        json={"currentPassword": "Wrong-Password-123", "newPassword": NEW_PASSWORD},
        headers=member.headers,
    )
    assert wrong.status_code == 403
    assert wrong.json()["code"] == "invalid_current_password"
    changed = await env.client.post(
        "/v1/auth/password/change",
        json={"currentPassword": STRONG_PASSWORD, "newPassword": NEW_PASSWORD},
        headers=member.headers,
    )
    assert changed.status_code == 200
    assert changed.json() == {"otherSessionsRevoked": 1}
    assert (await env.client.get("/v1/auth/me", headers=bearer(other))).status_code == 401
    assert (await env.client.get("/v1/auth/me", headers=member.headers)).status_code == 200
    assert await env.login(member.email, NEW_PASSWORD)
