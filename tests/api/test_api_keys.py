"""API keys over HTTP, in both modes: lifecycle, compatibility shapes, cascades, bad input."""

from __future__ import annotations

import base64
import re
import time
import uuid

from sqlalchemy import select, text

from tests.support.api import Env, bearer, uid
from tests.support.keys import (
    INVALID_SHAPE,
    VALID_SHAPE,
    authorize,
    expire_in_db,
    issue,
    key_row,
    setup_account,
    validate,
)
from userorg.apikeys import secrets
from userorg.apikeys.models import ApiKey

SECRET_PATTERN = re.compile(r"^uok_live_[0-9A-Za-z]{40}$")


async def test_issue_validate_authorize_and_secret_never_stored(env: Env) -> None:
    setup = await setup_account(env)
    created = await issue(
        env,
        setup,
        name="batch",
        scopes=["inference:invoke", "orgs:read"],
        expiresInDays=30,
        annotations={"team": "ml"},
    )
    assert set(created) >= {"apiKeyId", "secret", "prefix", "fingerprint", "status", "scopes"}
    assert created["status"] == "active"
    assert created["scopes"] == ["inference:invoke", "orgs:read"]
    assert created["expiresAt"] is not None
    secret = created["secret"]
    assert SECRET_PATTERN.match(secret)
    assert secret.startswith(created["prefix"])
    assert created["fingerprint"] == f"sha256:{secrets.hash_secret(secret)[:16]}"

    valid = await validate(env, secret)
    assert set(valid) == VALID_SHAPE
    assert valid == {
        "valid": True,
        "apiKeyId": created["apiKeyId"],
        "organizationId": setup.org_id,
        "principalId": setup.account["serviceAccountId"],
        "principalType": "service_account",
        "scopes": ["inference:invoke", "orgs:read"],
        "status": "active",
        "expiresAt": valid["expiresAt"],
    }
    assert valid["expiresAt"].endswith("Z")
    assert (await validate(env, secret, orgId=setup.org_id))["valid"] is True
    other_org = await validate(env, secret, orgId=str(uuid.uuid4()))
    assert set(other_org) == INVALID_SHAPE
    assert other_org["valid"] is False

    answer = await authorize(env, secret)
    assert answer["decision"] == "allow"
    assert answer["orgId"] == setup.org_id
    assert answer["principalId"] == setup.account["serviceAccountId"]
    assert answer["principalType"] == "service_account"
    assert answer["budget"] == {"status": "ok", "remaining": None}
    assert answer["ttlSeconds"] >= 0
    missing_scope = await authorize(env, secret, action="users:write")
    assert missing_scope["decision"] == "deny"
    assert missing_scope["reason"] == "scope_missing"
    unknown_action = await authorize(env, secret, action="teleport:now")
    assert unknown_action["reason"] == "unknown_action"

    # Only the hash is stored; the secret appears nowhere (not in lists, not in the audit).
    row = await key_row(env, created["apiKeyId"])
    assert row.secret_hash == secrets.hash_secret(secret)
    async with env.container.session_factory() as session:
        dump = " ".join(
            str(v)
            for r in (await session.execute(select(ApiKey))).all()
            for v in r[0].__dict__.values()
        )
        assert secret not in dump
        audit_text = " ".join(
            str(r) for r in (await session.execute(text("SELECT metadata FROM audit_events"))).all()
        )
        assert secret not in audit_text
    listed = await env.client.get(f"/v1/orgs/{setup.org_id}/api-keys", headers=setup.admin.headers)
    assert listed.status_code == 200
    assert secret not in listed.text
    assert [k["apiKeyId"] for k in listed.json()["items"]] == [created["apiKeyId"]]
    got = await env.client.get(
        f"/v1/orgs/{setup.org_id}/api-keys/{created['apiKeyId']}", headers=setup.admin.headers
    )
    assert got.status_code == 200
    assert got.headers["etag"] == '"1"'
    assert got.json()["annotations"] == {"team": "ml"}
    assert "secret" not in got.json()
    events = await env.audit_events(setup.org_id, action="api:api_key:create")
    assert len(events) == 1
    assert events[0]["target"]["id"] == created["apiKeyId"]


