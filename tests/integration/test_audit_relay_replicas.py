"""Two admin-api replicas: only the lease holder publishes; killing it hands over."""

from __future__ import annotations

import base64
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import services
from tests.support.api import uid
from tests.support.kafka import TansuBroker, read_topic
from tests.support.services import free_port
from userorg import migrate

ADMIN = ("ops@example.com", "Sturdy-Operator-Passphrase-9")


def _replica_env(
    tmp_path: Path, database_url: str, broker: TansuBroker, port: int
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("USER_ORG_")}
    env.update(
        USER_ORG_MODE="production",
        USER_ORG_DATA_DIR=str(tmp_path / "var"),
        USER_ORG_DATABASE_URL=database_url,
        USER_ORG_REDIS_URL=services.REDIS_URL,
        USER_ORG_KEY_PREFIX=f"replicas-{uid()}",
        USER_ORG_KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap,
        USER_ORG_AUDIT_RELAY_LEASE_SECONDS="2",
        USER_ORG_AUDIT_RELAY_POLL_SECONDS="0.1",
        USER_ORG_BOOTSTRAP_ADMIN_EMAIL=ADMIN[0],
        USER_ORG_BOOTSTRAP_ADMIN_PASSWORD=ADMIN[1],
        USER_ORG_ARGON2_MEMORY_KIB="8192",
        USER_ORG_ARGON2_TIME_COST="1",
        USER_ORG_LOG_LEVEL="warning",
        USER_ORG_ADMIN_API_PORT=str(port),
    )
    return env


def _wait(predicate: Any, timeout: float, message: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(message)


def _stream(port: int) -> dict[str, Any] | None:
    try:
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
    except httpx.HTTPError:
        return None
    stream: dict[str, Any] = ready.json()["checks"]["auditStream"]
    return stream


@pytest.mark.production
def test_only_the_lease_holder_publishes_and_a_dead_holder_is_replaced(
    tmp_path: Path, fresh_pg_database: str
) -> None:
    services.require_redis()
    broker = TansuBroker().start()
    migrate.upgrade(fresh_pg_database)
    master_key = base64.b64encode(secrets.token_bytes(32)).decode()
    ports = [free_port(), free_port()]
    replicas: list[subprocess.Popen[bytes]] = []
    try:
        for port in ports:  # started together (bootstrap and key creation tolerate the race)
            env = _replica_env(tmp_path, fresh_pg_database, broker, port)
            env["USER_ORG_MASTER_KEY"] = master_key
            replicas.append(
                subprocess.Popen(
                    [sys.executable, "-m", "userorg", "serve"],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        for port in ports:
            _wait(lambda port=port: _stream(port), 60, f"replica on {port} did not start")

        def roles() -> list[str]:
            return [(_stream(port) or {}).get("role", "?") for port in ports]

        _wait(lambda: sorted(roles()) == ["leader", "standby"], 15, f"roles: {roles()}")
        leader = roles().index("leader")
        standby = 1 - leader

        token = httpx.post(
            f"http://127.0.0.1:{ports[standby]}/v1/auth/login",
            json={"email": ADMIN[0], "password": ADMIN[1]},
            timeout=10,
        ).json()["accessToken"]
        headers = {"Authorization": f"Bearer {token}"}

        def change(port: int, count: int, *, targets: list[int]) -> str:
            slug = f"org-{uid()}"
            created = httpx.post(
                f"http://127.0.0.1:{port}/v1/orgs",
                json={"name": slug, "slug": slug, "billingOwnerEmail": f"b@{slug}.example.com"},
                headers=headers,
                timeout=10,
            )
            assert created.status_code == 201, created.text
            org_id: str = created.json()["orgId"]
            for i in range(count):
                response = httpx.patch(
                    f"http://127.0.0.1:{targets[i % len(targets)]}/v1/orgs/{org_id}",
                    json={"name": f"n{i}"},
                    headers=headers,
                    timeout=10,
                )
                assert response.status_code == 200, response.text
            return org_id

        def events_of(port: int, org_id: str) -> set[str]:
            body = httpx.get(
                f"http://127.0.0.1:{port}/v1/orgs/{org_id}/audit-events",
                params={"limit": 200},
                headers=headers,
                timeout=10,
            ).json()
            return {e["eventId"] for e in body["items"]}

        first_org = change(ports[standby], 6, targets=ports)  # written on both replicas
        first_ids = events_of(ports[standby], first_org)
        read_topic(
            broker.bootstrap,
            "audit.identity",
            until=lambda rs: first_ids <= {r.value["eventId"] for r in rs},
        )
        stats = [_stream(port) or {} for port in ports]
        assert stats[leader]["published"] >= len(first_ids)
        assert stats[standby]["published"] == 0
        assert stats[standby]["role"] == "standby"

        # Kill the leader (no clean shutdown, the lease is not released): the standby takes over
        # once the lease expires and publishes what was written meanwhile.
        replicas[leader].send_signal(signal.SIGKILL)
        replicas[leader].wait(10)
        second_org = change(ports[standby], 4, targets=[ports[standby]])
        second_ids = events_of(ports[standby], second_org)
        _wait(lambda: (_stream(ports[standby]) or {}).get("role") == "leader", 15, "no takeover")
        records = read_topic(
            broker.bootstrap,
            "audit.identity",
            until=lambda rs: second_ids <= {r.value["eventId"] for r in rs},
        )
        assert first_ids | second_ids <= {r.value["eventId"] for r in records}
        assert (_stream(ports[standby]) or {})["published"] >= len(second_ids)
    finally:
        for process in replicas:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(20)
                except subprocess.TimeoutExpired:
                    process.kill()
        broker.stop()
