"""Abuse limits over HTTP, in both modes (Redis GCRA in production, in-process embedded):
password reset (per IP, per account, and reset submissions per IP), invitations (per principal,
per org), key issuance (per principal), every authenticated mutation (per principal). Each
refusal is a 429 with Retry-After naming its limit, changes nothing, and is counted in
``userorg_rate_limited_total{scope}``. (Login limits: tests/api/test_lockout.py.)"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import base_settings, start_env
from tests.support import services
from tests.support.api import Env, uid
from tests.support.receiver import WebhookReceiver
from userorg.platform.ratelimit import FailOpenRateLimiter

LIMITS = {
    "password_reset_rate_per_ip_per_hour": 4,
    "password_reset_rate_per_account_per_hour": 2,
    "invite_rate_per_principal_per_hour": 3,
    "invite_rate_per_org_per_hour": 5,
    "mutation_rate_per_principal_per_minute": 12,
    "api_key_issue_limit_per_principal": 2,
}


@pytest.fixture(params=["embedded", "production"])
async def limited_env(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    receiver: WebhookReceiver,
) -> AsyncIterator[Env]:
    mode = request.param
    overrides: dict[str, object] = {
        "notifier": "webhook",
        "notify_webhook_url": receiver.url,
        "notify_webhook_secret": "test-webhook-secret",
        "notify_retry_base_seconds": 0.05,
        "notify_poll_interval_seconds": 0.1,
    }
    if mode == "production":
        services.require_redis()
        overrides["database_url"] = request.getfixturevalue("fresh_pg_database")
    data_dir: Path = tmp_path_factory.mktemp(f"abuse-{mode}")
    values = base_settings(mode, data_dir, **overrides)
    values.update(LIMITS)
    env, manager = await start_env(mode, values, receiver)
    try:
        yield env
    finally:
        await env.client.aclose()
        await manager.__aexit__(None, None, None)


def refused(response: httpx.Response | None, scope: str) -> None:
    assert response is not None
    assert response.status_code == 429, response.text
    body = response.json()
    assert body["code"] == "rate_limited"
    assert body["details"]["scope"] == scope
    assert int(response.headers["retry-after"]) >= 1
    assert body["details"]["retryAfterSeconds"] == int(response.headers["retry-after"])


async def refusals(env: Env, scope: str) -> float:
    text = (await env.client.get("/metrics")).text
    match = re.search(rf'^userorg_rate_limited_total\{{scope="{scope}"\}} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


async def test_password_reset_limits(limited_env: Env) -> None:
    env = limited_env
    target = f"someone-{uid()}@example.com"
    before = await refusals(env, "password_forgot_account")
    for _ in range(2):
        ok = await env.client.post("/v1/auth/password/forgot", json={"email": target})
        assert ok.status_code == 202
    refused(
        await env.client.post("/v1/auth/password/forgot", json={"email": target}),
        "password_forgot_account",
    )
    assert await refusals(env, "password_forgot_account") == before + 1
    # The per-IP budget (4 an hour) covers every address asked for from one client (the
    # refused request above spent from it too: the IP is checked first).
    other = await env.client.post("/v1/auth/password/forgot", json={"email": f"x-{uid()}@x.com"})
    assert other.status_code == 202
    refused(
        await env.client.post("/v1/auth/password/forgot", json={"email": f"y-{uid()}@x.com"}),
        "password_forgot_ip",
    )
    # Submitting reset tokens is limited per IP as well.
    body = {"token": "uopr_" + "A" * 43, "newPassword": "Another-Sturdy-Passphrase-7"}
    answers = [(await env.client.post("/v1/auth/password/reset", json=body)) for _ in range(4)]
    assert {a.status_code for a in answers} == {400}
    refused(await env.client.post("/v1/auth/password/reset", json=body), "password_reset_ip")


async def test_invite_limits_per_principal_and_per_org(limited_env: Env) -> None:
    env = limited_env
    org = await env.create_org()
    first = await env.add_member(org["orgId"], ["OrgAdmin"])
    second = await env.add_member(org["orgId"], ["OrgAdmin"])
    url = f"/v1/orgs/{org['orgId']}/invites"

    async def invite(member_headers: dict[str, str]) -> httpx.Response:
        return await env.client.post(
            url,
            json={"email": f"new-{uid()}@example.com", "roles": ["OrgViewer"]},
            headers=member_headers,
        )

    for _ in range(3):
        assert (await invite(first.headers)).status_code == 202
    before = await env.audit_count(action="api:invite:create")
    refused(await invite(first.headers), "invite_principal")
    # The org's own budget (5 an hour) is spent: the platform admin's 2 invitations (adding
    # the two admins) and the first admin's 3. Another admin, with budget left, is refused too.
    refused(await invite(second.headers), "invite_org")
    # A refused invitation changes nothing and sends nothing.
    assert await env.audit_count(action="api:invite:create") == before


async def test_every_mutation_spends_from_the_principal_budget(limited_env: Env) -> None:
    env = limited_env
    org = await env.create_org()
    admin = await env.add_member(org["orgId"], ["OrgAdmin"])
    before = await refusals(env, "mutation_principal")
    spent = 0
    response = None
    for _ in range(20):
        response = await env.client.post(
            f"/v1/orgs/{org['orgId']}/service-accounts",
            json={"name": f"sa-{uid()}", "roles": ["OrgViewer"]},
            headers=admin.headers,
        )
        if response.status_code != 201:
            break
        spent += 1
    assert spent == LIMITS["mutation_rate_per_principal_per_minute"]
    refused(response, "mutation_principal")
    assert await refusals(env, "mutation_principal") == before + 1
    if env.mode == "production":
        # The budget lives in Redis (shared by every replica), not in the process.
        limiter = env.container.rate_limiter
        assert isinstance(limiter, FailOpenRateLimiter) and not limiter.degraded
        redis = env.container.redis
        assert redis is not None
        key = f"{env.settings.key_prefix}:rl:mutation_principal:{admin.user_id}"
        assert await redis.exists(key) == 1
    # Service-to-service POSTs are not changes a person makes: the exhausted principal still
    # reports usage and asks the policy decision point.
    for _ in range(3):
        usage = await env.client.post(
            f"/v1/budgets/{org['orgId']}/usage",
            json={
                "eventId": f"ev-{uid()}",
                "amount": "1.00",
                "currency": "USD",
                "timestamp": dt.datetime.now(dt.UTC).isoformat(),
            },
            headers=admin.headers,
        )
        assert usage.status_code == 200, usage.text
    platform = await env.admin_headers()
    for _ in range(LIMITS["mutation_rate_per_principal_per_minute"] + 3):
        decided = await env.client.post(
            "/v1/policy/evaluate",
            json={
                "subject": {
                    "orgId": org["orgId"],
                    "principalId": admin.user_id,
                    "principalType": "user",
                },
                "action": "orgs:read",
            },
            headers=platform,
        )
        assert decided.status_code == 200, decided.text
    # Reads are not mutations; another principal has its own budget.
    listed = await env.client.get(
        f"/v1/orgs/{org['orgId']}/service-accounts", headers=admin.headers, params={"limit": 200}
    )
    assert listed.status_code == 200
    assert len(listed.json()["items"]) == spent
    other = await env.add_member(org["orgId"], ["OrgAdmin"])
    ok = await env.client.post(
        f"/v1/orgs/{org['orgId']}/service-accounts",
        json={"name": f"sa-{uid()}", "roles": ["OrgViewer"]},
        headers=other.headers,
    )
    assert ok.status_code == 201, ok.text


async def test_key_issuance_limit(limited_env: Env) -> None:
    env = limited_env
    org = await env.create_org()
    admin = await env.add_member(org["orgId"], ["OrgAdmin"])
    account = await env.client.post(
        f"/v1/orgs/{org['orgId']}/service-accounts",
        json={"name": f"sa-{uid()}", "roles": ["Developer"]},
        headers=admin.headers,
    )
    url = f"/v1/orgs/{org['orgId']}/service-accounts/{account.json()['serviceAccountId']}/api-keys"
    for _ in range(2):
        issued = await env.client.post(
            url, json={"scopes": ["inference:invoke"]}, headers=admin.headers
        )
        assert issued.status_code == 201, issued.text
    refused(
        await env.client.post(url, json={"scopes": ["inference:invoke"]}, headers=admin.headers),
        "api_key_issue_principal",
    )