async def test_compatibility_shapes_for_bad_keys(env: Env) -> None:
    setup = await setup_account(env)
    created = await issue(env, setup, expiresInDays=1)
    secret = created["secret"]
    typo = secret[:-7] + ("A" if secret[-7] != "A" else "B") + secret[-6:]
    other_env = "uok_test_" + secret.removeprefix("uok_live_")
    unknown = secrets.generate("live").secret
    for bad in ("not-a-key", "uok_live_short", typo, other_env, unknown, "x" * 4000):
        answer = await validate(env, bad)
        assert set(answer) == INVALID_SHAPE, bad
        assert answer["valid"] is False
        decision = await authorize(env, bad)
        assert decision["decision"] == "deny"
    assert (await authorize(env, typo))["reason"] == "credential_malformed"
    assert (await authorize(env, other_env))["reason"] == "key_wrong_environment"
    assert (await authorize(env, unknown))["reason"] == "key_unknown"
    assert (await validate(env, unknown))["message"] == "The API key is not valid"

    # Expired: the key's expiry passes.
    assert (await validate(env, secret))["valid"] is True
    await expire_in_db(env, created["apiKeyId"])
    expired = await validate(env, secret)
    assert expired == {"valid": False, "message": "The API key has expired"}
    assert (await authorize(env, secret))["reason"] == "key_expired"
    got = await env.client.get(
        f"/v1/orgs/{setup.org_id}/api-keys/{created['apiKeyId']}", headers=setup.admin.headers
    )
    assert got.json()["status"] == "expired"

    # Revoked.
    second = await issue(env, setup)
    assert (await validate(env, second["secret"]))["valid"] is True
    revoked = await env.client.delete(
        f"/v1/orgs/{setup.org_id}/api-keys/{second['apiKeyId']}", headers=setup.admin.headers
    )
    assert revoked.status_code == 204
    assert await validate(env, second["secret"]) == {
        "valid": False,
        "message": "The API key has been revoked",
    }
    assert (await authorize(env, second["secret"]))["reason"] == "key_revoked"


async def test_revoke_is_idempotent_and_scoped_to_the_org(env: Env) -> None:
    setup = await setup_account(env)
    created = await issue(env, setup)
    url = f"/v1/orgs/{setup.org_id}/api-keys/{created['apiKeyId']}"
    other = await setup_account(env)
    foreign = await env.client.delete(
        f"/v1/orgs/{other.org_id}/api-keys/{created['apiKeyId']}", headers=other.admin.headers
    )
    assert foreign.status_code == 404
    assert (await env.client.delete(url + "x", headers=setup.admin.headers)).status_code == 422
    unknown = await env.client.delete(
        f"/v1/orgs/{setup.org_id}/api-keys/{uuid.uuid4()}", headers=setup.admin.headers
    )
    assert unknown.status_code == 404
    assert unknown.json()["code"] == "api_key_not_found"
    assert (await authorize(env, created["secret"]))["decision"] == "allow"
    first = await env.client.delete(url, headers=setup.admin.headers)
    assert first.status_code == 204
    again = await env.client.delete(url, headers=setup.admin.headers)
    assert again.status_code == 204
    events = await env.audit_events(setup.org_id, action="api:api_key:revoke")
    assert len(events) == 1
    got = (await env.client.get(url, headers=setup.admin.headers)).json()
    assert got["status"] == "revoked"
    assert got["revokedAt"] is not None
    rotate = await env.client.post(f"{url}/rotate", json={}, headers=setup.admin.headers)
    assert rotate.status_code == 409
    assert rotate.json()["code"] == "api_key_not_active"
    listed = await env.client.get(
        f"/v1/orgs/{setup.org_id}/api-keys",
        params={"status": "active"},
        headers=setup.admin.headers,
    )
    assert listed.json()["items"] == []


