"""The transactional outbox reaches the stream: Kafka (production) or the JSONL file (embedded)."""

from __future__ import annotations

import uuid

from sqlalchemy import select

from tests.support.api import Env
from tests.support.audit import event_schema_validator, stream_documents, wait_outbox_empty
from userorg.audit.chain import verify_chain
from userorg.audit.models import AuditEvent


async def test_events_arrive_in_org_order_with_the_published_schema(env: Env) -> None:
    headers = await env.admin_headers()
    orgs = [await env.create_org() for _ in range(3)]
    for round_no in range(4):
        for org in orgs:
            response = await env.client.patch(
                f"/v1/orgs/{org['orgId']}", json={"name": f"Round {round_no}"}, headers=headers
            )
            assert response.status_code == 200
    await wait_outbox_empty(env.container)
    async with env.container.session_factory() as session:
        stored = {
            org["orgId"]: [
                str(e.id)
                for e in (
                    await session.execute(
                        select(AuditEvent)
                        .where(AuditEvent.org_id == uuid.UUID(org["orgId"]))
                        .order_by(AuditEvent.seq)
                    )
                ).scalars()
            ]
            for org in orgs
        }
    expected = {event_id for ids in stored.values() for event_id in ids}
    records = await stream_documents(env, expect_ids=expected)
    validator = event_schema_validator()
    kafka = env.settings.effective_audit_stream == "kafka"
    for org in orgs:
        mine = [r for r in records if r["doc"]["orgId"] == org["orgId"]]
        first_seen: dict[str, dict] = {}
        for record in mine:
            first_seen.setdefault(record["doc"]["eventId"], record)
        documents = [r["doc"] for r in first_seen.values()]
        # Every stored event arrived, in chain order (1, 2, 3, ...), and the chain verifies.
        assert [d["eventId"] for d in documents] == stored[org["orgId"]]
        assert [d["seq"] for d in documents] == list(range(1, len(documents) + 1))
        assert len(documents) == 5
        assert verify_chain(documents).ok
        for record in mine:
            errors = sorted(validator.iter_errors(record["doc"]), key=str)
            assert not errors, [e.message for e in errors]
            if kafka:
                assert record["key"] == org["orgId"]
                assert record["headers"]["event-id"] == record["doc"]["eventId"]
                assert record["headers"]["schema-version"] == "1"
                assert record["headers"]["content-type"] == "application/json"
        if kafka:  # keyed by org: one partition per org keeps the order
            assert len({r["partition"] for r in mine}) == 1


async def test_readiness_and_metrics_report_the_stream(env: Env) -> None:
    await wait_outbox_empty(env.container)
    env.container.audit_relay.wake()
    ready = await env.client.get("/readyz")
    assert ready.status_code == 200
    stream = ready.json()["checks"]["auditStream"]
    assert stream["status"] == "up"
    assert stream["sink"] == ("kafka" if env.mode == "production" else "file")
    assert stream["role"] in {"leader", "standby"}
    assert {"backlog", "lagSeconds", "published"} <= set(stream)
    metrics = (await env.client.get("/metrics")).text
    for name in (
        'userorg_outbox_pending{outbox="audit"}',
        'userorg_outbox_oldest_pending_age_seconds{outbox="audit"}',
        "userorg_audit_relay_published_total",
        "userorg_audit_relay_leader",
    ):
        assert name in metrics
