"""The committed OpenAPI contract matches the code (regenerate with `make contract`)."""

from __future__ import annotations

from pathlib import Path

import yaml

from userorg.contract import openapi_document, render_openapi_yaml
from userorg.main import PUBLIC_ROUTES

CONTRACT = Path(__file__).resolve().parents[2] / "contracts" / "openapi.yaml"


def test_committed_contract_is_current() -> None:
    committed = CONTRACT.read_text()
    assert committed == render_openapi_yaml(), (
        "contracts/openapi.yaml is stale: run `make contract`"
    )


def test_contract_keeps_the_seed_paths() -> None:
    paths = yaml.safe_load(CONTRACT.read_text())["paths"]
    for path in (
        "/v1/auth/login",
        "/v1/auth/refresh",
        "/v1/auth/logout",
        "/v1/auth/sessions",
        "/v1/auth/sessions/{sessionId}",
        "/v1/orgs",
        "/v1/orgs/{orgId}",
        "/v1/orgs/{orgId}/suspend",
        "/v1/orgs/{orgId}/restore",
        "/v1/orgs/{orgId}/invites",
        "/v1/orgs/{orgId}/invites/{inviteId}",
        "/v1/invites/accept",
        "/v1/orgs/{orgId}/users",
        "/v1/orgs/{orgId}/users/{userId}",
        "/v1/orgs/{orgId}/users/{userId}/roles",
        "/v1/orgs/{orgId}/roles",
        "/v1/scopes",
        "/v1/orgs/{orgId}/service-accounts",
        "/v1/orgs/{orgId}/service-accounts/{serviceAccountId}",
        "/v1/orgs/{orgId}/audit-events",
        "/.well-known/jwks.json",
        "/.well-known/openid-configuration",
        "/healthz",
        "/readyz",
        "/metrics",
    ):
        assert path in paths, path


def test_every_public_route_exists() -> None:
    document = openapi_document()
    for method, path in PUBLIC_ROUTES:
        assert method.lower() in document["paths"][path], (method, path)


# Wire formats fixed by an RFC (OAuth2 error bodies, RFC 6749 §5.2) keep their snake_case.
RFC_WIRE_FORMATS = frozenset({"OAuth2ErrorBody"})


def test_fields_are_camel_case() -> None:
    schemas = openapi_document()["components"]["schemas"]
    for name, schema in schemas.items():
        if name in RFC_WIRE_FORMATS:
            continue
        for field in schema.get("properties", {}):
            assert "_" not in field, (name, field)
