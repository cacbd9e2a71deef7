"""`userorg seed-demo` at a small scale: the real command on PostgreSQL, then the real service
reading what it loaded (authorize on seeded keys, sign-in as a seeded user, paginated lists)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from tests.conftest import base_settings, start_env
from tests.support import services
from tests.support.api import bearer
from tests.support.receiver import WebhookReceiver
from userorg import migrate
from userorg.demo import DEFAULT_PASSWORD, allocate

ORGS, USERS, KEYS = 120, 1_000, 2_500
USERORG = [sys.executable, "-m", "userorg"]


def _env(database_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("USER_ORG_")}
    env.update(
        USER_ORG_MODE="production",
        USER_ORG_DATABASE_URL=database_url,
        USER_ORG_REDIS_URL=services.REDIS_URL,
        USER_ORG_MASTER_KEY=base64.b64encode(secrets.token_bytes(32)).decode(),
        USER_ORG_DATA_DIR=str(data_dir),
        USER_ORG_AUDIT_STREAM="file",
        USER_ORG_ARGON2_TIME_COST="1",
        USER_ORG_ARGON2_MEMORY_KIB="8192",
        USER_ORG_LOG_LEVEL="warning",
    )
    env.update(extra)
    return env


def _seed(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*USERORG, "seed-demo", *args], env=env, capture_output=True, text=True, timeout=300
    )


async def _counts(database_url: str) -> dict[str, int]:
    connection = await asyncpg.connect(database_url)
    try:
        return {
            table: int(await connection.fetchval(f"SELECT count(*) FROM {table}"))
            for table in (
                "organizations",
                "users",
                "memberships",
                "service_accounts",
                "api_keys",
                "role_assignments",
                "custom_roles",
            )
        }
    finally:
        await connection.close()


async def _collect(client: httpx.AsyncClient, path: str, headers: dict[str, str]) -> list[Any]:
    items: list[Any] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 50}
        if cursor:
            params["cursor"] = cursor
        response = await client.get(path, params=params, headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        assert len(body["items"]) <= 50
        items.extend(body["items"])
        pages += 1
        cursor = body["nextCursor"]
        if cursor is None:
            return items
        assert pages < 1000


async def test_seed_demo_loads_usable_data(
    tmp_path: Path, fresh_pg_database: str, receiver: WebhookReceiver
) -> None:
    services.require_redis()
    await asyncio.to_thread(migrate.upgrade, fresh_pg_database)
    env = _env(fresh_pg_database, tmp_path)
    secrets_file = tmp_path / "secrets.tsv"
    result = _seed(
        env,
        "--orgs", str(ORGS), "--users", str(USERS), "--keys", str(KEYS),
        "--secrets-file", str(secrets_file), "--sample", "200",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"seeded {ORGS:,} orgs, {USERS:,} users" in result.stdout
    assert f"{KEYS:,} API keys" in result.stdout

    counts = await _counts(fresh_pg_database)
    assert counts["organizations"] == ORGS
    assert counts["users"] == USERS
    assert counts["api_keys"] == KEYS
    assert USERS < counts["memberships"] <= USERS * 1.25  # ~10% in a second org
    assert counts["custom_roles"] == ORGS // 10
    assert counts["service_accounts"] >= ORGS
    assert secrets_file.stat().st_mode & 0o777 == 0o600
    sampled = [line.split("\t") for line in secrets_file.read_text().splitlines()]
    assert 100 <= len(sampled) <= 200

    connection = await asyncpg.connect(fresh_pg_database)
    try:
        # Stored the way the service stores keys: only sha256(secret).
        hashes = [hashlib.sha256(secret.encode()).hexdigest() for secret, _, _ in sampled]
        found = await connection.fetchval(
            "SELECT count(*) FROM api_keys WHERE secret_hash = ANY($1::text[])", hashes
        )
        assert found == len(sampled)
        # Every org has a member, an admin among them, and a service account with a role.
        assert not await connection.fetchval(
            "SELECT count(*) FROM organizations o WHERE NOT EXISTS "
            "(SELECT 1 FROM memberships m WHERE m.org_id = o.id) OR NOT EXISTS "
            "(SELECT 1 FROM role_assignments r WHERE r.org_id = o.id AND r.role_name = 'OrgAdmin')"
            " OR NOT EXISTS (SELECT 1 FROM service_accounts s WHERE s.org_id = o.id)"
        )
        assert not await connection.fetchval(
            "SELECT count(*) FROM role_assignments r WHERE r.principal_type = 'user' AND NOT "
            "EXISTS (SELECT 1 FROM memberships m WHERE m.org_id = r.org_id "
            "AND m.user_id = r.principal_id)"
        )
        largest = await connection.fetchrow(
            "SELECT id, slug FROM organizations WHERE slug = 'demo-00000'"
        )
        largest_keys = await connection.fetchval(
            "SELECT count(*) FROM api_keys WHERE org_id = $1", largest["id"]
        )
        largest_members = await connection.fetchval(
            "SELECT count(*) FROM memberships WHERE org_id = $1", largest["id"]
        )
        largest_accounts = await connection.fetchval(
            "SELECT count(*) FROM service_accounts WHERE org_id = $1", largest["id"]
        )
        suspended = await connection.fetchval(
            "SELECT count(*) FROM organizations WHERE status = 'suspended'"
        )
    finally:
        await connection.close()
    assert largest_keys == allocate(KEYS, ORGS, minimum=1)[0]  # the long tail's head
    assert largest_keys > 5 * KEYS / ORGS
    assert suspended == ORGS // 100

    # Loading the same prefix twice is refused, nothing changes.
    again = _seed(env, "--orgs", "5", "--users", "5", "--keys", "5")
    assert again.returncode == 1
    assert "already loaded" in again.stderr
    assert await _counts(fresh_pg_database) == counts
    # Embedded mode is refused with one line (the seed loads PostgreSQL only).
    embedded = _seed({**env, "USER_ORG_MODE": "embedded", "USER_ORG_DATABASE_URL": ""})
    assert embedded.returncode == 2
    assert "seed-demo loads PostgreSQL" in embedded.stderr

    settings = base_settings("production", tmp_path / "svc", database_url=fresh_pg_database)
    service, manager = await start_env("production", settings, receiver)
    try:
        client = service.client
        secret, org_id, _ = sampled[0]
        body = {"credential": secret, "action": "inference:invoke", "resource": "gpt-large"}
        decision = (await client.post("/v1/authorize", json=body)).json()
        assert decision["decision"] == "allow", decision
        assert decision["orgId"] == org_id
        user_key = next((row for row in sampled if row[2] == "user"), None)
        assert user_key is not None
        decision = (
            await client.post("/v1/authorize", json={**body, "credential": user_key[0]})
        ).json()
        assert decision["decision"] == "allow", decision
        assert decision["principalType"] == "user"

        admin = await service.admin_headers()
        orgs = await _collect(client, "/v1/orgs", admin)
        assert len(orgs) == ORGS
        assert len({org["orgId"] for org in orgs}) == ORGS
        org = str(largest["id"])
        keys = await _collect(client, f"/v1/orgs/{org}/api-keys", admin)
        assert len(keys) == largest_keys
        assert len({key["apiKeyId"] for key in keys}) == largest_keys
        members = await _collect(client, f"/v1/orgs/{org}/users", admin)
        assert len(members) == largest_members
        accounts = await _collect(client, f"/v1/orgs/{org}/service-accounts", admin)
        assert len(accounts) == largest_accounts

        # A seeded user signs in with the demo password and sees their org only.
        first = min(members, key=lambda member: member["email"])
        token = await service.login(first["email"], DEFAULT_PASSWORD)
        mine = await client.get("/v1/orgs", headers=bearer(token))
        assert mine.status_code == 200
        assert org in {item["orgId"] for item in mine.json()["items"]}
        other = orgs[0]["orgId"] if orgs[0]["orgId"] != org else orgs[1]["orgId"]
        visible = {item["orgId"] for item in mine.json()["items"]}
        if other not in visible:
            denied = await client.get(f"/v1/orgs/{other}/api-keys", headers=bearer(token))
            assert denied.status_code in {403, 404}

        # Revoking a seeded key through the API denies it.
        key_id = await _key_id(fresh_pg_database, secret)
        revoked = await client.delete(f"/v1/orgs/{org_id}/api-keys/{key_id}", headers=admin)
        assert revoked.status_code == 204, revoked.text
        decision = (await client.post("/v1/authorize", json=body)).json()
        assert decision["decision"] == "deny"
    finally:
        await service.client.aclose()
        await manager.__aexit__(None, None, None)


async def _key_id(database_url: str, secret: str) -> str:
    connection = await asyncpg.connect(database_url)
    try:
        digest = hashlib.sha256(secret.encode()).hexdigest()
        return str(
            await connection.fetchval("SELECT id FROM api_keys WHERE secret_hash = $1", digest)
        )
    finally:
        await connection.close()
