"""Brute-force protection: atomic lockout under concurrency, unknown addresses alike,
admin unlock, login rate limits (429 + Retry-After)."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import update

from tests.conftest import base_settings, start_env
from tests.support import services
from tests.support.api import STRONG_PASSWORD, Env, uid
from tests.support.receiver import WebhookReceiver
from userorg.authn.lockout import throttle_key
from userorg.authn.models import LoginThrottle

WRONG = "Not-The-Password-99"


async def _attempts(env: Env, email: str, count: int) -> list[int]:
    responses = await asyncio.gather(
        *(
            env.client.post("/v1/auth/login", json={"email": email, "password": WRONG})
            for _ in range(count)
        )
    )
    for response in responses:
        if response.status_code == 423:
            assert int(response.headers["retry-after"]) > 0
            assert response.json()["code"] == "account_locked"
    return [r.status_code for r in responses]


async def test_parallel_wrong_passwords_lock_after_exactly_the_threshold(env: Env) -> None:
    org = await env.create_org()
    member = await env.add_member(org["orgId"], ["OrgViewer"])
    threshold = env.settings.lockout_threshold
    statuses = await _attempts(env, member.email, 20)
    assert Counter(statuses) == {401: threshold, 423: 20 - threshold}
    # Locked: even the right password is refused, with Retry-After near the lock time.
    locked = await env.client.post(
        "/v1/auth/login", json={"email": member.email, "password": STRONG_PASSWORD}
    )
    assert locked.status_code == 423
    retry = int(locked.headers["retry-after"])
    assert env.settings.lockout_seconds - 60 < retry <= env.settings.lockout_seconds
    user_id = uuid.UUID(member.user_id)
    assert await env.audit_count(action="auth:account:lock", target_id=str(user_id)) == 1
    failures = await env.audit_count(
        action="auth:session:login", outcome="failure", target_id=str(user_id)
    )
    assert failures == threshold
    # An admin of the org unlocks; the lock and the unlock are audited.
    unlocked = await env.client.post(
        f"/v1/orgs/{org['orgId']}/users/{member.user_id}/unlock",
        headers=await env.admin_headers(),
    )
    assert unlocked.status_code == 200
    assert unlocked.json() == {"userId": member.user_id, "wasLocked": True}
    assert await env.audit_count(action="api:user:unlock", target_id=member.user_id) == 1
    assert (
        await env.client.post(
            "/v1/auth/login", json={"email": member.email, "password": STRONG_PASSWORD}
        )
    ).status_code == 200


async def test_unknown_addresses_lock_like_real_ones(env: Env) -> None:
    email = f"nobody-{uid()}@example.com"
    threshold = env.settings.lockout_threshold
    statuses = await _attempts(env, email, threshold + 3)
    assert Counter(statuses) == {401: threshold, 423: 3}


async def test_a_success_resets_the_count_and_outsiders_cannot_unlock(env: Env) -> None:
    org = await env.create_org()
    other_org = await env.create_org()
    member = await env.add_member(org["orgId"], ["OrgViewer"])
    outsider = await env.add_member(other_org["orgId"], ["OrgAdmin"])
    threshold = env.settings.lockout_threshold
    for _ in range(2):
        assert await _attempts(env, member.email, threshold - 1) == [401] * (threshold - 1)
        await env.login(member.email, STRONG_PASSWORD)
    probe = await env.client.post(
        f"/v1/orgs/{org['orgId']}/users/{member.user_id}/unlock", headers=outsider.headers
    )
    assert probe.status_code == 404
    viewer = await env.add_member(org["orgId"], ["OrgViewer"])
    denied = await env.client.post(
        f"/v1/orgs/{org['orgId']}/users/{member.user_id}/unlock", headers=viewer.headers
    )
    assert denied.status_code == 403


@pytest.fixture(params=["embedded", "production"])
async def limited_env(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    receiver: WebhookReceiver,
) -> AsyncIterator[Env]:
    mode = request.param
    overrides: dict[str, object] = {
        "login_rate_per_ip_per_minute": 4,
        "login_rate_per_account_per_minute": 3,
    }
    if mode == "production":
        services.require_redis()
        overrides["database_url"] = request.getfixturevalue("fresh_pg_database")
    data_dir: Path = tmp_path_factory.mktemp(f"limited-{mode}")
    values = base_settings(mode, data_dir, **overrides)
    values.update(overrides)
    env, manager = await start_env(mode, values, receiver)
    try:
        yield env
    finally:
        await env.client.aclose()
        await manager.__aexit__(None, None, None)


async def test_login_rate_limits_per_account_and_per_ip(limited_env: Env) -> None:
    env = limited_env
    email = f"target-{uid()}@example.com"
    statuses = []
    for _ in range(4):
        response = await env.client.post("/v1/auth/login", json={"email": email, "password": WRONG})
        statuses.append(response.status_code)
    assert statuses == [401, 401, 401, 429]
    assert response.json()["details"]["scope"] == "login_account"
    assert int(response.headers["retry-after"]) >= 1
    # Another address from the same client: the per-IP budget (4 a minute) runs out next.
    other = await env.client.post(
        "/v1/auth/login", json={"email": f"x-{uid()}@example.com", "password": WRONG}
    )
    assert other.status_code == 429
    assert other.json()["details"]["scope"] == "login_ip"


async def test_lockout_is_progressive(env: Env) -> None:
    email = f"repeat-{uid()}@example.com"
    threshold = env.settings.lockout_threshold
    base = env.settings.lockout_seconds
    retries = []
    for _ in range(2):
        statuses = await _attempts(env, email, threshold + 1)
        assert Counter(statuses) == {401: threshold, 423: 1}
        locked = await env.client.post("/v1/auth/login", json={"email": email, "password": WRONG})
        retries.append(int(locked.headers["retry-after"]))
        # Let the lock run out (as if its time had passed).
        async with env.container.session_factory() as session:
            await session.execute(
                update(LoginThrottle)
                .where(LoginThrottle.key == throttle_key(email))
                .values(locked_until=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
            )
            await session.commit()
    assert base - 60 < retries[0] <= base
    assert 2 * base - 60 < retries[1] <= 2 * base
