"""Real admin-api processes (``userorg serve`` under uvicorn) sharing PostgreSQL and Redis."""

from __future__ import annotations

import base64
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.support import services
from tests.support.api import uid

ADMIN_EMAIL = "platform-admin@example.com"
ADMIN_PASSWORD = "Sturdy-Operator-Passphrase-9"


@dataclass
class Replica:
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def shared_environment(database_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("USER_ORG_")}
    env.update(
        USER_ORG_MODE="production",
        USER_ORG_DATABASE_URL=database_url,
        USER_ORG_REDIS_URL=services.REDIS_URL,
        USER_ORG_MASTER_KEY=base64.b64encode(secrets.token_bytes(32)).decode(),
        USER_ORG_KEY_PREFIX=f"userorg-replicas-{uid()}",
        USER_ORG_DATA_DIR=str(data_dir),
        USER_ORG_BOOTSTRAP_ADMIN_EMAIL=ADMIN_EMAIL,
        USER_ORG_BOOTSTRAP_ADMIN_PASSWORD=ADMIN_PASSWORD,
        USER_ORG_ARGON2_TIME_COST="1",
        USER_ORG_ARGON2_MEMORY_KIB="8192",
        USER_ORG_LOG_LEVEL="warning",
        # The audit stream to a local file: these processes test the gateway, not Kafka.
        USER_ORG_AUDIT_STREAM="file",
    )
    env.update(extra)
    return env


def wait_ready(
    url: str, process: subprocess.Popen[bytes], log_path: Path, timeout: float = 60
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {log_path.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server not ready after {timeout}s: {log_path.read_text()[-3000:]}")


def start_replica(
    env: dict[str, str], log_dir: Path, name: str, *, port: int | None = None
) -> Replica:
    port = port or services.free_port()
    log_path = log_dir / f"{name}.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "userorg", "serve"],
        env={**env, "USER_ORG_ADMIN_API_PORT": str(port)},
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
    )
    replica = Replica(port, process, log_path)
    try:
        wait_ready(replica.url, process, log_path)
    except BaseException:
        stop_replica(replica)
        raise
    return replica


def stop_replica(replica: Replica) -> None:
    if replica.process.poll() is None:
        replica.process.send_signal(signal.SIGTERM)
        try:
            replica.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            replica.process.kill()
            replica.process.wait()


@contextmanager
def replicas(
    database_url: str, data_dir: Path, count: int = 2, **extra: str
) -> Iterator[list[Replica]]:
    """Start ``count`` admin-api processes on one database and one Redis prefix."""
    from userorg import migrate

    migrate.upgrade(database_url)
    env = shared_environment(database_url, data_dir, **extra)
    started: list[Replica] = []
    try:
        for index in range(count):
            # One after the other: the first creates the platform admin and the signing key.
            started.append(start_replica(env, data_dir, f"replica-{index}"))
        yield started
    finally:
        for replica in started:
            stop_replica(replica)


def admin_token(client: httpx.Client) -> str:
    response = client.post(
        "/v1/auth/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["accessToken"]
    return token


def make_org_with_keys(client: httpx.Client, headers: dict[str, str], keys: int) -> dict[str, Any]:
    """An org, a service account with the Developer role and ``keys`` API keys."""
    org = client.post(
        "/v1/orgs",
        json={"name": "Replicas", "slug": f"rep-{uid()}", "billingOwnerEmail": "b@example.com"},
        headers=headers,
    )
    assert org.status_code == 201, org.text
    org_id = org.json()["orgId"]
    account = client.post(
        f"/v1/orgs/{org_id}/service-accounts",
        json={"name": f"sa-{uid()}", "roles": ["Developer"]},
        headers=headers,
    )
    assert account.status_code == 201, account.text
    account_id = account.json()["serviceAccountId"]
    issued = []
    for _ in range(keys):
        response = client.post(
            f"/v1/orgs/{org_id}/service-accounts/{account_id}/api-keys",
            json={"scopes": ["inference:invoke"]},
            headers=headers,
        )
        assert response.status_code == 201, response.text
        issued.append(response.json())
    return {"orgId": org_id, "serviceAccountId": account_id, "keys": issued}
