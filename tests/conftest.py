"""Fixtures: the service running in each mode, with real PostgreSQL and Redis in production mode."""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from tests.support import services
from tests.support.api import STRONG_PASSWORD, Env, uid
from tests.support.kafka import TansuBroker
from tests.support.openbao import BaoServer
from tests.support.receiver import WebhookReceiver
from userorg import migrate
from userorg.main import create_app
from userorg.settings import Settings
from userorg.telemetry.logging import configure_logging

WEBHOOK_SECRET = "test-webhook-secret"
# Run the production-mode API tests against `make dev-up`'s stack: the path of its env file
# (.env.dev). Its database, Redis, Kafka, OpenBao and bootstrap admin replace the test
# services (tests/integration/test_devstack.py sets it for a subprocess run of the API tests).
DEV_ENV_FILE = os.environ.get("USER_ORG_TEST_DEV_ENV_FILE")
_DEV_ENV_IGNORED = {
    "USER_ORG_MODE",  # the fixture sets it (production)
    "USER_ORG_LOG_FORMAT",
    "USER_ORG_LOG_LEVEL",
    "USER_ORG_KEY_PREFIX",
}


def dev_stack_settings(path: str) -> dict[str, Any]:
    """Settings overrides from a dev-stack env file (``USER_ORG_X=value`` lines)."""
    values: dict[str, Any] = {}
    for line in Path(path).read_text().splitlines():
        key, sep, value = line.partition("=")
        if line.startswith("#") or not sep or key in _DEV_ENV_IGNORED:
            continue
        if key.startswith("USER_ORG_"):
            values[key.removeprefix("USER_ORG_").lower()] = value
    return values


DECLARATIVE_WEBHOOK_SECRET = "test-declarative-webhook-secret"
FAST_ARGON2 = {"argon2_time_cost": 1, "argon2_memory_kib": 8192}


def base_settings(mode: str, data_dir: Path, **overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "mode": mode,
        "data_dir": data_dir,
        "bootstrap_admin_email": "platform-admin@example.com",
        "bootstrap_admin_password": "Sturdy-Operator-Passphrase-9",
        "log_level": "warning",
        "audit_relay_poll_seconds": 0.1,
        "audit_relay_lease_seconds": 3,
        # The suite signs in far more often, from one address, than any person would; the
        # login rate limits are exercised by their own tests.
        "login_rate_per_ip_per_minute": 1_000_000,
        "login_rate_per_account_per_minute": 1_000_000,
        # Likewise the per-principal mutation and invitation budgets (tests/api/test_abuse_limits).
        "mutation_rate_per_principal_per_minute": 1_000_000,
        "invite_rate_per_principal_per_hour": 1_000_000,
        "invite_rate_per_org_per_hour": 1_000_000,
        **FAST_ARGON2,
    }
    if mode == "production":
        values.update(
            redis_url=services.REDIS_URL,
            master_key=base64.b64encode(secrets.token_bytes(32)).decode(),
            key_prefix=f"userorg-test-{uid()}",
            # Tests that need the Kafka stream ask for it (the ``env`` fixture does).
            audit_stream="file",
        )
    values.update(overrides)
    return values


@pytest.fixture(scope="session")
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver(WEBHOOK_SECRET).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[TansuBroker]:
    """A real Kafka-compatible broker (tansu) for the whole run."""
    broker = TansuBroker().start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def bao() -> Iterator[BaoServer]:
    """A real OpenBao dev server with the Transit engine, for the whole run."""
    server = BaoServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for the whole run, dropped at the end."""
    services.require_postgres()
    url: str = services.run_in_thread(services.create_database)
    yield url
    services.run_in_thread(lambda: services.drop_database(url))


@pytest.fixture
def fresh_pg_database() -> Iterator[str]:
    """A database of the test's own (a service with its own master key needs one)."""
    services.require_postgres()
    url: str = services.run_in_thread(services.create_database)
    yield url
    services.run_in_thread(lambda: services.drop_database(url))


async def start_env(
    mode: str, settings_values: dict[str, Any], receiver: WebhookReceiver
) -> tuple[Env, LifespanManager]:
    settings = Settings(**settings_values)
    await asyncio.to_thread(migrate.upgrade, settings.effective_database_url)
    app = create_app(settings)
    manager = LifespanManager(app, startup_timeout=60, shutdown_timeout=60)
    await manager.__aenter__()
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=manager.app), base_url="http://testserver"
    )
    env = Env(
        mode=mode,
        app=app,
        settings=settings,
        client=client,
        receiver=receiver,
        admin_email=str(settings.bootstrap_admin_email),
        admin_password=settings.bootstrap_admin_password.get_secret_value()
        if settings.bootstrap_admin_password
        else "",
    )
    return env, manager


@pytest.fixture(scope="session", params=["embedded", "production"])
async def env(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    receiver: WebhookReceiver,
) -> AsyncIterator[Env]:
    """The service in one mode. API tests that take ``env`` run once per mode."""
    mode = request.param
    data_dir = tmp_path_factory.mktemp(f"userorg-{mode}")
    overrides: dict[str, Any] = {
        "notifier": "webhook",
        "notify_webhook_url": receiver.url,
        "notify_webhook_secret": WEBHOOK_SECRET,
        "notify_retry_base_seconds": 0.05,
        "notify_poll_interval_seconds": 0.1,
        # Gateway usage and denial audits are flushed by the tests that look at them, never
        # in the background under another test that counts audit rows.
        "gateway_flush_interval_seconds": 300,
        "declarative_webhook_secret": DECLARATIVE_WEBHOOK_SECRET,
        "declarative_allow_local_repos": True,
        "declarative_work_poll_seconds": 0.2,
    }
    if mode == "production" and DEV_ENV_FILE:
        overrides.update(dev_stack_settings(DEV_ENV_FILE), audit_stream="kafka")
    elif mode == "production":
        services.require_redis()
        overrides["database_url"] = request.getfixturevalue("pg_database")
        broker: TansuBroker = request.getfixturevalue("kafka_broker")
        overrides["audit_stream"] = "kafka"
        overrides["kafka_bootstrap_servers"] = broker.bootstrap
    environment, manager = await start_env(
        mode, base_settings(mode, data_dir, **overrides), receiver
    )
    try:
        yield environment
    finally:
        await environment.client.aclose()
        await manager.__aexit__(None, None, None)


@pytest.fixture
def strong_password() -> str:
    return STRONG_PASSWORD


def pytest_configure(config: pytest.Config) -> None:
    configure_logging("warning", "json")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Fail loudly, rather than pass vacuously, if nothing was collected."""
    if not items and os.environ.get("CI"):
        raise pytest.UsageError("no tests collected")
