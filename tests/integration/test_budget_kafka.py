"""The Kafka intake of usage against a real broker (tansu): totals, duplicates, dead letters
with their reason, and a consumer restart mid-stream that neither loses nor double-counts."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from decimal import Decimal
from typing import Any

import orjson
from confluent_kafka import Producer
from sqlalchemy import func, select

from tests.support.api import Env, uid
from tests.support.kafka import TansuBroker, read_topic
from userorg.budgets.intake import UsageConsumer
from userorg.budgets.models import BudgetUsageEvent


def _produce(bootstrap: str, topic: str, key: str, messages: list[bytes]) -> None:
    """Keyed by org, as the billing pipeline does: one partition keeps their order."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for value in messages:
        producer.produce(topic, key=key.encode(), value=value)
    assert producer.flush(15) == 0


async def _spend(env: Env, org_id: str) -> tuple[Decimal, int]:
    import uuid

    async with env.container.session_factory() as session:
        row = (
            await session.execute(
                select(func.coalesce(func.sum(BudgetUsageEvent.amount), 0), func.count()).where(
                    BudgetUsageEvent.org_id == uuid.UUID(org_id)
                )
            )
        ).one()
    return Decimal(row[0]), int(row[1])


async def _until(predicate: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("condition not met in time")


async def test_kafka_usage_intake_duplicates_dead_letters_and_restart(
    env: Env, kafka_broker: TansuBroker
) -> None:
    # Both modes: the consumer records through the mode's store and counters.
    org = await env.create_org()
    org_id = org["orgId"]
    headers = await env.admin_headers()
    response = await env.client.put(
        f"/v1/budgets/{org_id}/policy",
        json={"limit": "1000", "currency": "USD", "period": "monthly"},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    tag = uid()
    topic, dead_topic = f"billing.usage.{tag}", f"billing.usage.dead.{tag}"
    now = dt.datetime.now(dt.UTC).isoformat()

    def event(n: int, **extra: Any) -> dict[str, Any]:
        body = {
            "eventId": f"k-{tag}-{n}",
            "orgId": org_id,
            "amount": "1.50",
            "currency": "USD",
            "timestamp": now,
        }
        body.update(extra)
        return body

    def consumer() -> UsageConsumer:
        budgets = env.container.budgets
        assert budgets is not None
        return UsageConsumer(
            uow_factory=env.container.uow,
            budgets=budgets,
            bootstrap_servers=kafka_broker.bootstrap,
            topic=topic,
            dead_letter_topic=dead_topic,
            group_id=f"group-{tag}",
            batch_size=7,
            poll_timeout=0.2,
            # A restarted consumer rejoins the group quickly.
            extra_config={"session.timeout.ms": 6000, "heartbeat.interval.ms": 500},
        )

    first = consumer()
    await asyncio.to_thread(first.ensure_topics)
    good = [orjson.dumps(event(n)) for n in range(60)]
    malformed = [
        b"not json",
        orjson.dumps([1, 2]),
        orjson.dumps(event(1000, amount="-3")),
        orjson.dumps(event(1001, amount="lots")),
        orjson.dumps(event(1002, currency="EUR")),
        orjson.dumps(event(1003, orgId="no-such-org")),
        orjson.dumps(event(1004, timestamp="2999-01-01T00:00:00Z")),
        orjson.dumps({k: v for k, v in event(1005).items() if k != "eventId"}),
        orjson.dumps(event(5, amount="9.99")),  # a different event under a known id
    ]
    duplicates = [orjson.dumps(event(n)) for n in range(0, 60, 6)]
    stream = good[:30] + malformed + duplicates + good[30:]
    await asyncio.to_thread(_produce, kafka_broker.bootstrap, topic, org_id, stream)

    first.start()
    # Stop mid-stream: after some batches are committed, well before the end.
    await _until(lambda: _first_batches(first))
    await first.stop()
    partial = await _spend(env, org_id)
    assert 0 < partial[1] < 60

    second = consumer()
    second.start()
    try:
        await _until(lambda: _counted(env, org_id, 60))
        await asyncio.sleep(1.0)  # nothing more arrives
        assert await _spend(env, org_id) == (Decimal("90.00"), 60)
    finally:
        await second.stop()
    status = await env.client.get(f"/v1/budgets/{org_id}/status", headers=headers)
    assert status.json()["spend"] == "90.00"

    letters = await asyncio.to_thread(
        read_topic, kafka_broker.bootstrap, dead_topic, until=lambda r: len(r) >= len(malformed)
    )
    reasons = sorted(r.value["reason"] for r in letters)
    assert len(letters) == len(malformed), reasons
    assert reasons == sorted(
        [
            "not_json",
            "not_an_object",
            "invalid_event",
            "invalid_event",
            "currency_mismatch",
            "unknown_org",
            "event_in_future",
            "invalid_event",
            "event_id_conflict",
        ]
    )
    assert all(r.headers["reason"] == r.value["reason"] for r in letters)
    assert {r.value["original"] for r in letters if r.value["reason"] == "not_json"} == {"not json"}
    events = await env.audit_events(org_id, action="budgets:usage:kafka", limit=200)
    assert sum(e["metadata"]["recorded"] for e in events) == 60


async def _first_batches(consumer: UsageConsumer) -> bool:
    return consumer.batches >= 2


async def _counted(env: Env, org_id: str, count: int) -> bool:
    return (await _spend(env, org_id))[1] >= count