async def test_rotation_grace_period(env: Env) -> None:
    setup = await setup_account(env)
    created = await issue(env, setup)
    url = f"/v1/orgs/{setup.org_id}/api-keys/{created['apiKeyId']}"
    old = created["secret"]
    assert (await authorize(env, old))["decision"] == "allow"
    rotated = await env.client.post(
        f"{url}/rotate", json={"gracePeriodSeconds": 3600}, headers=setup.admin.headers
    )
    assert rotated.status_code == 200, rotated.text
    body = rotated.json()
    assert body["apiKeyId"] == created["apiKeyId"]
    new = body["secret"]
    assert new != old
    assert body["previousSecretExpiresAt"] is not None
    assert (await authorize(env, old))["decision"] == "allow"
    assert (await authorize(env, new))["decision"] == "allow"
    # The grace period ends: the old secret stops, the new one keeps working.
    await expire_in_db(env, created["apiKeyId"], field="previous_expires_at")
    assert (await authorize(env, old))["reason"] == "key_rotated"
    assert (await validate(env, old))["valid"] is False
    assert (await authorize(env, new))["decision"] == "allow"
    # No grace: the previous secret stops at once.
    again = await env.client.post(
        f"{url}/rotate", json={"gracePeriodSeconds": 0}, headers=setup.admin.headers
    )
    newest = again.json()["secret"]
    assert again.json()["previousSecretExpiresAt"] is None
    assert (await authorize(env, new))["reason"] == "key_unknown"
    assert (await authorize(env, newest))["decision"] == "allow"
    too_long = await env.client.post(
        f"{url}/rotate", json={"gracePeriodSeconds": 10**9}, headers=setup.admin.headers
    )
    assert too_long.status_code == 422
    assert too_long.json()["code"] == "invalid_grace_period"
    stale = await env.client.post(
        f"{url}/rotate", json={}, headers={**setup.admin.headers, "If-Match": '"1"'}
    )
    assert stale.status_code == 412
    events = await env.audit_events(setup.org_id, action="api:api_key:rotate")
    assert len(events) == 2
    assert newest not in str(events) and new not in str(events)


async def test_bad_input_changes_nothing(env: Env) -> None:
    setup = await setup_account(env, roles=["Developer"])
    url = f"{setup.account_url}/api-keys"
    before = await env.audit_count(org_id=uuid.UUID(setup.org_id))
    cases = [
        ({"scopes": []}, 422, "validation_error"),
        ({"scopes": ["inference:fly"]}, 422, "unknown_scope"),
        ({"scopes": ["orgs:create"]}, 422, "platform_scope_not_allowed"),
        ({"scopes": ["users:write"]}, 403, "scope_exceeds_principal"),
        ({"scopes": ["inference:invoke"], "expiresInDays": 0}, 422, "invalid_expiry"),
        ({"scopes": ["inference:invoke"], "expiresInDays": -3}, 422, "invalid_expiry"),
        ({"scopes": ["inference:invoke"], "expiresInDays": 100000}, 422, "invalid_expiry"),
        ({"scopes": ["inference:invoke"], "expiresInDays": "5"}, 422, "validation_error"),
        ({"scopes": ["inference:invoke"], "name": "x" * 101}, 422, "validation_error"),
        ({"scopes": ["inference:invoke"], "secret": "mine"}, 422, "validation_error"),
    ]
    for body, status, code in cases:
        response = await env.client.post(url, json=body, headers=setup.admin.headers)
        assert response.status_code == status, (body, response.text)
        assert response.json()["code"] == code, (body, response.text)
    missing = await env.client.post(
        f"/v1/orgs/{setup.org_id}/service-accounts/{uuid.uuid4()}/api-keys",
        json={"scopes": ["inference:invoke"]},
        headers=setup.admin.headers,
    )
    assert missing.status_code == 404
    # The gateway endpoints: empty, malformed, huge, non-object, unknown fields.
    for path in ("/v1/authorize", "/v1/auth/validate-api-key"):
        empty = await env.client.post(path, content=b"")
        assert empty.status_code == 400
        assert empty.json()["code"] == "invalid_body"
        broken = await env.client.post(path, content=b'{"credential": ')
        assert broken.status_code == 400
        assert broken.json()["code"] == "malformed_json"
        array = await env.client.post(path, content=b"[]")
        assert array.status_code == 400
        huge = await env.client.post(path, content=b'{"x": "' + b"a" * 100_000 + b'"}')
        assert huge.status_code == 413
        assert huge.json()["code"] == "payload_too_large"
        assert huge.headers["x-request-id"]
        wrong_method = await env.client.get(path)
        assert wrong_method.status_code == 405
    unknown_field = await env.client.post(
        "/v1/authorize",
        json={"credential": "x", "action": "inference:invoke", "resource": "m", "extra": 1},
    )
    assert unknown_field.status_code == 422
    assert unknown_field.json()["details"]["errors"][0]["field"] == "extra"
    wrong_type = await env.client.post(
        "/v1/authorize", json={"credential": 5, "action": "inference:invoke", "resource": "m"}
    )
    assert wrong_type.status_code == 422
    assert wrong_type.json()["details"]["errors"][0]["field"] == "credential"
    negative_cost = await env.client.post(
        "/v1/authorize",
        json={"credential": "x", "action": "a", "resource": "m", "estimatedCost": -1},
    )
    assert negative_cost.status_code == 422
    assert await env.audit_count(org_id=uuid.UUID(setup.org_id)) == before
    async with env.container.session_factory() as session:
        count = len(
            (
                await session.execute(
                    select(ApiKey.id).where(ApiKey.org_id == uuid.UUID(setup.org_id))
                )
            ).all()
        )
        assert count == 0


