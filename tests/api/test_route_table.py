"""Generated from the route table: new routes are covered automatically."""

from __future__ import annotations

import uuid

from tests.support.api import Env
from tests.support.routes import operations


async def test_every_non_public_route_requires_a_credential(env: Env) -> None:
    org = await env.create_org()
    checked = 0
    for op in operations(env.app):
        if op.public:
            continue
        response = await env.client.request(
            op.method, op.url(orgId=org["orgId"]), json={} if op.has_body else None
        )
        assert response.status_code == 401, (op, response.status_code, response.text)
        assert response.json()["code"] in {"unauthenticated", "invalid_token"}
        checked += 1
    assert checked >= 30


async def test_admin_of_another_org_gets_nothing(env: Env) -> None:
    """Tenant isolation: an OrgOwner of org A probes every org-scoped operation of org B."""
    org_a = await env.create_org()
    org_b = await env.create_org()
    owner_a = await env.add_member(org_a["orgId"], ["OrgOwner"])
    victim = await env.add_member(org_b["orgId"], ["OrgViewer"])
    secrets_of_b = {org_b["orgId"], org_b["slug"], victim.email, victim.user_id}
    before_b = await env.audit_count(org_id=uuid.UUID(org_b["orgId"]))
    checked = 0
    for op in operations(env.app):
        if not op.org_scoped:
            continue
        for ref in (org_b["orgId"], org_b["slug"]):
            url = op.url(orgId=ref, userId=victim.user_id)
            response = await env.client.request(
                op.method, url, json={} if op.has_body else None, headers=owner_a.headers
            )
            assert response.status_code in {403, 404}, (op, response.status_code, response.text)
            body = response.text
            leaked = [s for s in secrets_of_b if s in body and s != ref]
            assert not leaked, (op, leaked)
            checked += 1
    assert checked >= 40
    # Nothing changed in org B except the audit records of the denied probes.
    after = await env.audit_events(org_b["orgId"], limit=200)
    new_events = after[: len(after) - before_b]
    assert new_events
    assert all(e["action"] == "authz:access:deny" and e["outcome"] == "denied" for e in new_events)
    assert all(e["actor"]["id"] == owner_a.user_id for e in new_events)


async def test_malformed_json_is_400_everywhere(env: Env) -> None:
    org = await env.create_org()
    headers = {**await env.admin_headers(), "Content-Type": "application/json"}
    before = await env.audit_count()
    for op in operations(env.app):
        if not op.has_body:
            continue
        response = await env.client.request(
            op.method, op.url(orgId=org["orgId"]), content=b'{"broken": ', headers=headers
        )
        assert response.status_code == 400, (op, response.text)
        assert response.json()["code"] == "malformed_json"
        array = await env.client.request(
            op.method, op.url(orgId=org["orgId"]), content=b"[1, 2]", headers=headers
        )
        assert array.status_code in {400, 422}, (op, array.text)
    assert await env.audit_count() == before


async def test_oversized_body_is_413(env: Env) -> None:
    headers = await env.admin_headers()
    big = b'{"name": "' + b"x" * (env.settings.max_request_bytes + 10) + b'"}'
    response = await env.client.post(
        "/v1/orgs", content=big, headers={**headers, "Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"


async def test_unknown_route_and_method(env: Env) -> None:
    missing = await env.client.get("/v1/nope")
    assert missing.status_code == 404
    assert missing.json()["code"] == "route_not_found"
    wrong = await env.client.put("/healthz")
    assert wrong.status_code == 405
    assert wrong.json()["code"] == "method_not_allowed"


async def test_unknown_fields_are_rejected_everywhere(env: Env) -> None:
    """Every body is strict: an unknown field is a 4xx and changes nothing."""
    org = await env.create_org()
    headers = await env.admin_headers()
    before = await env.audit_count()
    for op in operations(env.app):
        if not op.has_body or op.public:
            continue
        response = await env.client.request(
            op.method, op.url(orgId=org["orgId"]), json={"definitelyNotAField": 1}, headers=headers
        )
        assert response.status_code in {404, 422}, (op, response.text)
        if response.status_code == 422:
            assert response.json()["code"] == "validation_error"
    public = await env.client.post(
        "/v1/auth/login", json={"email": "a@b.c", "password": "x", "extra": 1}
    )
    assert public.status_code == 422
    assert await env.audit_count() == before
