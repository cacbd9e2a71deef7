"""Property: whatever sequence of issue / revoke / rotate / expire / suspend / restore / disable /
enable / role change happens, the gateway's answer for every secret ever issued agrees with
what the database says — in particular it never allows a key the database says is unusable.
Runs against the real service (its caches and invalidation included), in both modes."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import or_, select

from tests.conftest import WEBHOOK_SECRET, base_settings, start_env
from tests.support import services
from tests.support.api import Env, uid
from tests.support.keys import authorize, expire_in_db
from tests.support.receiver import WebhookReceiver
from userorg.apikeys import secrets
from userorg.apikeys.models import ApiKey
from userorg.orgs.models import Organization
from userorg.roles.models import RoleAssignment
from userorg.serviceaccounts.models import ServiceAccount


@pytest.fixture(scope="module", params=["embedded", "production"])
async def prop_env(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    receiver: WebhookReceiver,
) -> AsyncIterator[Env]:
    overrides: dict[str, Any] = {
        "api_key_issue_limit_per_principal": 1_000_000,
        "api_key_issue_limit_per_org": 1_000_000,
        "gateway_flush_interval_seconds": 300,
        "notifier": "webhook",
        "notify_webhook_url": receiver.url,
        "notify_webhook_secret": WEBHOOK_SECRET,
    }
    if request.param == "production":
        services.require_postgres()
        services.require_redis()
        url = services.run_in_thread(services.create_database)
        overrides["database_url"] = url
    data_dir: Path = tmp_path_factory.mktemp(f"prop-{request.param}")
    env, manager = await start_env(
        request.param, base_settings(request.param, data_dir, **overrides), receiver
    )
    try:
        yield env
    finally:
        await env.client.aclose()
        await manager.__aexit__(None, None, None)
        if request.param == "production":
            services.run_in_thread(lambda: services.drop_database(url))


KEY_OPS = st.sampled_from(["revoke", "rotate_grace", "rotate_now", "expire", "expire_previous"])
GLOBAL_OPS = st.sampled_from(
    ["issue", "suspend_org", "restore_org", "disable", "enable", "drop_scope", "grant_scope"]
)
OPERATIONS = st.lists(
    st.one_of(GLOBAL_OPS.map(lambda op: (op, 0)), st.tuples(KEY_OPS, st.integers(0, 5))),
    min_size=1,
    max_size=10,
)


async def _database_says_usable(env: Env, secret: str) -> bool:
    digest = secrets.hash_secret(secret)
    now = dt.datetime.now(dt.UTC)
    async with env.container.session_factory() as session:
        key = (
            await session.execute(
                select(ApiKey).where(
                    or_(ApiKey.secret_hash == digest, ApiKey.previous_secret_hash == digest)
                )
            )
        ).scalar_one_or_none()
        if key is None or key.status != "active":
            return False
        if key.expires_at is not None and key.expires_at <= now:
            return False
        if key.secret_hash != digest and (
            key.previous_expires_at is None or key.previous_expires_at <= now
        ):
            return False
        account = await session.get(ServiceAccount, key.principal_id)
        org = await session.get(Organization, key.org_id)
        roles = set(
            (
                await session.execute(
                    select(RoleAssignment.role_name).where(
                        RoleAssignment.principal_id == key.principal_id
                    )
                )
            ).scalars()
        )
        return (
            account is not None
            and account.status == "active"
            and account.deleted_at is None
            and org is not None
            and org.status == "active"
            and "Developer" in roles
        )


class Scenario:
    def __init__(self, env: Env, org_id: str, headers: dict[str, str]) -> None:
        self.env = env
        self.org_id = org_id
        self.headers = headers
        self.account_url = ""
        self.keys: list[str] = []  # key ids, in issue order
        self.secrets: list[str] = []  # every secret ever handed out

    async def start(self) -> None:
        client, headers = self.env.client, self.headers
        org = (await client.get(f"/v1/orgs/{self.org_id}", headers=headers)).json()
        if org["status"] != "active":
            await client.post(f"/v1/orgs/{self.org_id}/restore", headers=headers)
        account = await client.post(
            f"/v1/orgs/{self.org_id}/service-accounts",
            json={"name": f"p-{uid()}", "roles": ["Developer"]},
            headers=headers,
        )
        assert account.status_code == 201, account.text
        self.account_url = (
            f"/v1/orgs/{self.org_id}/service-accounts/{account.json()['serviceAccountId']}"
        )
        await self.issue()

    async def issue(self) -> None:
        response = await self.env.client.post(
            f"{self.account_url}/api-keys",
            json={"scopes": ["inference:invoke"], "expiresInDays": 30},
            headers=self.headers,
        )
        if response.status_code in {403, 409}:
            return  # the account is disabled or lacks the scope now: nothing issued
        assert response.status_code == 201, response.text
        self.keys.append(response.json()["apiKeyId"])
        self.secrets.append(response.json()["secret"])

    async def run(self, op: str, index: int) -> None:
        client, headers, org = self.env.client, self.headers, f"/v1/orgs/{self.org_id}"
        if op == "issue":
            await self.issue()
        elif op == "suspend_org":
            await client.post(f"{org}/suspend", json={"reason": "test"}, headers=headers)
        elif op == "restore_org":
            await client.post(f"{org}/restore", headers=headers)
        elif op in {"disable", "enable"}:
            await client.post(f"{self.account_url}/{op}", headers=headers)
        elif op in {"drop_scope", "grant_scope"}:
            roles = ["OrgViewer"] if op == "drop_scope" else ["Developer"]
            await client.put(f"{self.account_url}/roles", json={"roles": roles}, headers=headers)
        else:
            key_id = self.keys[index % len(self.keys)]
            url = f"{org}/api-keys/{key_id}"
            if op == "revoke":
                assert (await client.delete(url, headers=headers)).status_code == 204
            elif op.startswith("rotate"):
                grace = 3600 if op == "rotate_grace" else 0
                response = await client.post(
                    f"{url}/rotate", json={"gracePeriodSeconds": grace}, headers=headers
                )
                assert response.status_code in {200, 409}, response.text
                if response.status_code == 200:
                    self.secrets.append(response.json()["secret"])
            elif op == "expire":
                await expire_in_db(self.env, key_id)
            else:
                await expire_in_db(self.env, key_id, field="previous_expires_at")

    async def check(self) -> None:
        for secret in self.secrets:
            answer = await authorize(self.env, secret)
            usable = await _database_says_usable(self.env, secret)
            assert (answer["decision"] == "allow") == usable, (answer, usable)


@pytest.fixture(scope="module")
async def prop_org(prop_env: Env) -> tuple[str, dict[str, str]]:
    org = await prop_env.create_org()
    return org["orgId"], await prop_env.admin_headers()


@settings(
    max_examples=15,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(operations=OPERATIONS)
async def test_gateway_agrees_with_the_database(
    prop_env: Env, prop_org: tuple[str, dict[str, str]], operations: list[tuple[str, int]]
) -> None:
    org_id, headers = prop_org
    scenario = Scenario(prop_env, org_id, headers)
    await scenario.start()
    await scenario.check()
    for op, index in operations:
        await scenario.run(op, index)
        await scenario.check()
    assert uuid.UUID(scenario.keys[0])
