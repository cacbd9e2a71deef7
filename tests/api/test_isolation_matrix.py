"""Tenant isolation matrix, generated from the route table: every org-scoped operation (any
path with ``{orgId}``, so routes added later are covered without touching this file) is called
against org B by each kind of caller who must not succeed there:

(a) an OrgOwner of another org A,
(b) a member of org B whose only role lacks every scope the admin API asks for,
(c) an OrgOwner of org B whose identity was suspended by the platform,
(c') an OrgOwner of org B whose membership was suspended in org B,
(d) a revoked API key of org B (its service account holds OrgAdmin),
(e) no credential at all.

Each answer must be the right 401/403/404, and no body may carry data of org B beyond what the
caller put in the URL. Nothing in org B changes: the only new audit rows are denials.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from schemathesis.generation.modes import GenerationMode
from sqlalchemy import func, select

from tests.support.api import Env, bearer, uid
from tests.support.authenticators import Passkey
from tests.support.fuzz import draw_cases, load_schema
from tests.support.routes import Operation, operations
from userorg.audit.models import AuditEvent


@dataclass(frozen=True)
class Caller:
    name: str
    headers: dict[str, str]
    allowed: frozenset[int]
    codes: frozenset[str] | None = None  # expected error codes (None: any of the statuses)


async def not_denied(env: Env, org_id: str) -> int:
    """Audit rows of the org whose outcome is anything but a denial (i.e. real changes)."""
    async with env.container.session_factory() as session:
        query = (
            select(func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.org_id == uuid.UUID(org_id), AuditEvent.outcome != "denied")
        )
        return int((await session.execute(query)).scalar_one())


def org_scoped(env: Env) -> list[Operation]:
    ops = [op for op in operations(env.app) if op.org_scoped and not op.public]
    assert len(ops) >= 30, ops
    return ops


async def test_isolation_matrix(env: Env) -> None:
    admin = await env.admin_headers()
    org_a = await env.create_org()
    org_b = await env.create_org()
    b_id = org_b["orgId"]
    outsider = await env.add_member(org_a["orgId"], ["OrgOwner"])
    victim = await env.add_member(b_id, ["OrgViewer"])

    # (b) a member whose only role grants a scope no admin route asks for.
    role = await env.client.post(
        f"/v1/orgs/{b_id}/roles",
        json={"name": f"Invoker{uid()}", "scopes": ["inference:invoke"]},
        headers=admin,
    )
    assert role.status_code == 201, role.text
    unscoped = await env.add_member(b_id, [role.json()["name"]])

    # (c) an identity suspended platform-wide, and (c') a membership suspended in org B.
    suspended = await env.add_member(b_id, ["OrgOwner"])
    response = await env.client.post(
        f"/v1/users/{suspended.user_id}/suspend", json={"reasonCode": "fraud"}, headers=admin
    )
    assert response.status_code == 200, response.text
    member_suspended = await env.add_member(b_id, ["OrgOwner"])
    response = await env.client.post(
        f"/v1/orgs/{b_id}/users/{member_suspended.user_id}/suspend",
        json={"reasonCode": "offboarding"},
        headers=admin,
    )
    assert response.status_code == 200, response.text

    # (d) an API key of a powerful service account of org B, revoked.
    account = await env.client.post(
        f"/v1/orgs/{b_id}/service-accounts",
        json={"name": f"sa-{uid()}", "roles": ["OrgAdmin"]},
        headers=admin,
    )
    assert account.status_code == 201, account.text
    account_id = account.json()["serviceAccountId"]
    key = await env.client.post(
        f"/v1/orgs/{b_id}/service-accounts/{account_id}/api-keys",
        json={"scopes": ["users:read", "api_keys:read", "orgs:read", "audit:read"]},
        headers=admin,
    )
    assert key.status_code == 201, key.text
    key_secret, key_id = key.json()["secret"], key.json()["apiKeyId"]
    # The key works before it is revoked (so the 401 below is the revocation's doing).
    works = await env.client.get(f"/v1/orgs/{b_id}/users", headers=bearer(key_secret))
    assert works.status_code == 200, works.text
    revoked = await env.client.delete(f"/v1/orgs/{b_id}/api-keys/{key_id}", headers=admin)
    assert revoked.status_code == 204, revoked.text

    callers = [
        Caller("admin_of_other_org", outsider.headers, frozenset({403, 404})),
        Caller("member_without_scope", unscoped.headers, frozenset({403})),
        Caller("suspended_identity", suspended.headers, frozenset({401})),
        Caller("suspended_membership", member_suspended.headers, frozenset({403, 404})),
        Caller(
            "revoked_key",
            bearer(key_secret),
            frozenset({401}),
            frozenset({"invalid_api_key"}),
        ),
        Caller("no_credential", {}, frozenset({401}), frozenset({"unauthenticated"})),
    ]
    # Data of org B that no denied caller may see (its id and slug may appear only when the
    # caller sent them in the URL).
    secrets_of_b = {
        b_id,
        org_b["slug"],
        org_b["name"],
        victim.email,
        victim.user_id,
        account_id,
        key_id,
        unscoped.email,
        suspended.email,
        member_suspended.email,
    }
    before_b = await env.audit_count(org_id=uuid.UUID(b_id))
    not_denied_before = await not_denied(env, b_id)
    checked: dict[str, int] = {}
    for op in org_scoped(env):
        for caller in callers:
            for ref in (b_id, org_b["slug"]):
                url = op.url(
                    orgId=ref,
                    userId=victim.user_id,
                    serviceAccountId=account_id,
                    apiKeyId=key_id,
                )
                response = await env.client.request(
                    op.method, url, json={} if op.has_body else None, headers=caller.headers
                )
                where = (caller.name, op.method, url, response.status_code, response.text)
                assert response.status_code in caller.allowed, where
                body = response.json()
                if caller.codes is not None:
                    assert body["code"] in caller.codes, where
                in_url = {part for part in url.split("/") if part}
                leaked = [s for s in secrets_of_b if s in response.text and s not in in_url]
                assert not leaked, (where, leaked)
                checked[caller.name] = checked.get(caller.name, 0) + 1
    assert all(count >= 60 for count in checked.values()), checked
    # Nothing changed in org B: the only new audit rows are the denials themselves.
    after_b = await env.audit_count(org_id=uuid.UUID(b_id))
    assert after_b > before_b
    assert await not_denied(env, b_id) == not_denied_before
    # The victim's data is intact: org B still lists the same members, the key stays revoked.
    members = await env.client.get(f"/v1/orgs/{b_id}/users", headers=admin, params={"limit": 50})
    assert victim.user_id in members.text
    still = await env.client.get(f"/v1/orgs/{b_id}/api-keys/{key_id}", headers=admin)
    assert still.json()["status"] == "revoked", still.text


def valid_body(path: str, method: str) -> Any:
    """A schema-valid JSON body for the operation, drawn from the contract (fixed seed), so
    the call reaches the object lookup instead of stopping at body validation."""
    operation = load_schema()[path][method]
    cases = draw_cases(operation, examples=1, fixed_seed=7, modes=(GenerationMode.POSITIVE,))
    body = cases[0].body if cases else None
    return body if isinstance(body, dict) else {}


async def test_objects_of_another_org_are_invisible_through_ones_own(env: Env) -> None:
    """IDOR: an OrgOwner of org A names org B's objects (members, service accounts, keys,
    invites, custom roles, sessions, passkeys, audit exports) in the routes of org A or in its own
    routes: never a 2xx, never org B's data, and nothing of org B changes."""
    admin = await env.admin_headers()
    org_a = await env.create_org()
    org_b = await env.create_org()
    a_id, b_id = org_a["orgId"], org_b["orgId"]
    owner_a = await env.add_member(a_id, ["OrgOwner"])
    owner_b = await env.add_member(b_id, ["OrgOwner"])
    victim = await env.add_member(b_id, ["Developer"])
    role_name = f"Secret{uid()}"
    role = await env.client.post(
        f"/v1/orgs/{b_id}/roles", json={"name": role_name, "scopes": ["users:read"]}, headers=admin
    )
    assert role.status_code == 201, role.text
    account = await env.client.post(
        f"/v1/orgs/{b_id}/service-accounts",
        json={"name": f"sa-{uid()}", "roles": ["Developer"]},
        headers=admin,
    )
    assert account.status_code == 201, account.text
    account_id = account.json()["serviceAccountId"]
    key = await env.client.post(
        f"/v1/orgs/{b_id}/service-accounts/{account_id}/api-keys",
        json={"scopes": ["inference:invoke"]},
        headers=admin,
    )
    assert key.status_code == 201, key.text
    key_id = key.json()["apiKeyId"]
    invite = await env.client.post(
        f"/v1/orgs/{b_id}/invites",
        json={"email": f"pending-{uid()}@example.com", "roles": ["OrgViewer"]},
        headers=admin,
    )
    assert invite.status_code == 202, invite.text
    invite_id = invite.json()["inviteId"]
    passkey_options = await env.client.post(
        "/v1/auth/mfa/webauthn/register/options", headers=victim.headers
    )
    assert passkey_options.status_code == 200, passkey_options.text
    registered = await env.client.post(
        "/v1/auth/mfa/webauthn/register",
        json={"credential": Passkey().register(passkey_options.json()), "name": "victim-key"},
        headers=victim.headers,
    )
    assert registered.status_code == 201, registered.text
    credential_id = registered.json()["credentialId"]
    sessions = await env.client.get("/v1/auth/sessions", headers=victim.headers)
    session_id = sessions.json()["items"][0]["sessionId"]
    now = dt.datetime.now(dt.UTC).isoformat()
    export = await env.client.post(
        "/v1/audit/export",
        json={"orgId": b_id, "from": "2026-01-01T00:00:00Z", "to": now},
        headers=owner_b.headers,
    )
    assert export.status_code == 202, export.text
    export_id = export.json()["exportId"]

    values = {
        "orgId": a_id,
        "userId": victim.user_id,
        "serviceAccountId": account_id,
        "apiKeyId": key_id,
        "inviteId": invite_id,
        "roleName": role_name,
        "sessionId": session_id,
        "exportId": export_id,
        "credentialId": credential_id,
    }
    secrets_of_b = {
        b_id,
        org_b["slug"],
        victim.email,
        victim.user_id,
        account_id,
        key_id,
        invite_id,
        role_name,
        session_id,
        export_id,
        credential_id,
        account.json()["name"],
    }
    not_denied_before = await not_denied(env, b_id)
    checked = 0
    for op in operations(env.app):
        names = [part[1:-1] for part in op.path.split("/") if part.startswith("{")]
        objects = [name for name in names if name != "orgId"]
        if op.public or not objects or not all(name in values for name in objects):
            continue
        url = op.url(**values)
        body = valid_body(op.path, op.method) if op.has_body else None
        response = await env.client.request(op.method, url, json=body, headers=owner_a.headers)
        where = (op.method, url, body, response.status_code, response.text[:300])
        assert response.status_code in {400, 403, 404, 409, 422}, where
        in_url = {part for part in url.split("/") if part}
        leaked = [s for s in secrets_of_b if s in response.text and s not in in_url]
        assert not leaked, (where, leaked)
        checked += 1
    assert checked >= 30, checked
    assert await not_denied(env, b_id) == not_denied_before
    # Org B's objects are as they were.
    assert (await env.client.get(f"/v1/orgs/{b_id}/users/{victim.user_id}", headers=admin)).json()[
        "status"
    ] == "active"
    live = await env.client.get(f"/v1/orgs/{b_id}/api-keys/{key_id}", headers=admin)
    assert live.json()["status"] == "active", live.text
    roles = await env.client.get(f"/v1/orgs/{b_id}/roles", headers=admin)
    assert role_name in roles.text
    still = await env.client.get("/v1/auth/sessions", headers=victim.headers)
    assert session_id in still.text
    keys = await env.client.get("/v1/auth/mfa/webauthn/credentials", headers=victim.headers)
    assert credential_id in keys.text and "victim-key" in keys.text
