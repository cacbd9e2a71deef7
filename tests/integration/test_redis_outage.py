"""Redis goes away under load and comes back: two real `userorg serve` processes (production
mode) on a private `redis-server` that the test stops and restarts.

While Redis is down the service keeps answering correctly without its shared cache: allowed
keys stay allowed, a key revoked on one replica is denied on the other at once (the caches are
bypassed, every decision reads PostgreSQL), `/readyz` stays 200 and names Redis `degraded`.
When Redis returns, the replicas resubscribe without a restart: caches are trusted again and a
revocation reaches the other replica through the bus.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import services
from tests.support.replicas import (
    admin_token,
    make_org_with_keys,
    shared_environment,
    start_replica,
    stop_replica,
)
from userorg import migrate


class RedisServer:
    """A private redis-server (no persistence) on a fixed port, stoppable and restartable."""

    def __init__(self, work: Path) -> None:
        self.port = services.free_port()
        self.work = work
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed")
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.work)],
            stdout=(self.work / "redis.log").open("ab"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while not services.reachable(self.url, self.port):
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None


class Load:
    """Background clients: authorize allowed keys and read the org on both replicas."""

    def __init__(self, urls: list[str], org_id: str, secrets: list[str], token: str) -> None:
        self.urls, self.org_id, self.secrets, self.token = urls, org_id, secrets, token
        self.outcomes: Counter[str] = Counter()
        self.wrong: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(url,)) for url in urls]

    def _run(self, url: str) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        with httpx.Client(base_url=url, timeout=10) as client:
            index = 0
            while not self._stop.is_set():
                secret = self.secrets[index % len(self.secrets)]
                index += 1
                try:
                    answer = client.post(
                        "/v1/authorize",
                        json={"credential": secret, "action": "inference:invoke", "resource": "m"},
                    )
                    org = client.get(f"/v1/orgs/{self.org_id}", headers=headers)
                except httpx.HTTPError as error:
                    self.wrong.append(f"transport: {error!r}")
                    continue
                if answer.status_code != 200 or answer.json()["decision"] != "allow":
                    self.wrong.append(f"authorize {answer.status_code} {answer.text[:200]}")
                if org.status_code != 200:
                    self.wrong.append(f"get org {org.status_code} {org.text[:200]}")
                self.outcomes["ok"] += 1

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)


def _cache_hits(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    match = re.search(r'^userorg_gateway_cache_total\{result="hit"\} ([\d.e+]+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


def _first_deny(client: httpx.Client, secret: str, timeout: float) -> float | None:
    body = {"credential": secret, "action": "inference:invoke", "resource": "m"}
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if client.post("/v1/authorize", json=body).json()["decision"] == "deny":
            return time.perf_counter() - started
        time.sleep(0.02)
    return None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


def test_redis_outage_under_load(
    tmp_path: Path, fresh_pg_database: str, redis_server: RedisServer
) -> None:
    migrate.upgrade(fresh_pg_database)
    env = shared_environment(
        fresh_pg_database,
        tmp_path,
        USER_ORG_REDIS_URL=redis_server.url,
        # Long enough that a stale allow would show: only the bus (or bypassing) denies in time.
        USER_ORG_GATEWAY_CACHE_TTL_SECONDS="120",
    )
    a = start_replica(env, tmp_path, "replica-a")
    try:
        b = start_replica(env, tmp_path, "replica-b")
        try:
            _exercise(a.url, b.url, redis_server)
        finally:
            stop_replica(b)
    finally:
        stop_replica(a)


def _exercise(url_a: str, url_b: str, redis_server: RedisServer) -> None:
    with (
        httpx.Client(base_url=url_a, timeout=30) as on_a,
        httpx.Client(base_url=url_b, timeout=30) as on_b,
    ):
        token = admin_token(on_a)
        headers = {"Authorization": f"Bearer {token}"}
        setup = make_org_with_keys(on_a, headers, keys=6)
        org_id, keys = setup["orgId"], setup["keys"]
        steady = [key["secret"] for key in keys[:3]]
        with Load([url_a, url_b], org_id, steady, token) as load:
            time.sleep(1.0)
            assert load.outcomes["ok"] > 0
            assert on_b.get("/readyz").json()["checks"]["redis"]["status"] == "up"

            # Redis goes away under load.
            redis_server.stop()
            before = load.outcomes["ok"]
            ready = on_a.get("/readyz")
            assert ready.status_code == 200, ready.text
            redis_check = ready.json()["checks"]["redis"]
            assert redis_check["status"] == "degraded"
            assert "rate limits" in redis_check["impact"]
            assert 'userorg_dependency_up{dependency="redis"} 0.0' in on_a.get("/metrics").text
            # A key cached as allowed on B, revoked on A: B denies at once (no stale cache).
            victim = keys[3]
            body = {"credential": victim["secret"], "action": "inference:invoke", "resource": "m"}
            assert on_b.post("/v1/authorize", json=body).json()["decision"] == "allow"
            revoked = on_a.delete(
                f"/v1/orgs/{org_id}/api-keys/{victim['apiKeyId']}", headers=headers
            )
            assert revoked.status_code == 204, revoked.text
            assert _first_deny(on_b, victim["secret"], timeout=1.0) is not None
            # Mutations work too (rate limits fall back to the process).
            renamed = on_a.patch(f"/v1/orgs/{org_id}", json={"name": "Renamed"}, headers={
                **headers, "If-Match": on_a.get(f"/v1/orgs/{org_id}", headers=headers).headers["ETag"]
            })  # fmt: skip
            assert renamed.status_code == 200, renamed.text
            time.sleep(2.0)
            assert load.outcomes["ok"] > before + 10  # still serving under load

            # Redis returns on the same port: no restart of the service.
            redis_server.start()
            deadline = time.monotonic() + 30
            while True:
                checks = [
                    c.get("/readyz").json()["checks"]["redis"]["status"] for c in (on_a, on_b)
                ]
                if checks == ["up", "up"]:
                    break
                assert time.monotonic() < deadline, checks
                time.sleep(0.2)
            time.sleep(1.0)
        assert load.wrong == [], load.wrong[:5]

        # The caches are trusted again (hits grow) and the bus carries revocations again.
        target = keys[4]
        body = {"credential": target["secret"], "action": "inference:invoke", "resource": "m"}
        deadline = time.monotonic() + 20
        while True:
            hits = _cache_hits(url_b)
            for _ in range(3):
                assert on_b.post("/v1/authorize", json=body).json()["decision"] == "allow"
            if _cache_hits(url_b) > hits:
                break
            assert time.monotonic() < deadline, "replica B never trusted its cache again"
            time.sleep(0.5)
        revoked = on_a.delete(f"/v1/orgs/{org_id}/api-keys/{target['apiKeyId']}", headers=headers)
        assert revoked.status_code == 204
        delay = _first_deny(on_b, target["secret"], timeout=5.0)
        assert delay is not None and delay < 1.0, delay
