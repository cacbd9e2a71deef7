"""`make dev-up` / `make dev-down` (the `userorg dev` commands behind them): a real local
production-mode stack, the service running against it, and nothing left running afterwards."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.integration.test_cli import USERORG, _wait_healthy
from tests.support import services
from tests.support.api import uid
from userorg import devstack

ROOT = Path(__file__).resolve().parents[2]
API_SUBSET = [
    "tests/api/test_orgs.py",
    "tests/api/test_users_invites.py",
    "tests/api/test_service_accounts.py",
    "tests/api/test_api_keys.py",
]


@contextlib.asynccontextmanager
async def _dev_database(url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(url)
    try:
        yield connection
    finally:
        await connection.close()


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("USER_ORG_")}
    env.update(extra)
    return env


def _read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    return values


def _dev(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*USERORG, "dev", *args], env=_clean_env(), capture_output=True, text=True, timeout=240
    )


def _assert_all_gone(state: dict[str, Any]) -> None:
    for name, service in state["services"].items():
        assert not devstack.pid_alive(service["pid"]), f"{name} still runs"
        if service.get("processGroup", True):
            assert devstack.group_members(service["pid"]) == [], f"{name}'s group still runs"
        assert not devstack.port_open(service["port"]), f"{name}'s port still answers"


async def _database_exists(name: str) -> bool:
    connection = await asyncpg.connect(services.POSTGRES_URL)
    try:
        return bool(await connection.fetchval("SELECT 1 FROM pg_database WHERE datname=$1", name))
    finally:
        await connection.close()


@pytest.fixture
def stack_dir() -> Iterator[Path]:
    # Not pytest's tmp_path (mode 0700): a private PostgreSQL runs as the postgres user when
    # the tests run as root, and must be able to reach its data directory.
    directory = Path(tempfile.mkdtemp(prefix="userorg-devstack-"))
    directory.chmod(0o755)
    yield directory
    _dev("down", "--state-dir", str(directory / "dev"), "--purge")  # what a failed test left
    shutil.rmtree(directory, ignore_errors=True)


async def test_dev_up_run_smoke_then_dev_down_leaves_nothing(stack_dir: Path) -> None:
    services.require_postgres()
    machine_redis = services.reachable(services.REDIS_URL, 6379)
    state_dir, env_file = stack_dir / "dev", stack_dir / ".env.dev"
    database = f"userorg_devstack_{uid()}"
    started = _dev(
        "up", "--state-dir", str(state_dir), "--env-file", str(env_file), "--database", database
    )
    assert started.returncode == 0, started.stderr + started.stdout
    state = json.loads((state_dir / "state.json").read_text())
    assert set(state["services"]) == {"redis", "tansu", "openbao"}
    assert state["postgres"]["mode"] == "shared"
    for service in state["services"].values():
        assert devstack.pid_alive(service["pid"])
        assert (
            state_dir / f"{next(k for k, v in state['services'].items() if v == service)}.pid"
        ).exists()
    # Its Redis is its own, not the machine's.
    assert state["services"]["redis"]["port"] != 6379

    values = _read_env_file(env_file)
    assert values["USER_ORG_MODE"] == "production"
    assert values["USER_ORG_DATABASE_URL"].endswith(f"/{database}")
    assert (
        values["USER_ORG_REDIS_URL"] == f"redis://127.0.0.1:{state['services']['redis']['port']}/0"
    )
    assert oct(env_file.stat().st_mode & 0o777) == "0o600"

    # The broker has the topics; OpenBao has Transit and the keys.
    tansu = devstack.tansu_binary()
    listed = subprocess.run(
        [
            str(tansu),
            "topic",
            "list",
            "--broker",
            f"tcp://127.0.0.1:{state['services']['tansu']['port']}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    for topic in devstack.TOPICS:
        assert topic in listed.stdout
    token = json.loads((state_dir / "secrets.json").read_text())["openbaoToken"]
    bao = f"http://127.0.0.1:{state['services']['openbao']['port']}"
    for key, key_type in devstack.TRANSIT_KEYS.items():
        info = httpx.get(f"{bao}/v1/transit/keys/{key}", headers={"X-Vault-Token": token})
        assert info.status_code == 200
        assert info.json()["data"]["type"] == key_type

    # A second dev-up changes nothing.
    again = _dev("up", "--state-dir", str(state_dir), "--env-file", str(env_file))
    assert again.returncode == 0 and "already running" in again.stdout

    # `make run` = both processes with the env file: a production-mode smoke test.
    admin_port, reconciler_port = services.free_port(), services.free_port()
    # Output to a file, not a pipe: an unread pipe fills up and blocks the child's logging.
    run_log = stack_dir / "run.log"
    with run_log.open("w") as log_file:
        run = subprocess.Popen(
            [*USERORG, "run"],
            env=_clean_env(
                **values,
                USER_ORG_ADMIN_API_PORT=str(admin_port),
                USER_ORG_RECONCILER_PORT=str(reconciler_port),
                USER_ORG_LOG_LEVEL="warning",
            ),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        _wait_healthy(admin_port, run, timeout=60)
        _wait_healthy(reconciler_port, run, timeout=60)
        base = f"http://127.0.0.1:{admin_port}"
        login = httpx.post(
            f"{base}/v1/auth/login",
            json={
                "email": values["USER_ORG_BOOTSTRAP_ADMIN_EMAIL"],
                "password": values["USER_ORG_BOOTSTRAP_ADMIN_PASSWORD"],
            },
            timeout=30,
        )
        assert login.status_code == 200, login.text
        headers = {"Authorization": f"Bearer {login.json()['accessToken']}"}
        slug = f"dev-{uid()}"
        created = httpx.post(
            f"{base}/v1/orgs",
            json={"name": "Dev Org", "slug": slug, "billingOwnerEmail": f"b@{slug}.example.com"},
            headers=headers,
            timeout=30,
        )
        assert created.status_code == 201, created.text
        ready = httpx.get(f"{base}/readyz", timeout=10)
        assert ready.status_code == 200
        checks = ready.json()["checks"]
        assert {"database", "redis"} <= set(checks)
        assert all(check["status"] == "up" for check in checks.values())
        assert (
            httpx.get(f"http://127.0.0.1:{reconciler_port}/readyz", timeout=10).status_code == 200
        )
    finally:
        run.terminate()
        run.wait(timeout=60)
    output = run_log.read_text()
    # uvicorn re-raises SIGTERM after a graceful stop; `userorg run` passes its code on.
    assert run.returncode in {0, 15, -15}, output
    assert "Traceback" not in output

    # The API suite's production-mode tests against the stack (a representative subset: orgs,
    # members and invites, service accounts, API keys and the gateway), through the switch in
    # tests/conftest.py: the stack's database, Redis, Kafka and OpenBao replace the test ones.
    suite = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider",
         "-k", "production", *API_SUBSET],
        env=_clean_env(USER_ORG_TEST_DEV_ENV_FILE=str(env_file)),
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    summary = suite.stdout.strip().splitlines()[-1] if suite.stdout.strip() else suite.stderr
    assert suite.returncode == 0, suite.stdout[-4000:] + suite.stderr[-2000:]
    passed = re.search(r"(\d+) passed", summary)
    assert passed and int(passed.group(1)) >= 30, summary
    assert "skipped" not in summary, summary
    async with _dev_database(values["USER_ORG_DATABASE_URL"]) as connection:
        # They ran against the stack's database: their orgs are there.
        assert await connection.fetchval("SELECT count(*) FROM organizations") > 10

    stopped = _dev("down", "--state-dir", str(state_dir), "--purge")
    assert stopped.returncode == 0, stopped.stderr
    assert "stopped: openbao, tansu, redis" in stopped.stdout
    _assert_all_gone(state)
    assert not env_file.exists()
    assert not state_dir.exists()
    assert not await _database_exists(database)
    # The machine's own Redis was never touched.
    assert services.reachable(services.REDIS_URL, 6379) == machine_redis


def test_private_postgres_cluster(stack_dir: Path) -> None:
    state_dir, env_file = stack_dir / "dev", stack_dir / ".env.dev"
    started = _dev(
        "up", "--state-dir", str(state_dir), "--env-file", str(env_file), "--private-postgres"
    )
    assert started.returncode == 0, started.stderr + started.stdout
    state = json.loads((state_dir / "state.json").read_text())
    assert state["postgres"]["mode"] == "private"
    port = state["services"]["postgres"]["port"]
    assert port != 5432
    values = _read_env_file(env_file)
    assert values["USER_ORG_DATABASE_URL"] == f"postgresql://postgres@127.0.0.1:{port}/userorg_dev"
    status = _dev("status", "--state-dir", str(state_dir))
    assert status.returncode == 0
    assert all(f"{name:<9} running" in status.stdout for name in state["services"])

    stopped = _dev("down", "--state-dir", str(state_dir), "--purge")
    assert stopped.returncode == 0, stopped.stderr
    assert "postgres" in stopped.stdout
    _assert_all_gone(state)
    assert _dev("status", "--state-dir", str(state_dir)).returncode == 1


def test_bad_input_fails_with_one_line_and_starts_nothing(stack_dir: Path) -> None:
    state_dir = stack_dir / "dev"
    result = _dev("up", "--state-dir", str(state_dir), "--database", "Bad-Name;drop")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "dev-up failed: database name 'Bad-Name;drop': use lower-case letters, digits and "
        "underscores"
    ]
    assert not state_dir.exists()
    assert _dev("down", "--state-dir", str(state_dir)).stdout.strip() == "nothing was running"
