"""Where the relay streams audit events: Kafka (production) or a local JSONL file (embedded).

A sink publishes one batch and reports, per message, ``None`` (acknowledged) or the error. Its
calls block (librdkafka, file I/O), so the relay runs them in a worker thread.

Kafka messages: topic ``audit.identity`` (configurable), key = the org id (``platform`` for
events without an org) so an org's events share a partition and keep their order, value = the
event's JSON document (schema ``docs/schemas/audit-event.v1.json``), headers ``event-id``,
``schema-version`` and ``content-type``. The producer is idempotent (``enable.idempotence``):
broker-side retries never duplicate or reorder within a partition.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import structlog

log = structlog.get_logger("userorg.audit.stream")

SCHEMA_VERSION = "1"
CONTENT_TYPE = "application/json"


@dataclass(frozen=True, slots=True)
class StreamMessage:
    outbox_id: int
    chain_id: str
    seq: int
    key: str
    event_id: str
    value: bytes


class StreamSink(Protocol):
    name: str

    def publish(self, messages: Sequence[StreamMessage], *, timeout: float) -> list[str | None]:
        """Deliver in order; one entry per message: ``None`` when acknowledged, else why not."""
        ...

    def close(self) -> None: ...


class FileSink:
    """Appends one event document per line and fsyncs each batch (embedded mode)."""

    name = "file"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def publish(self, messages: Sequence[StreamMessage], *, timeout: float) -> list[str | None]:
        data = b"".join(message.value + b"\n" for message in messages)
        with self._lock:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.path, "ab") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
            except OSError as error:
                return [f"{type(error).__name__}: {error}"] * len(messages)
        return [None] * len(messages)

    def close(self) -> None:
        pass


class KafkaSink:
    """An idempotent confluent-kafka producer; the topic is created when missing."""

    name = "kafka"

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        *,
        message_timeout_seconds: float,
        client_id: str = "userorg-audit-relay",
        extra_config: dict[str, Any] | None = None,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self._config: dict[str, Any] = {
            "bootstrap.servers": bootstrap_servers,
            "client.id": client_id,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "message.timeout.ms": max(500, int(message_timeout_seconds * 1000)),
            "socket.connection.setup.timeout.ms": 3000,
            "reconnect.backoff.ms": 100,
            "reconnect.backoff.max.ms": 1000,
            "topic.metadata.refresh.interval.ms": 10_000,
            "error_cb": self._on_error,
            "logger": _KAFKA_LOGGER,
            **(extra_config or {}),
        }
        self._producer: Any = None
        self._fatal: str | None = None
        self._topic_ready = False

    def _on_error(self, error: Any) -> None:
        if error.fatal():
            self._fatal = str(error)
            log.warning("kafka_fatal_error", error=str(error))

    def _ensure_producer(self) -> Any:
        from confluent_kafka import Producer

        if self._producer is not None and self._fatal is not None:
            # A fatal idempotence error (e.g. the broker lost the producer state): start over
            # with a new producer id; the unacknowledged batch is republished.
            log.info("kafka_producer_recreated", reason=self._fatal)
            self._producer.purge(in_queue=True, in_flight=True, blocking=False)
            self._producer = None
            self._fatal = None
        if self._producer is None:
            self._producer = Producer(self._config)
        return self._producer

    def _ensure_topic(self, timeout: float) -> None:
        if self._topic_ready:
            return
        from confluent_kafka import KafkaError, KafkaException
        from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

        config: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "logger": _KAFKA_LOGGER,
        }
        admin = AdminClient(config)
        metadata = admin.list_topics(timeout=timeout)
        if self.topic not in metadata.topics or metadata.topics[self.topic].error is not None:
            futures = admin.create_topics(
                [NewTopic(self.topic, num_partitions=3, replication_factor=1)]
            )
            try:
                futures[self.topic].result(timeout)
            except KafkaException as error:
                if error.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise
        self._topic_ready = True

    def publish(self, messages: Sequence[StreamMessage], *, timeout: float) -> list[str | None]:
        try:
            self._ensure_topic(timeout / 2)
        except Exception as error:
            return [f"topic unavailable: {error}"] * len(messages)
        producer = self._ensure_producer()
        results: list[str | None] = ["not acknowledged"] * len(messages)

        def callback(index: int) -> Any:
            def on_delivery(error: Any, _message: Any) -> None:
                results[index] = None if error is None else str(error)

            return on_delivery

        from confluent_kafka import KafkaException

        for index, message in enumerate(messages):
            while True:
                try:
                    producer.produce(
                        self.topic,
                        key=message.key.encode(),
                        value=message.value,
                        headers=[
                            ("event-id", message.event_id.encode()),
                            ("schema-version", SCHEMA_VERSION.encode()),
                            ("content-type", CONTENT_TYPE.encode()),
                        ],
                        on_delivery=callback(index),
                    )
                    break
                except BufferError:
                    producer.poll(0.05)
                except KafkaException as error:
                    if error.args and error.args[0].fatal():
                        self._fatal = str(error.args[0])
                    # Nothing after this message is queued: they all count as not delivered.
                    producer.flush(timeout)
                    self._fatal = self._fatal or str(error)
                    return results
            producer.poll(0)
        remaining = producer.flush(timeout)
        if remaining:
            # Never leave messages queued past this call: the lease may pass to another relay.
            producer.purge(in_queue=True, in_flight=True, blocking=False)
            producer.poll(0)
        if any(result is not None for result in results):
            # Start the next attempt with a fresh producer (new producer id): after a broker
            # restart or a timed-out batch the old idempotence state can be fatal ("unknown
            # producer id"). The unacknowledged events are republished in order.
            self._fatal = self._fatal or "batch not fully acknowledged"
        return results

    def close(self) -> None:
        if self._producer is not None:
            self._producer.purge(in_queue=True, in_flight=True, blocking=False)
            self._producer.flush(0)
            self._producer = None


# librdkafka reports every refused connection while the broker is down; the relay reports
# failed deliveries itself (log, metric, /readyz), so librdkafka's own lines are kept quiet.
_KAFKA_LOGGER = logging.getLogger("userorg.librdkafka")
_KAFKA_LOGGER.setLevel(logging.CRITICAL)
