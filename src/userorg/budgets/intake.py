"""The Kafka intake of usage: a consumer of ``billing.usage`` (JSON ``{eventId, orgId, amount,
currency, timestamp, apiKeyId?, model?, reservationId?}``).

Runs in the admin-api process when ``USER_ORG_BUDGET_USAGE_CONSUMER`` is on; replicas share
the consumer group, so Kafka spreads the partitions over them. Each polled batch is recorded
through the same service as ``POST /v1/budgets/{orgId}/usage`` (idempotent by eventId, one
unit of work per org); a message that cannot be recorded (not JSON, missing or invalid
fields, unknown org, wrong currency, a timestamp in the future, another event under a known
eventId) goes to the dead-letter topic with its reason. Offsets are committed only after
the batch is durably recorded *and* its dead letters are acknowledged by the broker; a crash
in between replays the batch, which the eventId makes harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import orjson
import structlog
from pydantic import ValidationError

from userorg.budgets import service
from userorg.budgets.schemas import KafkaUsageEvent
from userorg.context import Actor
from userorg.db import UnitOfWork
from userorg.errors import DomainError
from userorg.orgs.service import find_org

log = structlog.get_logger("userorg.budgets.intake")
_KAFKA_LOGGER = logging.getLogger("userorg.librdkafka")
ACTOR: Final = Actor(type="system", id="usage-consumer")


@dataclass(slots=True)
class DeadLetter:
    raw: bytes
    reason: str
    message: str
    partition: int
    offset: int


@dataclass(slots=True)
class Parsed:
    event: service.UsageEvent
    org_ref: str
    raw: bytes
    partition: int
    offset: int


def parse(raw: bytes | None) -> tuple[KafkaUsageEvent | None, str, str]:
    """The event, or None with a reason code and a message."""
    if not raw:
        return None, "empty", "empty message"
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        return None, "not_json", str(error)
    if not isinstance(document, dict):
        return None, "not_an_object", "the message is not a JSON object"
    try:
        return KafkaUsageEvent.model_validate(document), "", ""
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        return None, "invalid_event", f"{where}: {first['msg']}"


class UsageConsumer:
    def __init__(
        self,
        *,
        uow_factory: Callable[[], UnitOfWork],
        budgets: service.Budgets,
        bootstrap_servers: str,
        topic: str,
        dead_letter_topic: str,
        group_id: str,
        batch_size: int = 500,
        poll_timeout: float = 0.5,
        extra_config: dict[str, Any] | None = None,
    ) -> None:
        self._uow = uow_factory
        self._budgets = budgets
        self.topic = topic
        self.dead_letter_topic = dead_letter_topic
        self._batch_size = batch_size
        self._poll_timeout = poll_timeout
        self._consumer_config: dict[str, Any] = {
            "bootstrap.servers": bootstrap_servers,
            "group.id": group_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
            "fetch.wait.max.ms": 100,
            "logger": _KAFKA_LOGGER,
            **(extra_config or {}),
        }
        self._producer_config: dict[str, Any] = {
            "bootstrap.servers": bootstrap_servers,
            "client.id": "userorg-usage-dead-letters",
            "enable.idempotence": True,
            "acks": "all",
            "logger": _KAFKA_LOGGER,
        }
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self.recorded = 0
        self.dead_lettered = 0
        self.batches = 0

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self._stop.clear()
        self._task = asyncio.create_task(self._run(), name="usage-consumer")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task
            self._task = None

    def ensure_topics(self, timeout: float = 10.0) -> None:
        from confluent_kafka import KafkaError, KafkaException
        from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

        config: dict[str, Any] = {
            "bootstrap.servers": self._consumer_config["bootstrap.servers"],
            "logger": _KAFKA_LOGGER,
        }
        admin = AdminClient(config)
        metadata = admin.list_topics(timeout=timeout)
        for topic in (self.topic, self.dead_letter_topic):
            if topic in metadata.topics and metadata.topics[topic].error is None:
                continue
            futures = admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
            try:
                futures[topic].result(timeout)
            except KafkaException as error:
                if error.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise

    async def _run(self) -> None:
        from confluent_kafka import Consumer, Producer

        while not self._stop.is_set():
            consumer = Consumer(self._consumer_config)
            producer = Producer(self._producer_config)
            try:
                await asyncio.to_thread(self.ensure_topics)
                await asyncio.to_thread(consumer.subscribe, [self.topic])
                while not self._stop.is_set():
                    messages = await asyncio.to_thread(
                        consumer.consume, self._batch_size, self._poll_timeout
                    )
                    usable = [m for m in messages if m.error() is None]
                    if not usable:
                        continue
                    await self.process(usable, producer)
                    # Recorded and dead letters acknowledged: now the offsets.
                    await asyncio.to_thread(consumer.commit, asynchronous=False)
                    self.batches += 1
            except Exception:
                # Nothing of the failed batch was committed: a new consumer replays it.
                log.exception("usage_consumer_failed")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), timeout=1.0)
            finally:
                await asyncio.to_thread(consumer.close)

    # -- one batch -------------------------------------------------------------------------
    async def process(self, messages: list[Any], producer: Any) -> None:
        dead: list[DeadLetter] = []
        by_org: dict[str, list[Parsed]] = {}
        for message in messages:
            raw = message.value()
            parsed, reason, text = parse(raw)
            if parsed is None:
                dead.append(
                    DeadLetter(raw or b"", reason, text, message.partition(), message.offset())
                )
                continue
            event = service.UsageEvent(
                event_id=parsed.event_id,
                amount=parsed.amount,
                currency=parsed.currency,
                timestamp=parsed.timestamp,
                api_key_id=parsed.api_key_id,
                model=parsed.model,
                reservation_id=parsed.reservation_id,
            )
            by_org.setdefault(parsed.org_id, []).append(
                Parsed(event, parsed.org_id, raw, message.partition(), message.offset())
            )
        for org_ref, items in by_org.items():
            dead += await self._record_org(org_ref, items)
        if dead:
            await asyncio.to_thread(self._dead_letters, producer, dead)
        self.dead_lettered += len(dead)

    async def _record_org(self, org_ref: str, items: list[Parsed]) -> list[DeadLetter]:
        # A replay inside the batch is recorded once; a second, different event under the
        # same id is left for the service to refuse on its own.
        first: dict[str, Parsed] = {}
        batch: list[Parsed] = []
        repeats: list[Parsed] = []
        for item in items:
            seen = first.get(item.event.event_id)
            if seen is None:
                first[item.event.event_id] = item
                batch.append(item)
            elif seen.event == item.event:
                continue
            else:
                repeats.append(item)
        dead: list[DeadLetter] = []
        outcome = await self._record(org_ref, batch)
        if outcome is not None:
            if outcome[0] == "unknown_org":
                return [_dead(item, *outcome) for item in items]
            # Something in the batch is refused: record one by one to find it.
            for item in batch:
                single = await self._record(org_ref, [item])
                if single is not None:
                    dead.append(_dead(item, *single))
        for item in repeats:
            single = await self._record(org_ref, [item])
            if single is not None:
                dead.append(_dead(item, *single))
        return dead

    async def _record(self, org_ref: str, items: list[Parsed]) -> tuple[str, str] | None:
        """None when recorded (or already recorded), else (reason, message); nothing changed."""
        try:
            async with self._uow() as uow:
                org = await find_org(uow.session, org_ref)
                if org is None:
                    return "unknown_org", f"no organization {org_ref}"
                result = await service.record_usage(
                    uow,
                    self._budgets,
                    org=org,
                    events=[item.event for item in items],
                    actor=ACTOR,
                    source="kafka",
                )
            self.recorded += len(result.recorded)
            return None
        except DomainError as error:
            return error.code, error.message

    def _dead_letters(self, producer: Any, dead: list[DeadLetter]) -> None:
        errors: list[str] = []

        def on_delivery(error: Any, _message: Any) -> None:
            if error is not None:
                errors.append(str(error))

        for letter in dead:
            body = orjson.dumps(
                {
                    "reason": letter.reason,
                    "message": letter.message,
                    "topic": self.topic,
                    "partition": letter.partition,
                    "offset": letter.offset,
                    "original": letter.raw.decode("utf-8", errors="replace"),
                }
            )
            producer.produce(
                self.dead_letter_topic,
                value=body,
                headers=[("reason", letter.reason.encode())],
                on_delivery=on_delivery,
            )
        remaining = producer.flush(10)
        if remaining or errors:
            raise RuntimeError(f"dead letters not acknowledged: {errors or remaining}")


def _dead(item: Parsed, reason: str, message: str) -> DeadLetter:
    return DeadLetter(item.raw, reason, message, item.partition, item.offset)
