"""The audit trail: recorded with every change, queryable, hash-chained, tamper-evident."""

from __future__ import annotations

import uuid

from sqlalchemy import select, update

from tests.support.api import Env
from userorg.audit.models import AuditEvent
from userorg.audit.service import verify_stored_chain


async def test_events_carry_request_context(env: Env) -> None:
    org = await env.create_org()
    headers = {
        **await env.admin_headers(),
        "X-Request-Id": "req-abc-123",
        "User-Agent": "audit-test/1.0",
    }
    response = await env.client.patch(
        f"/v1/orgs/{org['orgId']}", json={"name": "Audited"}, headers=headers
    )
    assert response.headers["x-request-id"] == "req-abc-123"
    event = (await env.audit_events(org["orgId"], action="api:organization:update"))[0]
    assert event["requestId"] == "req-abc-123"
    assert event["userAgent"] == "audit-test/1.0"
    assert event["ip"] == "127.0.0.1"
    assert event["actor"]["type"] == "user"
    assert event["target"] == {"type": "organization", "id": org["orgId"]}
    generated = await env.client.get("/healthz")
    assert len(generated.headers["x-request-id"]) == 32


async def test_filters_and_pagination(env: Env) -> None:
    org = await env.create_org()
    headers = await env.admin_headers()
    for i in range(4):
        await env.client.patch(f"/v1/orgs/{org['orgId']}", json={"name": f"N{i}"}, headers=headers)
    url = f"/v1/orgs/{org['orgId']}/audit-events"
    page1 = (await env.client.get(url, params={"limit": 3}, headers=headers)).json()
    page2 = (
        await env.client.get(
            url, params={"limit": 3, "cursor": page1["nextCursor"]}, headers=headers
        )
    ).json()
    seqs = [e["seq"] for e in page1["items"] + page2["items"]]
    assert seqs == sorted(seqs, reverse=True)
    assert len(set(seqs)) == 5
    assert page2["nextCursor"] is None
    updates = (
        await env.client.get(url, params={"action": "api:organization:update"}, headers=headers)
    ).json()
    assert len(updates["items"]) == 4
    prefix = (
        await env.client.get(url, params={"action": "api:organization:*"}, headers=headers)
    ).json()
    assert len(prefix["items"]) == 5
    first = page1["items"][-1]["occurredAt"]
    window = (await env.client.get(url, params={"from": first}, headers=headers)).json()
    assert all(e["occurredAt"] >= first for e in window["items"])
    inverted = await env.client.get(
        url, params={"from": "2030-01-01T00:00:00Z", "to": "2020-01-01T00:00:00Z"}, headers=headers
    )
    assert inverted.status_code == 422
    assert inverted.json()["code"] == "invalid_time_window"
    bad_time = await env.client.get(url, params={"from": "yesterday"}, headers=headers)
    assert bad_time.status_code == 422


async def test_viewer_without_audit_scope_is_denied_and_audited(env: Env) -> None:
    org = await env.create_org()
    dev = await env.add_member(org["orgId"], ["Developer"])
    response = await env.client.get(f"/v1/orgs/{org['orgId']}/audit-events", headers=dev.headers)
    assert response.status_code == 403
    assert response.json()["details"]["permission"] == "audit:read"
    denial = (await env.audit_events(org["orgId"], action="authz:access:deny"))[0]
    assert denial["actor"]["id"] == dev.user_id
    assert denial["policyId"]
    assert denial["reason"] == "scope_missing"
    assert denial["target"]["id"] == "GET /v1/orgs/{orgId}/audit-events"


async def test_chain_verifies_and_tampering_is_detected(env: Env) -> None:
    org = await env.create_org()
    headers = await env.admin_headers()
    for i in range(3):
        await env.client.patch(
            f"/v1/orgs/{org['orgId']}", json={"name": f"Chain {i}"}, headers=headers
        )
    chain = org["orgId"]
    async with env.container.session_factory() as session:
        result = await verify_stored_chain(session, chain_id=chain)
        assert result.ok, result
        assert result.events_checked == 4
        target = (
            await session.execute(
                select(AuditEvent).where(AuditEvent.chain_id == chain, AuditEvent.seq == 3)
            )
        ).scalar_one()
        await session.execute(
            update(AuditEvent)
            .where(AuditEvent.id == target.id)
            .values(metadata_={"changes": {"name": "forged"}})
        )
        await session.commit()
    async with env.container.session_factory() as session:
        result = await verify_stored_chain(session, chain_id=chain)
    assert not result.ok
    assert result.first_bad_event_id == str(target.id)
    assert result.first_bad_seq == 3
    assert result.reason is not None and result.reason.startswith("hash_mismatch")


async def test_secrets_never_reach_the_trail(env: Env) -> None:
    org = await env.create_org()
    member = await env.add_member(org["orgId"], ["OrgViewer"])
    async with env.container.session_factory() as session:
        rows = (await session.execute(select(AuditEvent))).scalars().all()
    blob = " ".join(str(r.metadata_) + str(r.reason) + str(r.target_id) for r in rows)
    assert member.password not in blob
    assert env.admin_password not in blob
    invite_tokens = [m["token"] for m in env.receiver.find(kind="invite")]
    assert invite_tokens
    assert not any(token in blob for token in invite_tokens)
    assert uuid.UUID(member.user_id)