async def test_request_id_is_echoed_on_the_fast_path(env: Env) -> None:
    response = await env.client.post(
        "/v1/authorize",
        json={"credential": "nope", "action": "inference:invoke", "resource": "m"},
        headers={"X-Request-Id": "trace-123"},
    )
    assert response.headers["x-request-id"] == "trace-123"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.json()["reason"] == "credential_malformed"


async def test_issuance_is_rate_limited(env: Env) -> None:
    setup = await setup_account(env)
    limit = env.settings.api_key_issue_limit_per_principal
    for _ in range(limit):
        await issue(env, setup)
    refused = await env.client.post(
        f"{setup.account_url}/api-keys",
        json={"scopes": ["inference:invoke"]},
        headers=setup.admin.headers,
    )
    assert refused.status_code == 429
    assert refused.json()["details"]["scope"] == "api_key_issue_principal"
    assert int(refused.headers["retry-after"]) >= 1


async def test_cascades_deny_at_once(env: Env) -> None:
    setup = await setup_account(env)
    secret = (await issue(env, setup))["secret"]
    admin = setup.admin.headers
    platform = await env.admin_headers()
    assert (await authorize(env, secret))["decision"] == "allow"

    await env.client.post(f"{setup.account_url}/disable", headers=admin)
    assert (await authorize(env, secret))["reason"] == "principal_suspended"
    assert (await validate(env, secret))["valid"] is False
    await env.client.post(f"{setup.account_url}/enable", headers=admin)
    assert (await authorize(env, secret))["decision"] == "allow"

    # A role change that takes the scope away.
    changed = await env.client.put(
        f"{setup.account_url}/roles", json={"roles": ["OrgViewer"]}, headers=admin
    )
    assert changed.status_code == 200
    assert (await authorize(env, secret))["reason"] == "scope_missing"
    await env.client.put(f"{setup.account_url}/roles", json={"roles": ["Developer"]}, headers=admin)
    assert (await authorize(env, secret))["decision"] == "allow"

    suspended = await env.client.post(
        f"/v1/orgs/{setup.org_id}/suspend", json={"reason": "unpaid"}, headers=platform
    )
    assert suspended.status_code == 200
    assert (await authorize(env, secret))["reason"] == "org_suspended"
    assert (await validate(env, secret))["message"] == "The key's organization is suspended"
    await env.client.post(f"/v1/orgs/{setup.org_id}/restore", headers=platform)
    assert (await authorize(env, secret))["decision"] == "allow"

    deleted = await env.client.delete(setup.account_url, headers=admin)
    assert deleted.status_code == 204
    assert (await authorize(env, secret))["decision"] == "deny"
    listed = await env.client.get(
        f"/v1/orgs/{setup.org_id}/api-keys", params={"status": "revoked"}, headers=admin
    )
    assert [k["revokedReason"] for k in listed.json()["items"]] == ["service_account_deleted"]
    revocations = await env.audit_events(setup.org_id, action="api:api_key:revoke")
    assert revocations[0]["reason"] == "service_account_deleted"


async def test_personal_keys_and_member_cascades(env: Env) -> None:
    org = await env.create_org()
    dev = await env.add_member(org["orgId"], ["Developer"])
    admin = await env.add_member(org["orgId"], ["OrgAdmin"])
    url = f"/v1/orgs/{org['orgId']}/users/{dev.user_id}/api-keys"
    not_owner = await env.client.post(
        url, json={"scopes": ["inference:invoke"]}, headers=admin.headers
    )
    assert not_owner.status_code == 403
    assert not_owner.json()["code"] == "personal_key_owner_only"
    beyond = await env.client.post(url, json={"scopes": ["users:write"]}, headers=dev.headers)
    assert beyond.status_code == 403
    created = await env.client.post(
        url, json={"scopes": ["inference:invoke", "users:read"]}, headers=dev.headers
    )
    assert created.status_code == 201, created.text
    secret = created.json()["secret"]
    answer = await authorize(env, secret)
    assert answer["decision"] == "allow"
    assert answer["principalType"] == "user"
    assert answer["principalId"] == dev.user_id

    member_url = f"/v1/orgs/{org['orgId']}/users/{dev.user_id}"
    await env.client.post(
        f"{member_url}/suspend", json={"reasonCode": "review"}, headers=admin.headers
    )
    assert (await authorize(env, secret))["reason"] == "principal_suspended"
    await env.client.post(f"{member_url}/restore", headers=admin.headers)
    assert (await authorize(env, secret))["decision"] == "allow"
    removed = await env.client.delete(member_url, headers=admin.headers)
    assert removed.status_code == 204
    assert (await authorize(env, secret))["decision"] == "deny"
    # Re-inviting the user does not bring the old key back: removal revoked it.
    token = await env.invite(org["orgId"], dev.email, ["Developer"])
    assert (await env.client.post("/v1/invites/accept", json={"token": token})).status_code == 200
    assert (await authorize(env, secret))["reason"] == "key_revoked"


