"""Embedded mode across processes: two `userorg serve` processes on one data directory (as
`make run` runs the admin-api and the reconciler) see each other's invalidations through the
SQLite bus within a second, without waiting for the cache TTL."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support.replicas import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    admin_token,
    make_org_with_keys,
    start_replica,
    stop_replica,
)
from userorg.platform.bus import SqliteBus


def _embedded_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("USER_ORG_")}
    env.update(
        USER_ORG_MODE="embedded",
        USER_ORG_DATA_DIR=str(data_dir),
        USER_ORG_BOOTSTRAP_ADMIN_EMAIL=ADMIN_EMAIL,
        USER_ORG_BOOTSTRAP_ADMIN_PASSWORD=ADMIN_PASSWORD,
        USER_ORG_ARGON2_TIME_COST="1",
        USER_ORG_ARGON2_MEMORY_KIB="8192",
        USER_ORG_LOG_LEVEL="warning",
        # Long: a stale allow would last two minutes without the bus.
        USER_ORG_GATEWAY_CACHE_TTL_SECONDS="120",
    )
    return env


def test_revocation_crosses_embedded_processes(tmp_path: Path) -> None:
    env = _embedded_env(tmp_path / "data")
    a = start_replica(env, tmp_path, "embedded-a")
    try:
        b = start_replica(env, tmp_path, "embedded-b")
        try:
            with (
                httpx.Client(base_url=a.url, timeout=30) as on_a,
                httpx.Client(base_url=b.url, timeout=30) as on_b,
            ):
                headers = {"Authorization": f"Bearer {admin_token(on_a)}"}
                setup = make_org_with_keys(on_a, headers, keys=2)
                for key in setup["keys"]:
                    body = {"credential": key["secret"], "action": "inference:invoke",
                            "resource": "m"}  # fmt: skip
                    for _ in range(3):  # cached as allowed on B
                        assert on_b.post("/v1/authorize", json=body).json()["decision"] == "allow"
                    revoked = on_a.delete(
                        f"/v1/orgs/{setup['orgId']}/api-keys/{key['apiKeyId']}", headers=headers
                    )
                    assert revoked.status_code == 204
                    started = time.perf_counter()
                    while on_b.post("/v1/authorize", json=body).json()["decision"] != "deny":
                        assert time.perf_counter() - started < 1.0, "B kept a stale allow"
                        time.sleep(0.02)
        finally:
            stop_replica(b)
    finally:
        stop_replica(a)


PUBLISHER = """
import asyncio, sys
from pathlib import Path
from userorg.platform.bus import SqliteBus

async def main():
    bus = SqliteBus(Path(sys.argv[1]))
    await bus.start()
    await bus.publish("authz", {"kind": "key", "id": sys.argv[2]})
    await bus.stop()

asyncio.run(main())
"""


async def test_sqlite_bus_delivers_between_processes_not_to_the_sender(tmp_path: Path) -> None:
    path = tmp_path / "bus.db"
    received: list[dict[str, str]] = []
    bus = SqliteBus(path, poll_seconds=0.05)
    bus.subscribe("authz", received.append)
    await bus.start()
    try:
        assert bus.healthy
        await bus.publish("authz", {"kind": "key", "id": "own"})
        assert received == [{"kind": "key", "id": "own"}]  # local delivery, once
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", PUBLISHER, str(path), "from-another-process",
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        _, stderr = await process.communicate()
        assert process.returncode == 0, stderr.decode()
        deadline = time.monotonic() + 2
        while len(received) < 2:
            assert time.monotonic() < deadline, received
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)
        assert received == [
            {"kind": "key", "id": "own"},
            {"kind": "key", "id": "from-another-process"},
        ]
    finally:
        await bus.stop()
