"""HTTP hardening, in both modes: strict JSON (duplicate keys, NaN/Infinity, deep nesting,
non-object bodies) on every operation with a body and on the gateway's hot path, body-size
limits for streamed bodies, security headers on every kind of answer, CORS off by default and
exact-origin when configured."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest import base_settings, start_env
from tests.support.api import Env, uid
from tests.support.receiver import WebhookReceiver
from tests.support.routes import operations

NOT_STRICT = {
    "duplicate key": b'{"name": "a", "name": "b"}',
    "NaN": b'{"name": NaN}',
    "Infinity": b'{"name": -Infinity}',
    "deep": b'{"name": ' + b"[" * 100 + b"]" * 100 + b"}",
}
NOT_OBJECTS = [b"[1, 2]", b'"text"', b"42", b"true", b"null"]


async def test_non_strict_json_is_refused_everywhere(env: Env) -> None:
    org = await env.create_org()
    headers = {**await env.admin_headers(), "Content-Type": "application/json"}
    before = await env.audit_count()
    checked = 0
    for op in operations(env.app):
        if not op.has_body:
            continue
        url = op.url(orgId=org["orgId"])
        for label, body in NOT_STRICT.items():
            response = await env.client.request(op.method, url, content=body, headers=headers)
            assert response.status_code == 400, (op, label, response.text)
            assert response.json()["code"] == "malformed_json", (op, label, response.text)
            checked += 1
        for body in NOT_OBJECTS:
            response = await env.client.request(op.method, url, content=body, headers=headers)
            if body == b"null":
                # An optional body given as null is no body; the route then answers as
                # without one (refresh: 401 without a bearer; rotate: 404 for a random key).
                assert 400 <= response.status_code < 500, (op, body, response.text)
                continue
            assert response.status_code in {400, 422}, (op, body, response.text)
    assert checked >= 100
    assert await env.audit_count() == before


async def test_duplicate_keys_cannot_pick_a_credential(env: Env) -> None:
    """Two ``credential`` fields: the gateway refuses instead of letting the last one win."""
    for path, body in (
        (
            "/v1/authorize",
            b'{"credential": "uok_live_a", "credential": "uok_live_b", "action": "x:y",'
            b' "resource": "r"}',
        ),
        ("/v1/auth/validate-api-key", b'{"apiKeySecret": "a", "apiKeySecret": "b"}'),
        ("/v1/auth/login", b'{"email": "a@example.com", "email": "b@example.com", "password": 1}'),
    ):
        response = await env.client.post(
            path, content=body, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 400, (path, response.text)
        assert response.json()["code"] == "malformed_json"
        assert "duplicate key" in response.json()["message"]
        nan = await env.client.post(
            path, content=body.replace(b'"r"}', b"NaN}"), headers={"Content-Type": "text/json"}
        )
        assert nan.status_code in {400, 415, 422}, nan.text


async def test_streamed_bodies_are_limited_too(env: Env) -> None:
    headers = {**await env.admin_headers(), "Content-Type": "application/json"}
    chunk = b" " * 65536

    async def stream() -> AsyncIterator[bytes]:
        yield b'{"name": "x",'
        for _ in range(env.settings.max_request_bytes // len(chunk) + 2):
            yield chunk
        yield b'"slug": "y"}'

    response = await env.client.post("/v1/orgs", content=stream(), headers=headers)
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"
    assert "content-length" not in {k.lower() for k in response.request.headers}


async def test_security_headers_on_every_kind_of_answer(env: Env) -> None:
    admin = await env.admin_headers()
    answers = {
        "ok": await env.client.get("/v1/auth/me", headers=admin),
        "unauthenticated": await env.client.get("/v1/auth/me"),
        "unknown route": await env.client.get("/v1/nope"),
        "too large": await env.client.post(
            "/v1/orgs",
            content=b"x" * (env.settings.max_request_bytes + 1),
            headers={"Content-Type": "application/json"},
        ),
        "not strict": await env.client.post(
            "/v1/orgs", content=NOT_STRICT["NaN"], headers={"Content-Type": "application/json"}
        ),
        "gateway": await env.client.post(
            "/v1/authorize", json={"credential": "x", "action": "a:b", "resource": "r"}
        ),
        "health": await env.client.get("/healthz"),
    }
    for label, response in answers.items():
        headers = response.headers
        assert headers["x-content-type-options"] == "nosniff", label
        assert headers["x-frame-options"] == "DENY", label
        assert headers["referrer-policy"] == "no-referrer", label
        assert "default-src 'none'" in headers["content-security-policy"], label
        assert headers["strict-transport-security"].startswith("max-age="), label
        assert headers["cache-control"] == "no-store", label
        assert "server" not in headers, label
        assert "x-powered-by" not in headers, label
        assert headers["x-request-id"], label
    # A route that sets its own caching keeps it (public keys are cacheable).
    jwks = await env.client.get("/.well-known/jwks.json")
    assert jwks.headers["cache-control"].startswith("public")


async def test_cors_is_off_by_default(env: Env) -> None:
    origin = {"Origin": "https://evil.example.com"}
    preflight = await env.client.options(
        "/v1/orgs",
        headers={**origin, "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in preflight.headers
    assert preflight.status_code in {404, 405}
    simple = await env.client.get("/healthz", headers=origin)
    assert simple.status_code == 200
    assert not [h for h in simple.headers if h.lower().startswith("access-control-")]


@pytest.fixture
async def cors_env(
    tmp_path_factory: pytest.TempPathFactory, receiver: WebhookReceiver
) -> AsyncIterator[Env]:
    values = base_settings(
        "embedded",
        tmp_path_factory.mktemp(f"cors-{uid()}"),
        cors_allow_origins="https://portal.example.com, https://admin.example.com",
    )
    env, manager = await start_env("embedded", values, receiver)
    try:
        yield env
    finally:
        await env.client.aclose()
        await manager.__aexit__(None, None, None)


async def test_cors_allows_exactly_the_configured_origins(cors_env: Env) -> None:
    env = cors_env
    ask = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization",
    }
    allowed = await env.client.options(
        "/v1/orgs", headers={"Origin": "https://portal.example.com", **ask}
    )
    assert allowed.status_code == 200, allowed.text
    assert allowed.headers["access-control-allow-origin"] == "https://portal.example.com"
    assert "POST" in allowed.headers["access-control-allow-methods"]
    assert "access-control-allow-credentials" not in allowed.headers
    assert allowed.headers["x-content-type-options"] == "nosniff"
    refused = await env.client.options(
        "/v1/orgs", headers={"Origin": "https://portal.example.com.evil.net", **ask}
    )
    assert refused.status_code == 400
    assert "access-control-allow-origin" not in refused.headers
    # Actual requests: the allowed origin sees the answer (and its request id), others do not.
    admin = await env.admin_headers()
    seen = await env.client.get(
        "/v1/auth/me", headers={**admin, "Origin": "https://admin.example.com"}
    )
    assert seen.status_code == 200
    assert seen.headers["access-control-allow-origin"] == "https://admin.example.com"
    assert "X-Request-Id" in seen.headers["access-control-expose-headers"]
    other = await env.client.get("/v1/auth/me", headers={**admin, "Origin": "https://x.example"})
    assert "access-control-allow-origin" not in other.headers


def test_cors_settings_refuse_wildcards_and_paths(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from userorg.settings import Settings

    for bad in ("*", "portal.example.com", "https://portal.example.com/app", "ftp://x.y"):
        with pytest.raises(ValidationError, match="cors_allow_origins"):
            Settings(data_dir=tmp_path, cors_allow_origins=bad)
    assert Settings(
        data_dir=tmp_path, cors_allow_origins="https://a.example/"
    ).cors_origin_list == ["https://a.example"]


async def test_nul_characters_are_refused_in_both_modes(env: Env) -> None:
    """Fuzzing finding 2: a NUL character in a query parameter (``?email=%00``, an org slug)
    reached PostgreSQL, which cannot store or compare it: a 500 in production mode only.
    NUL is now refused with 400 before any handler, in path, query and JSON bodies alike."""
    org = await env.create_org()
    headers = await env.admin_headers()
    before = await env.audit_count()
    for url in (
        f"/v1/orgs/{org['orgId']}/users?email=%00o%05",
        "/v1/declarative/config?org=%00o%05",
        "/v1/orgs/%00abc",
    ):
        response = await env.client.get(url, headers=headers)
        assert response.status_code == 400, (url, response.text)
        assert response.json()["code"] == "invalid_character"
    for body in (
        b'{"name": "a\\u0000b", "slug": "nul-' + uid().encode() + b'"}',
        b'{"name": "ok", "slug": "x", "billingOwnerEmail": "a@b.co", "tags": ["\\u0000"]}',
    ):
        created = await env.client.post(
            "/v1/orgs", content=body, headers={**headers, "Content-Type": "application/json"}
        )
        assert created.status_code == 400, created.text
        assert created.json()["code"] == "malformed_json"
        assert "NUL" in created.json()["message"]
    gateway = await env.client.post(
        "/v1/authorize",
        content=b'{"credential": "uok_live_\\u0000", "action": "a:b", "resource": "r"}',
        headers={"Content-Type": "application/json"},
    )
    assert gateway.status_code == 400
    # A backslash followed by "u0000" as text is not a NUL and is not refused.
    text = await env.client.get(
        f"/v1/orgs/{org['orgId']}/users", params={"email": "\\u0000"}, headers=headers
    )
    assert text.status_code == 200, text.text
    assert await env.audit_count() == before


async def test_nul_in_oauth2_client_credentials(env: Env) -> None:
    """Fuzzing finding 2, continued (found by a probe after the fuzzer's report): a NUL in
    ``client_id`` (form field or HTTP Basic) reached PostgreSQL from the OAuth2 endpoints."""
    import base64

    for path in ("/oauth2/token", "/oauth2/introspect", "/oauth2/revoke"):
        form = await env.client.post(
            path,
            data={
                "grant_type": "client_credentials",
                "token": "t",
                "client_id": "a\x00b",
                "client_secret": "x",
            },
        )
        assert form.status_code == 400, (path, form.text)
        assert form.json()["error"] == "invalid_request"
        basic = base64.b64encode(b"uoc_\x00:secret").decode()
        header = await env.client.post(
            path,
            data={"grant_type": "client_credentials", "token": "t"},
            headers={"Authorization": f"Basic {basic}"},
        )
        assert header.status_code in {400, 401}, (path, header.text)
        assert header.json()["error"] == "invalid_client"


async def test_a_value_postgresql_refuses_is_a_400_not_a_500(env: Env) -> None:
    """The safety net behind the NUL checks: a data exception (SQLSTATE class 22) from
    PostgreSQL that validation let through answers 400 ``invalid_input``."""
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    from userorg.middleware import classify_unhandled

    if env.mode != "production":
        pytest.skip("SQLite stores what PostgreSQL refuses")
    async with env.container.engine.connect() as conn:
        with pytest.raises(DBAPIError) as caught:
            await conn.execute(text("SELECT CAST(:v AS TEXT)"), {"v": "a\x00b"})
    assert classify_unhandled(caught.value) == (
        400,
        "invalid_input",
        "A value in the request cannot be stored",
    )
