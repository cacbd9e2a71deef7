"""Organizations over HTTP, in both modes."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import select, update

from tests.support.api import Env, uid
from userorg.orgs.models import Organization
from userorg.users.models import Membership


async def test_create_get_by_id_and_slug(env: Env) -> None:
    org = await env.create_org()
    headers = await env.admin_headers()
    by_id = await env.client.get(f"/v1/orgs/{org['orgId']}", headers=headers)
    by_slug = await env.client.get(f"/v1/orgs/{org['slug']}", headers=headers)
    assert by_id.status_code == by_slug.status_code == 200
    assert by_id.json() == by_slug.json()
    assert by_id.headers["etag"] == '"1"'
    assert org["status"] == "active"
    events = await env.audit_events(org["orgId"], action="api:organization:create")
    assert len(events) == 1
    assert events[0]["target"]["id"] == org["orgId"]


async def test_duplicate_slug_conflicts_and_changes_nothing(env: Env) -> None:
    org = await env.create_org()
    before = await env.audit_count()
    response = await env.client.post(
        "/v1/orgs",
        json={"name": "Other", "slug": org["slug"], "billingOwnerEmail": "x@example.com"},
        headers=await env.admin_headers(),
    )
    assert response.status_code == 409
    assert response.json()["code"] == "slug_taken"
    assert await env.audit_count() == before


async def test_invalid_slug_email_and_unknown_fields(env: Env) -> None:
    headers = await env.admin_headers()
    before = await env.audit_count()
    cases = [
        {"name": "A", "slug": "Bad_Slug", "billingOwnerEmail": "a@example.com"},
        {"name": "A", "slug": "-leading", "billingOwnerEmail": "a@example.com"},
        {"name": "A", "slug": "ok-slug-" + uid(), "billingOwnerEmail": "not-an-email"},
        {"name": "A", "slug": "ok-slug-" + uid(), "billingOwnerEmail": "a@example.com", "extra": 1},
        {"name": "x" * 201, "slug": "ok-slug-" + uid(), "billingOwnerEmail": "a@example.com"},
        {"name": 5, "slug": "ok-slug-" + uid(), "billingOwnerEmail": "a@example.com"},
        {"slug": "ok-slug-" + uid(), "billingOwnerEmail": "a@example.com"},
    ]
    for body in cases:
        response = await env.client.post("/v1/orgs", json=body, headers=headers)
        assert response.status_code == 422, (body, response.text)
        payload = response.json()
        assert payload["code"] == "validation_error"
        assert payload["details"]["errors"]
        assert all("input" not in e for e in payload["details"]["errors"])
    assert await env.audit_count() == before


async def test_update_with_if_match(env: Env) -> None:
    org = await env.create_org()
    headers = await env.admin_headers()
    url = f"/v1/orgs/{org['orgId']}"
    ok = await env.client.patch(
        url, json={"name": "Renamed"}, headers={**headers, "If-Match": '"1"'}
    )
    assert ok.status_code == 200, ok.text
    assert ok.json()["name"] == "Renamed"
    assert ok.json()["version"] == 2
    assert ok.headers["etag"] == '"2"'
    stale = await env.client.patch(
        url, json={"name": "Again"}, headers={**headers, "If-Match": '"1"'}
    )
    assert stale.status_code == 412
    assert stale.json()["code"] == "precondition_failed"
    current = await env.client.get(url, headers=headers)
    assert current.json()["name"] == "Renamed"
    events = await env.audit_events(org["orgId"], action="api:organization:update")
    assert len(events) == 1
    assert events[0]["metadata"]["changes"] == {"name": "Renamed"}


async def test_mfa_required_roles_must_exist(env: Env) -> None:
    org = await env.create_org()
    response = await env.client.patch(
        f"/v1/orgs/{org['orgId']}",
        json={"mfaRequiredRoles": ["NoSuchRole"]},
        headers=await env.admin_headers(),
    )
    assert response.status_code == 422
    assert response.json()["code"] == "unknown_role"


async def test_list_pagination_and_visibility(env: Env) -> None:
    prefix = f"pg-{uid()}"
    created = [await env.create_org(slug=f"{prefix}-{i}") for i in range(5)]
    headers = await env.admin_headers()
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, "slugPrefix": prefix}
        if cursor:
            params["cursor"] = cursor
        page = await env.client.get("/v1/orgs", params=params, headers=headers)
        assert page.status_code == 200
        body = page.json()
        seen += [o["slug"] for o in body["items"]]
        cursor = body["nextCursor"]
        if not cursor:
            break
    assert seen == [o["slug"] for o in created]
    member = await env.add_member(created[0]["orgId"], ["OrgViewer"])
    mine = await env.client.get("/v1/orgs", headers=member.headers)
    assert [o["slug"] for o in mine.json()["items"]] == [created[0]["slug"]]
    bad = await env.client.get("/v1/orgs", params={"cursor": "%%%"}, headers=headers)
    assert bad.status_code == 400
    assert bad.json()["code"] == "invalid_cursor"


async def test_suspend_blocks_members_and_restore(env: Env) -> None:
    org = await env.create_org()
    owner = await env.add_member(org["orgId"], ["OrgAdmin"])
    url = f"/v1/orgs/{org['orgId']}"
    assert (await env.client.get(url, headers=owner.headers)).status_code == 200
    # Org admins cannot suspend: suspension is a platform decision.
    denied = await env.client.post(f"{url}/suspend", json={"reason": "x"}, headers=owner.headers)
    assert denied.status_code == 403
    suspended = await env.client.post(
        f"{url}/suspend", json={"reason": "unpaid invoices"}, headers=await env.admin_headers()
    )
    assert suspended.status_code == 200
    assert suspended.json()["status"] == "suspended"
    blocked = await env.client.get(url, headers=owner.headers)
    assert blocked.status_code == 403
    assert blocked.json()["details"]["reason"] == "org_suspended"
    again = await env.client.post(
        f"{url}/suspend", json={"reason": "x"}, headers=await env.admin_headers()
    )
    assert again.status_code == 409
    restored = await env.client.post(f"{url}/restore", headers=await env.admin_headers())
    assert restored.json()["status"] == "active"
    assert (await env.client.get(url, headers=owner.headers)).status_code == 200


async def test_safe_delete_restore_and_purge(env: Env) -> None:
    org = await env.create_org()
    owner = await env.add_member(org["orgId"], ["OrgOwner"])
    url = f"/v1/orgs/{org['orgId']}"
    deleted = await env.client.delete(url, headers=owner.headers)
    assert deleted.status_code == 202
    assert deleted.json()["status"] == "pending_delete"
    assert deleted.json()["purgeAfter"] is not None
    # Owners can still see it and cancel; everything else is blocked.
    assert (await env.client.get(url, headers=owner.headers)).status_code == 200
    blocked = await env.client.get(f"{url}/users", headers=owner.headers)
    assert blocked.status_code == 403
    restored = await env.client.post(f"{url}/restore", headers=owner.headers)
    assert restored.status_code == 200, restored.text
    assert restored.json()["status"] == "active"

    # Delete again and let the retention window pass: the purge job removes it.
    assert (await env.client.delete(url, headers=owner.headers)).status_code == 202
    async with env.container.session_factory() as session:
        await session.execute(
            update(Organization)
            .where(Organization.slug == org["slug"])
            .values(purge_after=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
        )
        await session.commit()
    result = await env.container.maintenance.run_once()
    assert result["orgsPurged"] >= 1
    gone = await env.client.get(url, headers=await env.admin_headers())
    assert gone.status_code == 404
    async with env.container.session_factory() as session:
        rows = (
            await session.execute(
                select(Membership).where(Membership.org_id == uuid.UUID(org["orgId"]))
            )
        ).all()
        assert rows == []
    # The audit chain of a purged org survives.
    assert await env.audit_count(action="system:organization:purge", target_id=org["orgId"]) == 1


async def test_unknown_org_is_404(env: Env) -> None:
    headers = await env.admin_headers()
    for ref in ("no-such-org", "01a21296-3a3d-70da-83e9-b1a1586bd655", "x" * 100):
        response = await env.client.get(f"/v1/orgs/{ref}", headers=headers)
        assert response.status_code == 404
        assert response.json()["code"] == "organization_not_found"
