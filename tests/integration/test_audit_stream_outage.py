"""The broker dies mid-load and comes back: requests keep working, nothing is lost."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from pathlib import Path

from sqlalchemy import select

from tests.conftest import base_settings, start_env
from tests.support.audit import outbox_size, wait_outbox_empty
from tests.support.kafka import TansuBroker, read_topic
from tests.support.receiver import WebhookReceiver
from userorg.audit.models import AuditEvent

TOPIC = "audit.identity"
_QUIET = logging.getLogger("test.kafka-reader")
_QUIET.setLevel(logging.CRITICAL)


class Reader(threading.Thread):
    """Consumes the topic continuously (what a downstream consumer does) until stopped."""

    def __init__(self, bootstrap: str) -> None:
        super().__init__(daemon=True)
        self.bootstrap = bootstrap
        self.ids: set[str] = set()
        self._stop_flag = threading.Event()

    def run(self) -> None:
        from confluent_kafka import Consumer, TopicPartition

        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"reader-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 20,
                "logger": _QUIET,
            }
        )
        try:
            while not self._stop_flag.is_set():
                metadata = consumer.list_topics(TOPIC, timeout=1)
                if TOPIC in metadata.topics and metadata.topics[TOPIC].partitions:
                    break
            partitions = list(metadata.topics[TOPIC].partitions)
            consumer.assign([TopicPartition(TOPIC, p, 0) for p in partitions])
            while not self._stop_flag.is_set():
                message = consumer.poll(0.05)
                if message is not None and not message.error():
                    self.ids.add(dict(message.headers())["event-id"].decode())
        finally:
            consumer.close()

    def stop(self) -> None:
        self._stop_flag.set()
        self.join(10)


async def _until(predicate, timeout: float, message: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(message)


async def test_broker_outage_mid_load_loses_no_event(
    tmp_path: Path, fresh_pg_database: str, receiver: WebhookReceiver
) -> None:
    broker = TansuBroker().start()
    settings = base_settings(
        "production",
        tmp_path,
        database_url=fresh_pg_database,
        audit_stream="kafka",
        kafka_bootstrap_servers=broker.bootstrap,
        audit_topic=TOPIC,
        audit_relay_lease_seconds=3,
        audit_relay_poll_seconds=0.05,
    )
    env, manager = await start_env("production", settings, receiver)
    reader = Reader(broker.bootstrap)
    try:
        relay = env.container.audit_relay
        acked_by_first_broker: set[str] = set()
        first_broker_alive = True

        def on_ack(messages) -> None:  # type: ignore[no-untyped-def]
            if first_broker_alive:
                acked_by_first_broker.update(m.event_id for m in messages)

        relay.add_listener(on_ack)
        headers = await env.admin_headers()
        orgs = [await env.create_org() for _ in range(3)]
        reader.start()
        statuses: list[int] = []
        failures: list[str] = []
        stop_load = asyncio.Event()

        async def load() -> None:
            i = 0
            while not stop_load.is_set():
                org = orgs[i % len(orgs)]
                response = await env.client.patch(
                    f"/v1/orgs/{org['orgId']}", json={"name": f"Load {i}"}, headers=headers
                )
                statuses.append(response.status_code)
                if response.status_code != 200:
                    failures.append(response.text)
                i += 1
                await asyncio.sleep(0.01)

        load_task = asyncio.create_task(load())
        await _until(lambda: _true(len(reader.ids) >= 20), 30, "events never reached the broker")

        broker.kill()
        killed_at = len(statuses)
        reader.stop()
        # A delivery in flight at the kill may still report acks from the dead broker; once the
        # relay has seen a failure, no later ack can come from it (no broker runs until the
        # restart below).
        await _until(
            lambda: _true(relay.state.last_error is not None), 30, "relay never saw the outage"
        )
        first_broker_alive = False

        # The API keeps working; the outbox grows; readiness says degraded, not down.
        async def degraded() -> bool:
            ready = await env.client.get("/readyz")
            stream = ready.json()["checks"]["auditStream"]
            return ready.status_code == 200 and stream["status"] == "degraded"

        await _until(degraded, 30, "the stream never reported the outage")
        await _until(lambda: _true(len(statuses) >= killed_at + 30), 30, "load stalled")
        backlog = await outbox_size(env.container)
        assert backlog > 0
        ready = (await env.client.get("/readyz")).json()
        assert ready["status"] == "ready"
        assert ready["checks"]["auditStream"]["backlog"] > 0
        assert "lastError" in ready["checks"]["auditStream"]
        metrics = (await env.client.get("/metrics")).text
        assert 'userorg_outbox_pending{outbox="audit"}' in metrics

        broker.start()  # same port, empty (memory storage)
        await _until(lambda: _true(len(statuses) >= killed_at + 45), 30, "load stalled")
        stop_load.set()
        await load_task
        assert set(statuses) == {200}, failures[:3]

        await wait_outbox_empty(env.container, timeout=60)
        async with env.container.session_factory() as session:
            stored = (
                await session.execute(
                    select(AuditEvent.id, AuditEvent.org_id, AuditEvent.seq).where(
                        AuditEvent.org_id.in_([uuid.UUID(o["orgId"]) for o in orgs])
                    )
                )
            ).all()
        all_ids = {str(row[0]) for row in stored}
        seq_of = {str(row[0]): (str(row[1]), row[2]) for row in stored}
        not_acked_before_kill = all_ids - acked_by_first_broker
        records = await asyncio.to_thread(
            read_topic,
            broker.bootstrap,
            TOPIC,
            until=lambda rs: not_acked_before_kill <= {r.value["eventId"] for r in rs},
            timeout=60,
        )
        after_restart = [r.value["eventId"] for r in records]
        # Every event the first broker had not acknowledged arrives after the restart. (Events
        # it acknowledged were read by the consumer, or died with its memory-only storage:
        # broker durability, not the relay's.)
        assert not_acked_before_kill <= set(after_restart)
        missing = all_ids - reader.ids - set(after_restart)
        assert missing <= acked_by_first_broker
        assert len(not_acked_before_kill) > 30
        print(
            f"events {len(all_ids)}, acked before the kill {len(acked_by_first_broker)}, "
            f"read before the kill {len(reader.ids)}, lost with the broker's memory "
            f"{len(missing)}, records after restart {len(after_restart)} "
            f"({len(after_restart) - len(set(after_restart))} duplicates)"
        )
        # Duplicates are allowed and de-duplicable by id; first occurrences keep org order.
        first: dict[str, list[int]] = {}
        seen: set[str] = set()
        for event_id in after_restart:
            if event_id in seen or event_id not in seq_of:
                continue
            seen.add(event_id)
            org_id, seq = seq_of[event_id]
            first.setdefault(org_id, []).append(seq)
        for seqs in first.values():
            assert seqs == sorted(seqs)
        ready = (await env.client.get("/readyz")).json()["checks"]["auditStream"]
        assert ready["status"] == "up" and ready["backlog"] == 0
    finally:
        if reader.is_alive():
            reader.stop()
        await env.client.aclose()
        await manager.__aexit__(None, None, None)
        broker.stop()


async def _true(value: bool) -> bool:
    return value