async def test_admin_api_accepts_api_keys(env: Env) -> None:
    setup = await setup_account(env, roles=["OrgAdmin"])
    created = await issue(env, setup, scopes=["service_accounts:read", "users:read"])
    headers = bearer(created["secret"])
    listed = await env.client.get(f"/v1/orgs/{setup.org_id}/service-accounts", headers=headers)
    assert listed.status_code == 200, listed.text
    assert [a["serviceAccountId"] for a in listed.json()["items"]] == [
        setup.account["serviceAccountId"]
    ]
    # The key's scopes bound what it may do, whatever its account's roles allow.
    denied = await env.client.post(
        f"/v1/orgs/{setup.org_id}/service-accounts",
        json={"name": f"x-{uid()}", "roles": ["OrgViewer"]},
        headers=headers,
    )
    assert denied.status_code == 403
    assert denied.json()["details"]["reason"] == "credential_scope_missing"
    # A key acts only in its own org, never with platform power.
    other = await env.create_org()
    assert (
        await env.client.get(f"/v1/orgs/{other['orgId']}/service-accounts", headers=headers)
    ).status_code == 404
    # A typo or an unknown key is a 401 naming the reason; so is a revoked key.
    secret = created["secret"]
    typo = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    bad = await env.client.get(f"/v1/orgs/{setup.org_id}/service-accounts", headers=bearer(typo))
    assert bad.status_code == 401
    assert bad.json()["code"] == "invalid_api_key"
    await env.client.delete(
        f"/v1/orgs/{setup.org_id}/api-keys/{created['apiKeyId']}", headers=setup.admin.headers
    )
    revoked = await env.client.get(f"/v1/orgs/{setup.org_id}/service-accounts", headers=headers)
    assert revoked.status_code == 401
    assert revoked.json()["details"]["reason"] == "key_revoked"


async def test_usage_and_denials_are_written_in_batches(env: Env) -> None:
    setup = await setup_account(env)
    created = await issue(env, setup)
    secret = created["secret"]
    await env.container.gateway.flush()
    for _ in range(5):
        assert (await authorize(env, secret))["decision"] == "allow"
    await validate(env, secret)
    # Nothing written yet: the requests only touched memory.
    assert (await key_row(env, created["apiKeyId"])).usage_count == 0
    for _ in range(3):
        assert (await authorize(env, secret, action="users:write"))["decision"] == "deny"
    await env.container.gateway.flush()
    row = await key_row(env, created["apiKeyId"])
    assert row.usage_count == 6
    assert row.last_used_at is not None
    got = await env.client.get(
        f"/v1/orgs/{setup.org_id}/api-keys/{created['apiKeyId']}", headers=setup.admin.headers
    )
    assert got.json()["usageCount"] == 6
    assert got.json()["version"] == 1  # usage does not bump the version (no ETag churn)
    denials = await env.audit_events(setup.org_id, action="gateway:api_key:deny")
    assert len(denials) == 1
    assert denials[0]["reason"] == "scope_missing"
    assert denials[0]["metadata"]["count"] == 3
    assert denials[0]["target"]["id"] == created["apiKeyId"]
    assert denials[0]["outcome"] == "denied"


