"""Wrong settings in production mode, with the real `userorg serve`: a required dependency that
is missing or unusable stops the start with exit code 2 and one line on stderr; an optional one
(Redis, the Kafka audit stream) lets it start, and `/readyz` names it. Never a silent fallback
to embedded mode."""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import services
from tests.support.openbao import BaoServer
from userorg import migrate

USERORG = [sys.executable, "-m", "userorg", "serve"]


@pytest.fixture(scope="module")
def migrated_database() -> Iterator[str]:
    services.require_postgres()
    url: str = services.run_in_thread(services.create_database)
    migrate.upgrade(url)
    yield url
    services.run_in_thread(lambda: services.drop_database(url))


def _env(database_url: str, data_dir: Path, **changes: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("USER_ORG_")}
    env.update(
        USER_ORG_MODE="production",
        USER_ORG_DATABASE_URL=database_url,
        USER_ORG_REDIS_URL=services.REDIS_URL,
        USER_ORG_MASTER_KEY=base64.b64encode(secrets.token_bytes(32)).decode(),
        USER_ORG_KEY_PREFIX=f"bad-settings-{secrets.token_hex(4)}",
        USER_ORG_DATA_DIR=str(data_dir),
        USER_ORG_AUDIT_STREAM="file",
        USER_ORG_LOG_LEVEL="warning",
        USER_ORG_ADMIN_API_PORT=str(services.free_port()),
    )
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def _fails_with_one_line(env: dict[str, str], *expected: str) -> str:
    result = subprocess.run(USERORG, env=env, capture_output=True, text=True, timeout=60)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:], result.stdout[-2000:])
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    for fragment in expected:
        assert fragment in lines[0], lines[0]
    return lines[0]


def _starts(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    url = f"http://127.0.0.1:{env['USER_ORG_ADMIN_API_PORT']}"
    log = Path(env["USER_ORG_DATA_DIR"]) / "serve.log"
    process = subprocess.Popen(USERORG, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()[-3000:]
        try:
            httpx.get(f"{url}/healthz", timeout=1)
            return process, url
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise AssertionError(log.read_text()[-3000:])


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _readiness_until(url: str, check: str, status: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = httpx.get(f"{url}/readyz", timeout=10).json()
        if body["checks"].get(check, {}).get("status") == status:
            return body
        time.sleep(0.3)
    raise AssertionError(body)


def test_required_settings_fail_fast_with_one_line(tmp_path: Path, migrated_database: str) -> None:
    env = _env(migrated_database, tmp_path, USER_ORG_DATABASE_URL=None)
    _fails_with_one_line(env, "USER_ORG_DATABASE_URL", "postgresql://")
    env = _env(migrated_database, tmp_path, USER_ORG_REDIS_URL=None)
    _fails_with_one_line(env, "USER_ORG_REDIS_URL", "redis://")
    unreachable = f"postgresql://postgres@127.0.0.1:{services.free_port()}/nowhere"
    env = _env(unreachable, tmp_path)
    _fails_with_one_line(env, "cannot reach the database", "USER_ORG_DATABASE_URL", "Refused")
    env = _env(migrated_database, tmp_path, USER_ORG_AUDIT_STREAM="kafka",
               USER_ORG_KAFKA_BOOTSTRAP_SERVERS="kafka-without-port")  # fmt: skip
    _fails_with_one_line(env, "USER_ORG_KAFKA_BOOTSTRAP_SERVERS", "not host:port")
    env = _env(migrated_database, tmp_path, USER_ORG_AUDIT_STREAM="kafka",
               USER_ORG_KAFKA_BOOTSTRAP_SERVERS=None)  # fmt: skip
    _fails_with_one_line(env, "USER_ORG_KAFKA_BOOTSTRAP_SERVERS")
    # Nothing fell back to embedded mode: no SQLite database was created.
    assert not list(tmp_path.rglob("*.db"))


def test_invalid_vault_token_fails_fast(
    tmp_path: Path, migrated_database: str, bao: BaoServer
) -> None:
    for store in ({"USER_ORG_KEYSTORE": "vault"}, {"USER_ORG_AUDIT_SIGNER": "vault"}):
        env = _env(migrated_database, tmp_path, USER_ORG_VAULT_ADDR=bao.address,
                   USER_ORG_VAULT_TOKEN="not-the-token", **store)  # fmt: skip
        _fails_with_one_line(env, "USER_ORG_VAULT_TOKEN", "refused the token")
    closed = f"http://127.0.0.1:{services.free_port()}"
    env = _env(migrated_database, tmp_path, USER_ORG_VAULT_ADDR=closed,
               USER_ORG_VAULT_TOKEN=bao.token, USER_ORG_AUDIT_SIGNER="vault")  # fmt: skip
    _fails_with_one_line(env, "cannot reach Vault", closed)


def test_optional_dependencies_down_start_and_readyz_names_them(
    tmp_path: Path, migrated_database: str
) -> None:
    services.require_redis()
    env = _env(
        migrated_database,
        tmp_path,
        USER_ORG_REDIS_URL=f"redis://127.0.0.1:{services.free_port()}/0",
        USER_ORG_AUDIT_STREAM="kafka",
        USER_ORG_KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{services.free_port()}",
    )
    process, url = _starts(env)
    try:
        body = _readiness_until(url, "redis", "degraded")
        assert httpx.get(f"{url}/readyz", timeout=10).status_code == 200
        assert body["checks"]["database"]["status"] == "up"
        assert "rate limits" in body["checks"]["redis"]["impact"]
        # The unreachable broker is named once the relay has tried to publish (bootstrap
        # writes audit events on the first start).
        stream = _readiness_until(url, "auditStream", "degraded", timeout=60)["checks"]
        assert stream["auditStream"]["status"] == "degraded"
        metrics = httpx.get(f"{url}/metrics", timeout=10).text
        assert 'userorg_dependency_up{dependency="redis"} 0.0' in metrics
    finally:
        _stop(process)
    assert not list(tmp_path.rglob("*.db"))
