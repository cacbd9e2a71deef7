"""Two real admin-api processes on one PostgreSQL database and one Redis: a change made on one
replica is denied by the other within one second (the invalidation bus, not the TTL)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.support import services
from tests.support.api import bearer
from tests.support.replicas import admin_token, make_org_with_keys, replicas


def _decision(client: httpx.Client, secret: str) -> dict[str, str]:
    response = client.post(
        "/v1/authorize",
        json={"credential": secret, "action": "inference:invoke", "resource": "gpt-large"},
    )
    assert response.status_code == 200, response.text
    answer: dict[str, str] = response.json()
    return answer


def _seconds_until_deny(client: httpx.Client, secret: str, since: float) -> tuple[float, str]:
    deadline = since + 5
    while time.monotonic() < deadline:
        answer = _decision(client, secret)
        if answer["decision"] == "deny":
            return time.monotonic() - since, answer["reason"]
    raise AssertionError("the other replica still allows after 5 s")


def test_changes_on_one_replica_deny_on_the_other_within_a_second(
    tmp_path: Path, fresh_pg_database: str
) -> None:
    services.require_redis()
    # A long TTL: only the bus can make the second replica deny in time.
    with (
        replicas(fresh_pg_database, tmp_path, USER_ORG_GATEWAY_CACHE_TTL_SECONDS="600") as (a, b),
        httpx.Client(base_url=a.url, timeout=10) as on_a,
        httpx.Client(base_url=b.url, timeout=10) as on_b,
    ):
        headers = bearer(admin_token(on_a))
        setup = make_org_with_keys(on_a, headers, keys=3)
        org_id, account_id = setup["orgId"], setup["serviceAccountId"]
        revoked, disabled, suspended = (k["secret"] for k in setup["keys"])
        for secret in (revoked, disabled, suspended):
            # Warm replica B's cache (a hit from now on).
            assert _decision(on_b, secret)["decision"] == "allow"
            assert _decision(on_b, secret)["decision"] == "allow"

        key_id = setup["keys"][0]["apiKeyId"]
        assert (
            on_a.delete(f"/v1/orgs/{org_id}/api-keys/{key_id}", headers=headers).status_code == 204
        )
        delay, reason = _seconds_until_deny(on_b, revoked, time.monotonic())
        assert reason == "key_revoked"
        assert delay < 1.0, delay
        assert _decision(on_b, disabled)["decision"] == "allow"

        disable = on_a.post(
            f"/v1/orgs/{org_id}/service-accounts/{account_id}/disable", headers=headers
        )
        assert disable.status_code == 200
        delay, reason = _seconds_until_deny(on_b, disabled, time.monotonic())
        assert reason == "principal_suspended"
        assert delay < 1.0, delay
        assert (
            on_a.post(
                f"/v1/orgs/{org_id}/service-accounts/{account_id}/enable", headers=headers
            ).status_code
            == 200
        )
        # Wait for B to allow again (enable is published too), then suspend the org.
        deadline = time.monotonic() + 5
        while _decision(on_b, suspended)["decision"] != "allow":
            assert time.monotonic() < deadline
        suspend = on_a.post(f"/v1/orgs/{org_id}/suspend", json={"reason": "fraud"}, headers=headers)
        assert suspend.status_code == 200
        delay, reason = _seconds_until_deny(on_b, suspended, time.monotonic())
        assert reason == "org_suspended"
        assert delay < 1.0, delay
        # The admin API of replica B sees the same state (keys listed as revoked).
        listed = on_b.get(
            f"/v1/orgs/{org_id}/api-keys", params={"status": "revoked"}, headers=headers
        )
        assert [k["apiKeyId"] for k in listed.json()["items"]] == [key_id]