async def test_authorize_with_a_user_access_token(env: Env) -> None:
    org = await env.create_org()
    dev = await env.add_member(org["orgId"], ["Developer"])
    viewer = await env.add_member(org["orgId"], ["OrgViewer"])
    admin = await env.add_member(org["orgId"], ["OrgAdmin"])
    allowed = await authorize(env, dev.token)
    assert allowed["decision"] == "allow"
    assert allowed["orgId"] == org["orgId"]
    assert allowed["principalType"] == "user"
    explicit = await authorize(env, dev.token, context={"orgId": org["orgId"]})
    assert explicit["decision"] == "allow"
    assert (await authorize(env, viewer.token))["reason"] == "scope_missing"
    await env.client.post(
        f"/v1/orgs/{org['orgId']}/users/{dev.user_id}/suspend",
        json={"reasonCode": "review"},
        headers=admin.headers,
    )
    assert (await authorize(env, dev.token))["reason"] == "principal_suspended"
    broken = await authorize(env, dev.token[:-4] + "AAAA")
    assert broken["reason"] == "token_invalid"
    logged_out = await env.login(viewer.email, viewer.password)
    await env.client.post("/v1/auth/logout", headers=bearer(logged_out))
    assert (await authorize(env, logged_out))["reason"] == "session_revoked"


async def test_expired_key_check_needs_no_invalidation(env: Env) -> None:
    """Expiry is compared at every decision; a cached key stops at its expiresAt."""
    setup = await setup_account(env)
    created = await issue(env, setup, expiresInDays=1)
    assert (await authorize(env, created["secret"]))["decision"] == "allow"
    gateway = env.container.gateway
    entry = gateway._keys[secrets.hash_secret(created["secret"])]
    entry.expires_at = time.time() - 1  # as if the clock had reached the expiry
    assert (await authorize(env, created["secret"]))["reason"] == "key_expired"


async def test_authorize_with_a_client_credentials_token(env: Env) -> None:
    setup = await setup_account(env)
    secret = await env.client.post(
        f"{setup.account_url}/client-secret", headers=setup.admin.headers
    )
    assert secret.status_code == 200, secret.text
    basic = base64.b64encode(
        f"{secret.json()['clientId']}:{secret.json()['clientSecret']}".encode()
    ).decode()
    token = await env.client.post(
        "/oauth2/token",
        data={"grant_type": "client_credentials", "scope": "inference:invoke"},
        headers={"Authorization": f"Basic {basic}"},
    )
    assert token.status_code == 200, token.text
    access = token.json()["access_token"]
    allowed = await authorize(env, access)
    assert allowed["decision"] == "allow", allowed
    assert allowed["principalType"] == "service_account"
    assert allowed["scopes"] == ["inference:invoke"]
    # The token's scope bounds it, whatever the account's roles allow.
    assert (await authorize(env, access, action="orgs:read"))["reason"] == "scope_missing"
    await env.client.post(f"{setup.account_url}/disable", headers=setup.admin.headers)
    assert (await authorize(env, access))["reason"] in {"principal_suspended", "token_revoked"}


async def test_keys_never_carry_roles_that_require_mfa(env: Env) -> None:
    """OrgOwner (and an org's mfaRequiredRoles) count only with a second factor: a personal
    key, which has none, neither gets those scopes at issuance nor uses them later."""
    org = await env.create_org()
    owner = await env.add_member(org["orgId"], ["OrgOwner", "Developer"])
    url = f"/v1/orgs/{org['orgId']}/users/{owner.user_id}/api-keys"
    owner_only = await env.client.post(url, json={"scopes": ["orgs:delete"]}, headers=owner.headers)
    assert owner_only.status_code == 403, owner_only.text
    assert owner_only.json()["code"] == "scope_exceeds_principal"
    created = await env.client.post(
        url, json={"scopes": ["inference:invoke", "api_keys:read"]}, headers=owner.headers
    )
    assert created.status_code == 201, created.text
    secret = created.json()["secret"]
    assert (await authorize(env, secret))["decision"] == "allow"
    assert (await validate(env, secret))["scopes"] == ["api_keys:read", "inference:invoke"]
    # The owner's MFA session token is judged with the owner's full roles.
    assert (await authorize(env, owner.token, action="orgs:delete"))["decision"] == "allow"
    # Dropping Developer leaves the key only what OrgOwner gave, which it cannot use.
    admin_headers = await env.admin_headers()
    changed = await env.client.put(
        f"/v1/orgs/{org['orgId']}/users/{owner.user_id}/roles",
        json={"roles": ["OrgOwner"]},
        headers=admin_headers,
    )
    assert changed.status_code == 200, changed.text
    assert (await authorize(env, secret))["reason"] == "scope_missing"
