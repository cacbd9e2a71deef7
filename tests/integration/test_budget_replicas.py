"""Exact budget enforcement across two admin-api processes sharing PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from pathlib import Path
from typing import Any

import httpx

from tests.support import services
from tests.support.api import bearer, uid
from tests.support.replicas import admin_token, make_org_with_keys, replicas


async def _storm(urls: list[str], secret: str, count: int, cost: float) -> list[dict[str, Any]]:
    """``count`` concurrent authorizations, alternating between the replicas."""
    clients = [
        httpx.AsyncClient(base_url=url, timeout=30, limits=httpx.Limits(max_connections=100))
        for url in urls
    ]
    try:

        async def one(index: int) -> dict[str, Any]:
            response = await clients[index % len(clients)].post(
                "/v1/authorize",
                json={
                    "credential": secret,
                    "action": "inference:invoke",
                    "resource": "gpt-large",
                    "estimatedCost": cost,
                },
            )
            assert response.status_code == 200, response.text
            answer: dict[str, Any] = response.json()
            return answer

        return list(await asyncio.gather(*(one(i) for i in range(count))))
    finally:
        for client in clients:
            await client.aclose()


def _decide(client: httpx.Client, secret: str) -> dict[str, Any]:
    response = client.post(
        "/v1/authorize",
        json={"credential": secret, "action": "inference:invoke", "resource": "gpt-large"},
    )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def test_limit_of_100_allows_exactly_100_of_400_concurrent_reservations(
    tmp_path: Path, fresh_pg_database: str
) -> None:
    services.require_redis()
    with (
        replicas(fresh_pg_database, tmp_path, USER_ORG_BUDGET_CACHE_TTL_SECONDS="600") as (a, b),
        httpx.Client(base_url=a.url, timeout=30) as on_a,
        httpx.Client(base_url=b.url, timeout=30) as on_b,
    ):
        headers = bearer(admin_token(on_a))
        setup = make_org_with_keys(on_a, headers, keys=1)
        org_id = setup["orgId"]
        secret = setup["keys"][0]["secret"]
        policy = on_a.put(
            f"/v1/budgets/{org_id}/policy",
            json={"limit": "100.00", "currency": "USD", "period": "monthly"},
            headers=headers,
        )
        assert policy.status_code == 200, policy.text
        # Both replicas know the key and the policy before the storm.
        for client in (on_a, on_b):
            warm = client.post(
                "/v1/authorize",
                json={"credential": secret, "action": "inference:invoke", "resource": "m"},
            )
            assert warm.json()["decision"] == "allow", warm.text

        started = time.monotonic()
        answers = asyncio.run(_storm([a.url, b.url], secret, 400, 1.00))
        elapsed = time.monotonic() - started
        allowed = [x for x in answers if x["decision"] == "allow"]
        denied = [x for x in answers if x["decision"] == "deny"]
        assert len(allowed) == 100, (len(allowed), elapsed)
        assert {x["reason"] for x in denied} == {"budget_exceeded"}
        assert len({x["reservationId"] for x in allowed}) == 100

        status = on_b.get(f"/v1/budgets/{org_id}/status", headers=headers).json()
        assert (status["spend"], status["reserved"], status["remaining"]) == (
            "0.00",
            "100.00",
            "0.00",
        )

        # Settle 40 reservations at 0.25 each (on replica B): 30.00 is free again.
        now = dt.datetime.now(dt.UTC).isoformat()
        events = [
            {
                "eventId": f"settle-{uid()}",
                "amount": "0.25",
                "currency": "USD",
                "timestamp": now,
                "reservationId": answer["reservationId"],
            }
            for answer in allowed[:40]
        ]
        settled = on_b.post(f"/v1/budgets/{org_id}/usage", json={"events": events}, headers=headers)
        assert settled.status_code == 200, settled.text
        assert settled.json()["recorded"] == 40
        # A replay of the settlement neither counts nor frees anything twice.
        replay = on_a.post(f"/v1/budgets/{org_id}/usage", json={"events": events}, headers=headers)
        assert replay.json()["duplicates"] == 40
        status = on_a.get(f"/v1/budgets/{org_id}/status", headers=headers).json()
        assert (status["spend"], status["reserved"], status["remaining"]) == (
            "10.00",
            "60.00",
            "30.00",
        )

        answers = asyncio.run(_storm([a.url, b.url], secret, 100, 1.00))
        assert sum(1 for x in answers if x["decision"] == "allow") == 30

        # Usage that crosses the block threshold on A: B denies (without an estimate, on
        # committed spend) on its very next request.
        assert _decide(on_b, secret)["decision"] == "allow"
        crossing = on_a.post(
            f"/v1/budgets/{org_id}/usage",
            json={"eventId": f"big-{uid()}", "amount": "90", "currency": "USD", "timestamp": now},
            headers=headers,
        )
        assert crossing.status_code == 200, crossing.text
        denied = _decide(on_b, secret)
        assert (denied["decision"], denied["reason"]) == ("deny", "budget_exceeded")
        # A raised limit on A reaches B's cached policy over the bus within a second (its
        # cache backstop is 10 minutes here).
        raised_at = time.monotonic()
        raised = on_a.put(
            f"/v1/budgets/{org_id}/policy",
            json={"limit": "1000.00", "currency": "USD", "period": "monthly"},
            headers=headers,
        )
        assert raised.status_code == 200, raised.text
        while _decide(on_b, secret)["decision"] != "allow":
            assert time.monotonic() - raised_at < 1.0, "replica B still blocks after 1 s"
            time.sleep(0.01)
