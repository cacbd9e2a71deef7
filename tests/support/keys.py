"""Helpers for API key and gateway tests."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from tests.support.api import Env, Member, uid
from userorg.apikeys.models import ApiKey

VALID_SHAPE = {
    "valid",
    "apiKeyId",
    "organizationId",
    "principalId",
    "principalType",
    "scopes",
    "status",
    "expiresAt",
}
INVALID_SHAPE = {"valid", "message"}


@dataclass
class Setup:
    org: dict[str, Any]
    admin: Member
    account: dict[str, Any]

    @property
    def org_id(self) -> str:
        return str(self.org["orgId"])

    @property
    def account_url(self) -> str:
        return f"/v1/orgs/{self.org_id}/service-accounts/{self.account['serviceAccountId']}"


async def setup_account(env: Env, roles: list[str] | None = None) -> Setup:
    org = await env.create_org()
    admin = await env.add_member(org["orgId"], ["OrgAdmin"])
    response = await env.client.post(
        f"/v1/orgs/{org['orgId']}/service-accounts",
        json={"name": f"sa-{uid()}", "roles": roles or ["Developer"]},
        headers=admin.headers,
    )
    assert response.status_code == 201, response.text
    return Setup(org, admin, response.json())


async def issue(env: Env, setup: Setup, **body: Any) -> dict[str, Any]:
    body.setdefault("scopes", ["inference:invoke"])
    response = await env.client.post(
        f"{setup.account_url}/api-keys", json=body, headers=setup.admin.headers
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def authorize(env: Env, credential: str, **body: Any) -> dict[str, Any]:
    payload = {"credential": credential, "action": "inference:invoke", "resource": "gpt-large"}
    payload.update(body)
    response = await env.client.post("/v1/authorize", json=payload)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def validate(env: Env, secret: str, **body: Any) -> dict[str, Any]:
    response = await env.client.post(
        "/v1/auth/validate-api-key", json={"apiKeySecret": secret, **body}
    )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def expire_in_db(env: Env, key_id: str, *, field: str = "expires_at") -> None:
    """Move a key's expiry (or its previous secret's) into the past, through a unit of work."""
    async with env.container.uow() as uow:
        key = await uow.session.get(ApiKey, uuid.UUID(key_id))
        assert key is not None
        setattr(key, field, dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))


async def key_row(env: Env, key_id: str) -> ApiKey:
    async with env.container.session_factory() as session:
        key = await session.get(ApiKey, uuid.UUID(key_id))
        assert key is not None
        return key
