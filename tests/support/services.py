"""Reaching the machine's real services. With CI=true an unreachable service fails the test."""

from __future__ import annotations

import os
import socket
import uuid
from urllib.parse import urlparse

import pytest

CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
POSTGRES_URL = os.environ.get(
    "USER_ORG_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("USER_ORG_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def reachable(url: str, default_port: int) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection(
            (parsed.hostname or "127.0.0.1", parsed.port or default_port), 1
        ):
            return True
    except OSError:
        return False


def require(name: str, url: str, default_port: int) -> None:
    if reachable(url, default_port):
        return
    message = f"{name} is not reachable at {url}"
    if CI:
        pytest.fail(message + " (CI=true: services must be up)")
    pytest.skip(message)


def require_postgres() -> None:
    require("PostgreSQL", POSTGRES_URL, 5432)


def require_redis() -> None:
    require("Redis", REDIS_URL, 6379)


async def create_database(prefix: str = "userorg_test") -> str:
    """Create a fresh database on the test server; returns its URL."""
    import asyncpg

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    connection = await asyncpg.connect(POSTGRES_URL)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    parsed = urlparse(POSTGRES_URL)
    return parsed._replace(path=f"/{name}").geturl()


async def drop_database(url: str) -> None:
    import asyncpg

    name = urlparse(url).path.lstrip("/")
    connection = await asyncpg.connect(POSTGRES_URL)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_in_thread(coro_factory):  # type: ignore[no-untyped-def]
    """Run a coroutine on its own loop in a worker thread (usable while a loop is running)."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(coro_factory())).result()
