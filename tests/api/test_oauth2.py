"""OAuth2 for machines, driven by a real OAuth2 client library (Authlib's httpx client),
tokens verified by PyJWT against the JWKS endpoint, RFC 7662 / RFC 7009 behaviour."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import jwt
from authlib.integrations.httpx_client import AsyncOAuth2Client

from tests.support.api import Env, bearer, uid


async def _service_account(env: Env, org: dict[str, Any], roles: list[str]) -> dict[str, Any]:
    headers = await env.admin_headers()
    created = await env.client.post(
        f"/v1/orgs/{org['orgId']}/service-accounts",
        json={"name": f"bot-{uid()}", "roles": roles},
        headers=headers,
    )
    assert created.status_code == 201, created.text
    account: dict[str, Any] = created.json()
    secret = await env.client.post(
        f"/v1/orgs/{org['orgId']}/service-accounts/{account['serviceAccountId']}/client-secret",
        headers=headers,
    )
    assert secret.status_code == 200, secret.text
    account.update(secret.json())
    return account


def _client(env: Env, account: dict[str, Any], **kwargs: Any) -> AsyncOAuth2Client:
    return AsyncOAuth2Client(
        client_id=account["clientId"],
        client_secret=account["clientSecret"],
        transport=httpx.ASGITransport(app=env.app),
        base_url="http://testserver",
        **kwargs,
    )


async def _jwks_verify(env: Env, token: str) -> dict[str, Any]:
    keys = jwt.PyJWKSet.from_dict((await env.client.get("/.well-known/jwks.json")).json())
    kid = jwt.get_unverified_header(token)["kid"]
    key = next(k for k in keys.keys if k.key_id == kid)
    claims: dict[str, Any] = jwt.decode(
        token, key.key, algorithms=["EdDSA"], issuer=env.settings.issuer
    )
    return claims


async def test_client_credentials_with_a_real_client_library(env: Env) -> None:
    org = await env.create_org()
    account = await _service_account(env, org, ["Developer"])
    assert account["clientSecret"].startswith("uocs_")
    async with _client(env, account, scope="api_keys:read orgs:read users:write") as client:
        token = await client.fetch_token("/oauth2/token", grant_type="client_credentials")
    assert token["token_type"] == "Bearer"
    assert token["expires_in"] == env.settings.access_token_ttl_seconds
    # users:write is not granted by Developer: the token gets the intersection.
    assert token["scope"] == "api_keys:read orgs:read"
    claims = await _jwks_verify(env, token["access_token"])
    assert claims["sub"] == account["serviceAccountId"]
    assert claims["org"] == org["orgId"]
    assert claims["client_id"] == account["clientId"]
    assert claims["ptype"] == "service_account"
    # The token is a bearer credential on the admin API, narrowed to its scopes.
    headers = bearer(token["access_token"])
    me = (await env.client.get("/v1/auth/me", headers=headers)).json()
    assert me["principalType"] == "service_account"
    assert me["orgId"] == org["orgId"]
    assert me["scopes"] == ["api_keys:read", "orgs:read"]
    assert (await env.client.get(f"/v1/orgs/{org['orgId']}", headers=headers)).status_code == 200
    narrowed = await env.client.get(f"/v1/orgs/{org['orgId']}/users", headers=headers)
    assert narrowed.status_code == 403
    assert narrowed.json()["details"]["reason"] == "credential_scope_missing"
    other = await env.create_org()
    assert (await env.client.get(f"/v1/orgs/{other['orgId']}", headers=headers)).status_code == 404
    # client_secret_post works as well; no scope asked = every granted scope.
    async with _client(env, account, token_endpoint_auth_method="client_secret_post") as client:
        full = await client.fetch_token("/oauth2/token", grant_type="client_credentials")
    assert "inference:invoke" in full["scope"].split()
    assert (
        await env.audit_count(action="oauth2:token:issue", actor_id=account["serviceAccountId"])
        == 2
    )


async def test_token_endpoint_errors_follow_rfc_6749(env: Env) -> None:
    org = await env.create_org()
    account = await _service_account(env, org, ["Developer"])
    basic = base64.b64encode(f"{account['clientId']}:wrong".encode()).decode()
    wrong = await env.client.post(
        "/oauth2/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": f"Basic {basic}"},
    )
    assert wrong.status_code == 401
    assert wrong.json()["error"] == "invalid_client"
    assert "www-authenticate" in wrong.headers
    unknown = await env.client.post(
        "/oauth2/token",
        data={"grant_type": "client_credentials", "client_id": "uoc_nope", "client_secret": "x"},
    )
    assert unknown.status_code in {400, 401}
    assert unknown.json()["error"] == "invalid_client"
    auth = (account["clientId"], account["clientSecret"])
    unsupported = await env.client.post("/oauth2/token", data={"grant_type": "password"}, auth=auth)
    assert unsupported.status_code == 400
    assert unsupported.json()["error"] == "unsupported_grant_type"
    bad_scope = await env.client.post(
        "/oauth2/token",
        data={"grant_type": "client_credentials", "scope": "not:a:scope"},
        auth=auth,
    )
    assert bad_scope.status_code == 400
    assert bad_scope.json()["error"] == "invalid_scope"
    none_granted = await env.client.post(
        "/oauth2/token",
        data={"grant_type": "client_credentials", "scope": "users:write"},
        auth=auth,
    )
    assert none_granted.status_code == 400
    assert none_granted.json()["error"] == "invalid_scope"
    json_body = await env.client.post("/oauth2/token", json={"grant_type": "client_credentials"})
    assert json_body.status_code == 400
    assert json_body.json()["error"] == "invalid_request"
    assert (
        await env.audit_count(action="oauth2:token:deny", actor_id=account["serviceAccountId"]) >= 3
    )


async def test_introspection_and_revocation(env: Env) -> None:
    org = await env.create_org()
    account = await _service_account(env, org, ["Developer"])
    peer = await _service_account(env, org, ["OrgViewer"])
    outsider = await _service_account(env, await env.create_org(), ["OrgViewer"])
    async with _client(env, account) as client:
        token = (await client.fetch_token("/oauth2/token", grant_type="client_credentials"))[
            "access_token"
        ]
    async with _client(env, peer) as client:
        seen = (await client.introspect_token("/oauth2/introspect", token=token)).json()
    assert seen["active"] is True
    assert seen["client_id"] == account["clientId"]
    assert seen["sub"] == account["serviceAccountId"]
    assert seen["token_type"] == "Bearer"
    assert set(seen["scope"].split()) >= {"inference:invoke"}
    async with _client(env, outsider) as client:
        hidden = (await client.introspect_token("/oauth2/introspect", token=token)).json()
        garbage = (await client.introspect_token("/oauth2/introspect", token="nonsense")).json()
    assert hidden == {"active": False}
    assert garbage == {"active": False}
    # Introspection needs client authentication.
    anonymous = await env.client.post("/oauth2/introspect", data={"token": token})
    assert anonymous.status_code in {400, 401}
    assert anonymous.json()["error"] == "invalid_client"
    # A user's access token: visible to clients of orgs the user belongs to.
    member = await env.add_member(org["orgId"], ["OrgViewer"])
    async with _client(env, peer) as client:
        user_view = (await client.introspect_token("/oauth2/introspect", token=member.token)).json()
    assert user_view["active"] is True
    assert user_view["sub"] == member.user_id
    assert user_view["amr"] == ["pwd"]
    # Another client cannot revoke this client's token.
    async with _client(env, peer) as client:
        refused = await client.revoke_token("/oauth2/revoke", token=token)
    assert refused.status_code == 400
    async with _client(env, account) as client:
        revoked = await client.revoke_token("/oauth2/revoke", token=token)
        assert revoked.status_code == 200
        # Unknown or invalid tokens: 200 as RFC 7009 says.
        assert (await client.revoke_token("/oauth2/revoke", token="nonsense")).status_code == 200
    async with _client(env, peer) as client:
        after = (await client.introspect_token("/oauth2/introspect", token=token)).json()
    assert after == {"active": False}
    refused_bearer = await env.client.get("/v1/auth/me", headers=bearer(token))
    assert refused_bearer.status_code == 401
    assert (
        await env.audit_count(action="oauth2:token:revoke", actor_id=account["serviceAccountId"])
        == 1
    )


async def test_disabling_the_account_or_suspending_the_org_refuses_its_tokens(env: Env) -> None:
    org = await env.create_org()
    admin = await env.admin_headers()
    account = await _service_account(env, org, ["Developer"])

    async def fetch() -> str:
        async with _client(env, account) as client:
            token: str = (
                await client.fetch_token("/oauth2/token", grant_type="client_credentials")
            )["access_token"]
            return token

    token = await fetch()
    base = f"/v1/orgs/{org['orgId']}/service-accounts/{account['serviceAccountId']}"
    assert (await env.client.post(base + "/disable", headers=admin)).status_code == 200
    refused = await env.client.get("/v1/auth/me", headers=bearer(token))
    assert refused.status_code == 401
    async with _client(env, account) as client:
        denied = await client.post(
            "/oauth2/token",
            data={"grant_type": "client_credentials"},
            auth=(account["clientId"], account["clientSecret"]),
        )
    assert denied.status_code in {400, 401}
    assert denied.json()["error"] == "invalid_client"
    # Enabled again: old tokens stay revoked, new ones work.
    assert (await env.client.post(base + "/enable", headers=admin)).status_code == 200
    assert (await env.client.get("/v1/auth/me", headers=bearer(token))).status_code == 401
    fresh = await fetch()
    assert (await env.client.get("/v1/auth/me", headers=bearer(fresh))).status_code == 200
    suspended = await env.client.post(
        f"/v1/orgs/{org['orgId']}/suspend", json={"reason": "unpaid"}, headers=admin
    )
    assert suspended.status_code == 200, suspended.text
    after = await env.client.get("/v1/auth/me", headers=bearer(fresh))
    assert after.status_code == 401
    assert after.json()["code"] == "principal_suspended"


async def test_client_secret_rotation_with_grace(env: Env) -> None:
    org = await env.create_org()
    account = await _service_account(env, org, ["Developer"])
    url = f"/v1/orgs/{org['orgId']}/service-accounts/{account['serviceAccountId']}/client-secret"
    headers = await env.admin_headers()
    rotated = await env.client.post(url, json={"gracePeriodSeconds": 600}, headers=headers)
    assert rotated.status_code == 200
    new = rotated.json()
    assert new["clientId"] == account["clientId"]
    assert new["clientSecret"] != account["clientSecret"]
    assert new["previousSecretExpiresAt"] is not None
    for secret in (account["clientSecret"], new["clientSecret"]):
        response = await env.client.post(
            "/oauth2/token",
            data={"grant_type": "client_credentials"},
            auth=(account["clientId"], secret),
        )
        assert response.status_code == 200, response.text
    immediate = await env.client.post(url, json={}, headers=headers)
    latest = immediate.json()["clientSecret"]
    for secret, status in ((new["clientSecret"], 401), (latest, 200)):
        response = await env.client.post(
            "/oauth2/token",
            data={"grant_type": "client_credentials"},
            auth=(account["clientId"], secret),
        )
        assert response.status_code == status
    bad = await env.client.post(url, json={"gracePeriodSeconds": -1}, headers=headers)
    assert bad.status_code == 422
    assert (
        await env.audit_count(
            action="api:service_account:client_secret_rotate",
            target_id=account["serviceAccountId"],
        )
        == 2
    )


async def test_discovery_documents(env: Env) -> None:
    config = (await env.client.get("/.well-known/openid-configuration")).json()
    issuer = env.settings.issuer.rstrip("/")
    assert config["issuer"] == issuer
    assert config["token_endpoint"] == f"{issuer}/oauth2/token"
    assert config["introspection_endpoint"] == f"{issuer}/oauth2/introspect"
    assert config["revocation_endpoint"] == f"{issuer}/oauth2/revoke"
    assert config["grant_types_supported"] == ["client_credentials"]
    jwks = (await env.client.get("/.well-known/jwks.json")).json()
    assert jwks["keys"] and all(k["kty"] == "OKP" and "d" not in k for k in jwks["keys"])
