"""Sign-in, tokens, refresh rotation, sessions and discovery, in both modes."""

from __future__ import annotations

import asyncio

import jwt

from tests.support.api import STRONG_PASSWORD, Env, bearer


async def test_login_and_token_verifies_against_jwks(env: Env) -> None:
    org = await env.create_org()
    member = await env.add_member(org["orgId"], ["OrgViewer"])
    response = await env.client.post(
        "/v1/auth/login", json={"email": member.email, "password": STRONG_PASSWORD}
    )
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {
        "accessToken",
        "refreshToken",
        "sessionId",
        "expiresAt",
        "mfaVerified",
        "tokenType",
    }
    assert body["tokenType"] == "Bearer"
    assert body["mfaVerified"] is False
    assert response.headers["cache-control"] == "no-store"
    jwks = (await env.client.get("/.well-known/jwks.json")).json()
    header = jwt.get_unverified_header(body["accessToken"])
    key = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    public = jwt.PyJWK(key).key
    claims = jwt.decode(
        body["accessToken"], public, algorithms=["EdDSA"], issuer=env.settings.issuer
    )
    assert claims["sub"] == member.user_id
    assert claims["sid"] == body["sessionId"]
    assert claims["amr"] == ["pwd"]
    assert claims["exp"] - claims["iat"] == env.settings.access_token_ttl_seconds
    config = (await env.client.get("/.well-known/openid-configuration")).json()
    assert config["jwks_uri"].endswith("/.well-known/jwks.json")


async def test_wrong_password_and_unknown_email_answer_alike(env: Env) -> None:
    org = await env.create_org()
    member = await env.add_member(org["orgId"], ["OrgViewer"])
    wrong = await env.client.post(
        "/v1/auth/login", json={"email": member.email, "password": "Wrong-Password-123"}
    )
    unknown = await env.client.post(
        "/v1/auth/login",
        json={"email": "nobody-here@example.com", "password": "Wrong-Password-123"},
    )
    assert wrong.status_code == unknown.status_code == 401
    assert (
        wrong.json()
        == unknown.json()
        == {"code": "invalid_credentials", "message": "Invalid email or password", "details": {}}
    )
    failures = await env.audit_count(action="auth:session:login", outcome="failure")
    assert failures >= 2


async def test_refresh_rotates_and_reuse_revokes_the_session(env: Env) -> None:
    org = await env.create_org()
    member = await env.add_member(org["orgId"], ["OrgViewer"])
    first = (
        await env.client.post(
            "/v1/auth/login", json={"email": member.email, "password": STRONG_PASSWORD}
        )
    ).json()
    second = await env.client.post("/v1/auth/refresh", json={"refreshToken": first["refreshToken"]})
    assert second.status_code == 200
    rotated = second.json()
    assert rotated["refreshToken"] != first["refreshToken"]
    assert rotated["sessionId"] == first["sessionId"]
    # Refresh by bearer works too.
    third = await env.client.post("/v1/auth/refresh", headers=bearer(rotated["refreshToken"]))
    assert third.status_code == 200
    latest = third.json()
    # Presenting a spent token revokes the whole session: every token of it stops working.
    reuse = await env.client.post("/v1/auth/refresh", json={"refreshToken": first["refreshToken"]})
    assert reuse.status_code == 401
    assert (
        await env.client.post("/v1/auth/refresh", json={"refreshToken": latest["refreshToken"]})
    ).status_code == 401
    me = await env.client.get("/v1/auth/me", headers=bearer(latest["accessToken"]))
    assert me.status_code == 401
    assert me.json()["code"] == "session_revoked"
    assert (
        await env.audit_count(action="auth:session:refresh_reuse", target_id=first["sessionId"])
        == 1
    )


async def test_concurrent_refresh_with_one_token_yields_one_winner(env: Env) -> None:
    org = await env.create_org()
    member = await env.add_member(org["orgId"], ["OrgViewer"])
    login = (
        await env.client.post(
            "/v1/auth/login", json={"email": member.email, "password": STRONG_PASSWORD}
        )
    ).json()
    results = await asyncio.gather(
        *(
            env.client.post("/v1/auth/refresh", json={"refreshToken": login["refreshToken"]})
            for _ in range(5)
        )
    )
    assert sum(r.status_code == 200 for r in results) <= 1


async def test_garbage_tokens(env: Env) -> None:
    for header in ("Bearer nope", "Bearer a.b.c", "Basic abc", "Bearer ", "bearer"):
        response = await env.client.get("/v1/auth/me", headers={"Authorization": header})
        assert response.status_code == 401, header
        assert response.headers["www-authenticate"] == "Bearer"
    bad_refresh = await env.client.post("/v1/auth/refresh", json={"refreshToken": "uort_forged"})
    assert bad_refresh.status_code == 401
    assert (await env.client.post("/v1/auth/refresh")).status_code == 401


async def test_logout_and_sessions(env: Env) -> None:
    org = await env.create_org()
    member = await env.add_member(org["orgId"], ["OrgViewer"])
    other = await env.login(member.email, STRONG_PASSWORD)
    sessions = (await env.client.get("/v1/auth/sessions", headers=member.headers)).json()["items"]
    assert len(sessions) == 2
    assert sum(s["current"] for s in sessions) == 1
    other_id = next(s["sessionId"] for s in sessions if not s["current"])
    assert (
        await env.client.delete(f"/v1/auth/sessions/{other_id}", headers=member.headers)
    ).status_code == 204
    assert (await env.client.get("/v1/auth/me", headers=bearer(other))).status_code == 401
    # Someone else's session id is simply not found.
    admin_sessions = (
        await env.client.get("/v1/auth/sessions", headers=await env.admin_headers())
    ).json()["items"]
    foreign = admin_sessions[0]["sessionId"]
    assert (
        await env.client.delete(f"/v1/auth/sessions/{foreign}", headers=member.headers)
    ).status_code == 404
    assert (await env.client.post("/v1/auth/logout", headers=member.headers)).status_code == 204
    assert (await env.client.get("/v1/auth/me", headers=member.headers)).status_code == 401
