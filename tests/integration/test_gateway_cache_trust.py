"""When the gateway may trust its cache: a replica that loses its Redis subscription stops
trusting it (reads the database) until it resubscribes, and a TTL bounds staleness when a
change bypasses the bus."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

from sqlalchemy import text

from tests.conftest import WEBHOOK_SECRET, base_settings, start_env
from tests.support import services
from tests.support.api import Env
from tests.support.keys import authorize, issue, setup_account
from tests.support.proxy import TcpProxy
from tests.support.receiver import WebhookReceiver


def _notify(receiver: WebhookReceiver) -> dict[str, object]:
    return {
        "notifier": "webhook",
        "notify_webhook_url": receiver.url,
        "notify_webhook_secret": WEBHOOK_SECRET,
        "notify_poll_interval_seconds": 0.1,
    }


async def _set_status_behind_the_bus(env: Env, key_id: str, status: str) -> None:
    """A change the invalidation bus never hears of (plain SQL on a connection)."""
    async with env.container.engine.begin() as connection:
        await connection.execute(
            text("UPDATE api_keys SET status = :s WHERE id = :id"),
            {
                "s": status,
                "id": uuid.UUID(key_id) if env.mode == "production" else uuid.UUID(key_id).hex,
            },
        )


async def _wait(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def test_lost_subscription_means_no_trust(
    tmp_path: Path, fresh_pg_database: str, receiver: WebhookReceiver
) -> None:
    services.require_redis()
    redis = urlparse(services.REDIS_URL)
    proxy = await TcpProxy(redis.hostname or "127.0.0.1", redis.port or 6379).start()
    settings = base_settings(
        "production",
        tmp_path,
        database_url=fresh_pg_database,
        redis_url=f"redis://127.0.0.1:{proxy.port}/0",
        gateway_cache_ttl_seconds=600,
        **_notify(receiver),
    )
    env, manager = await start_env("production", settings, receiver)
    try:
        setup = await setup_account(env)
        created = await issue(env, setup)
        secret, key_id = created["secret"], created["apiKeyId"]
        assert (await authorize(env, secret))["decision"] == "allow"
        await _set_status_behind_the_bus(env, key_id, "revoked")
        # Healthy bus: the cache is trusted, so the unannounced change is not seen yet.
        assert (await authorize(env, secret))["decision"] == "allow"

        await proxy.cut()
        bus = env.container.bus
        await _wait(lambda: not bus.healthy)
        # Subscription lost: every decision reads the database.
        assert (await authorize(env, secret))["reason"] == "key_revoked"
        await _set_status_behind_the_bus(env, key_id, "active")
        assert (await authorize(env, secret))["decision"] == "allow"
        await _set_status_behind_the_bus(env, key_id, "revoked")
        assert (await authorize(env, secret))["reason"] == "key_revoked"
        assert env.container.gateway._keys == {}

        await proxy.restore()
        await _wait(lambda: bus.healthy)
        assert (await authorize(env, secret))["reason"] == "key_revoked"
    finally:
        await env.client.aclose()
        await manager.__aexit__(None, None, None)
        await proxy.cut()


async def test_ttl_bounds_staleness_of_unannounced_changes(
    tmp_path: Path, receiver: WebhookReceiver
) -> None:
    settings = base_settings(
        "embedded", tmp_path, gateway_cache_ttl_seconds=0.3, **_notify(receiver)
    )
    env, manager = await start_env("embedded", settings, receiver)
    try:
        setup = await setup_account(env)
        created = await issue(env, setup)
        assert (await authorize(env, created["secret"]))["decision"] == "allow"
        await _set_status_behind_the_bus(env, created["apiKeyId"], "revoked")
        started = time.monotonic()
        while (await authorize(env, created["secret"]))["decision"] == "allow":
            assert time.monotonic() - started < 5
        assert (await authorize(env, created["secret"]))["reason"] == "key_revoked"
    finally:
        await env.client.aclose()
        await manager.__aexit__(None, None, None)
