"""Members, invites and role assignment over HTTP, in both modes."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select, update

from tests.support.api import STRONG_PASSWORD, Env, uid
from userorg.crypto import sha256_hex
from userorg.users.models import Invite


async def test_invite_accept_new_identity_and_sign_in(env: Env) -> None:
    org = await env.create_org()
    email = f"New.User-{uid()}@Example.com"
    token = await env.invite(org["orgId"], email, ["Developer"])
    message = env.receiver.find(kind="invite", token=token)[0]
    assert token in message["link"]
    assert message["to"] == email.lower()
    missing_password = await env.client.post("/v1/invites/accept", json={"token": token})
    assert missing_password.status_code == 422
    assert missing_password.json()["code"] == "password_required"
    weak = await env.client.post(
        "/v1/invites/accept", json={"token": token, "password": "password1234"}
    )
    assert weak.status_code == 422
    assert weak.json()["code"] == "weak_password"
    accepted = await env.client.post(
        "/v1/invites/accept",
        json={"token": token, "password": STRONG_PASSWORD, "displayName": "Ada"},
    )
    assert accepted.status_code == 200, accepted.text
    body = accepted.json()
    assert body["newIdentity"] is True
    assert body["orgId"] == org["orgId"]
    # The invite is single-use.
    reused = await env.client.post(
        "/v1/invites/accept", json={"token": token, "password": STRONG_PASSWORD}
    )
    assert reused.status_code == 400
    assert reused.json()["code"] == "invalid_invite"
    # Email is case-insensitive.
    access = await env.login(email.upper(), STRONG_PASSWORD)
    me = await env.client.get("/v1/auth/me", headers={"Authorization": f"Bearer {access}"})
    assert me.json()["memberships"][0]["roles"] == ["Developer"]
    member = await env.client.get(
        f"/v1/orgs/{org['orgId']}/users/{body['userId']}", headers=await env.admin_headers()
    )
    assert member.json()["displayName"] == "Ada"
    assert member.json()["roles"] == ["Developer"]
    # The token is stored only as a hash.
    async with env.container.session_factory() as session:
        stored = (
            await session.execute(select(Invite).where(Invite.token_hash == sha256_hex(token)))
        ).scalar_one()
        assert stored.status == "accepted"


async def test_existing_identity_joins_second_org(env: Env) -> None:
    first = await env.create_org()
    second = await env.create_org()
    member = await env.add_member(first["orgId"], ["OrgViewer"])
    token = await env.invite(second["orgId"], member.email, ["Developer"])
    accepted = await env.client.post("/v1/invites/accept", json={"token": token})
    assert accepted.status_code == 200
    assert accepted.json()["newIdentity"] is False
    assert accepted.json()["userId"] == member.user_id
    # The existing password still works; the identity is one user with two memberships.
    access = await env.login(member.email, STRONG_PASSWORD)
    me = await env.client.get("/v1/auth/me", headers={"Authorization": f"Bearer {access}"})
    assert sorted(m["slug"] for m in me.json()["memberships"]) == sorted(
        [first["slug"], second["slug"]]
    )


async def test_expired_and_revoked_invites(env: Env) -> None:
    org = await env.create_org()
    headers = await env.admin_headers()
    token = await env.invite(org["orgId"], f"late-{uid()}@example.com", ["OrgViewer"])
    async with env.container.session_factory() as session:
        await session.execute(
            update(Invite)
            .where(Invite.token_hash == sha256_hex(token))
            .values(expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1))
        )
        await session.commit()
    expired = await env.client.post(
        "/v1/invites/accept", json={"token": token, "password": STRONG_PASSWORD}
    )
    assert expired.status_code == 400
    listed = await env.client.get(
        f"/v1/orgs/{org['orgId']}/invites", params={"status": "expired"}, headers=headers
    )
    assert len(listed.json()["items"]) == 1

    email = f"revoked-{uid()}@example.com"
    token2 = await env.invite(org["orgId"], email, ["OrgViewer"])
    invite_id = env.receiver.find(token=token2)[0]["inviteId"]
    revoke = await env.client.delete(
        f"/v1/orgs/{org['orgId']}/invites/{invite_id}", headers=headers
    )
    assert revoke.status_code == 204
    assert (
        await env.client.delete(f"/v1/orgs/{org['orgId']}/invites/{invite_id}", headers=headers)
    ).status_code == 204
    refused = await env.client.post(
        "/v1/invites/accept", json={"token": token2, "password": STRONG_PASSWORD}
    )
    assert refused.status_code == 400
    other = await env.create_org()
    foreign = await env.client.delete(
        f"/v1/orgs/{other['orgId']}/invites/{invite_id}", headers=headers
    )
    assert foreign.status_code == 404


async def test_reinvite_supersedes_and_member_conflicts(env: Env) -> None:
    org = await env.create_org()
    email = f"twice-{uid()}@example.com"
    first = await env.invite(org["orgId"], email, ["OrgViewer"])
    second = await env.invite(org["orgId"], email, ["Developer"])
    assert (
        await env.client.post(
            "/v1/invites/accept", json={"token": first, "password": STRONG_PASSWORD}
        )
    ).status_code == 400
    assert (
        await env.client.post(
            "/v1/invites/accept", json={"token": second, "password": STRONG_PASSWORD}
        )
    ).status_code == 200
    again = await env.client.post(
        f"/v1/orgs/{org['orgId']}/invites",
        json={"email": email, "roles": ["OrgViewer"]},
        headers=await env.admin_headers(),
    )
    assert again.status_code == 409
    assert again.json()["code"] == "already_member"


async def test_invite_validation(env: Env) -> None:
    org = await env.create_org()
    headers = await env.admin_headers()
    url = f"/v1/orgs/{org['orgId']}/invites"
    before = await env.audit_count()
    bad_bodies = [
        ({"email": "nope", "roles": ["OrgViewer"]}, 422),
        ({"email": "a@example.com", "roles": []}, 422),
        ({"email": "a@example.com", "roles": ["NoSuchRole"]}, 422),
        ({"email": "a@example.com", "roles": ["PlatformAdmin"]}, 422),
        ({"email": "a@example.com", "roles": ["OrgViewer"], "expiresInHours": 0}, 422),
        ({"email": "a@example.com", "roles": ["OrgViewer"], "expiresInHours": "5"}, 422),
        ({"email": "a@example.com", "roles": ["OrgViewer"], "expiresInHours": 10_000}, 422),
    ]
    for body, status in bad_bodies:
        response = await env.client.post(url, json=body, headers=headers)
        assert response.status_code == status, (body, response.text)
    assert await env.audit_count() == before


async def test_member_lifecycle(env: Env) -> None:
    org = await env.create_org()
    admin = await env.add_member(org["orgId"], ["OrgAdmin"])
    await env.add_member(org["orgId"], ["OrgOwner"])
    dev = await env.add_member(org["orgId"], ["Developer"])
    base = f"/v1/orgs/{org['orgId']}/users/{dev.user_id}"

    listing = await env.client.get(
        f"/v1/orgs/{org['orgId']}/users", params={"role": "Developer"}, headers=admin.headers
    )
    assert [m["userId"] for m in listing.json()["items"]] == [dev.user_id]

    patched = await env.client.patch(
        base, json={"attributes": {"team": "ml"}}, headers=admin.headers
    )
    assert patched.status_code == 200
    assert patched.json()["attributes"] == {"team": "ml"}

    no_reason = await env.client.post(f"{base}/suspend", json={}, headers=admin.headers)
    assert no_reason.status_code == 422
    suspended = await env.client.post(
        f"{base}/suspend", json={"reasonCode": "policy_violation"}, headers=admin.headers
    )
    assert suspended.status_code == 200
    assert suspended.json()["status"] == "suspended"
    # A suspended member's token is refused in this org from that moment.
    refused = await env.client.get(f"/v1/orgs/{org['orgId']}", headers=dev.headers)
    assert refused.status_code == 403
    assert refused.json()["details"]["reason"] == "membership_suspended"
    restored = await env.client.post(f"{base}/restore", headers=admin.headers)
    assert restored.json()["status"] == "active"
    assert (
        await env.client.get(f"/v1/orgs/{org['orgId']}", headers=dev.headers)
    ).status_code == 200

    roles = await env.client.put(
        f"{base}/roles",
        json={"roles": ["OrgViewer"], "justification": "moved team"},
        headers=admin.headers,
    )
    assert roles.status_code == 200
    assert roles.json()["roles"] == ["OrgViewer"]
    events = await env.audit_events(
        org["orgId"], action="api:user:roles_update", targetId=dev.user_id
    )
    assert events[0]["metadata"]["justification"] == "moved team"

    removed = await env.client.delete(base, headers=admin.headers)
    assert removed.status_code == 204
    assert (await env.client.get(base, headers=admin.headers)).status_code == 404
    assert (
        await env.client.get(f"/v1/orgs/{org['orgId']}", headers=dev.headers)
    ).status_code == 404


async def test_last_owner_is_protected(env: Env) -> None:
    org = await env.create_org()
    owner = await env.add_member(org["orgId"], ["OrgOwner"])
    base = f"/v1/orgs/{org['orgId']}/users/{owner.user_id}"
    headers = await env.admin_headers()
    demote = await env.client.put(f"{base}/roles", json={"roles": ["OrgAdmin"]}, headers=headers)
    assert demote.status_code == 409
    assert demote.json()["code"] == "last_owner"
    remove = await env.client.delete(base, headers=headers)
    assert remove.status_code == 409
    second = await env.add_member(org["orgId"], ["OrgOwner"])
    assert (
        await env.client.put(f"{base}/roles", json={"roles": ["OrgAdmin"]}, headers=headers)
    ).status_code == 200
    assert (
        await env.client.delete(f"/v1/orgs/{org['orgId']}/users/{second.user_id}", headers=headers)
    ).status_code == 409


async def test_no_privilege_escalation(env: Env) -> None:
    org = await env.create_org()
    admin = await env.add_member(org["orgId"], ["OrgAdmin"])
    dev = await env.add_member(org["orgId"], ["Developer"])
    # OrgAdmin lacks orgs:delete and budgets:override:approve, so it cannot grant OrgOwner.
    grant = await env.client.put(
        f"/v1/orgs/{org['orgId']}/users/{dev.user_id}/roles",
        json={"roles": ["OrgOwner"]},
        headers=admin.headers,
    )
    assert grant.status_code == 403
    assert grant.json()["code"] == "privilege_escalation"
    invite = await env.client.post(
        f"/v1/orgs/{org['orgId']}/invites",
        json={"email": f"x-{uid()}@example.com", "roles": ["OrgOwner"]},
        headers=admin.headers,
    )
    assert invite.status_code == 403
    # A developer cannot assign roles at all.
    denied = await env.client.put(
        f"/v1/orgs/{org['orgId']}/users/{dev.user_id}/roles",
        json={"roles": ["OrgAdmin"]},
        headers=dev.headers,
    )
    assert denied.status_code == 403
    assert denied.json()["details"]["permission"] == "roles:assign"


async def test_display_name_of_shared_identity(env: Env) -> None:
    a = await env.create_org()
    b = await env.create_org()
    admin_a = await env.add_member(a["orgId"], ["OrgAdmin"])
    member = await env.add_member(a["orgId"], ["OrgViewer"])
    url = f"/v1/orgs/{a['orgId']}/users/{member.user_id}"
    assert (
        await env.client.patch(url, json={"displayName": "Solo"}, headers=admin_a.headers)
    ).status_code == 200
    token = await env.invite(b["orgId"], member.email, ["OrgViewer"])
    assert (await env.client.post("/v1/invites/accept", json={"token": token})).status_code == 200
    shared = await env.client.patch(url, json={"displayName": "Hijack"}, headers=admin_a.headers)
    assert shared.status_code == 409
    assert shared.json()["code"] == "identity_shared"
    # A platform admin may still change it.
    platform = await env.client.patch(
        url, json={"displayName": "Ops"}, headers=await env.admin_headers()
    )
    assert platform.status_code == 200
    assert platform.json()["displayName"] == "Ops"
