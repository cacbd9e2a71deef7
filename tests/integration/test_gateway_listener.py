"""USER_ORG_GATEWAY_PORT: the gateway routes answer only on their own listener (so a
NetworkPolicy on that port decides who may call them), and that listener answers nothing else."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager

from tests.conftest import base_settings
from tests.integration.test_cli import USERORG, _env, _wait_healthy
from tests.support.services import free_port
from userorg import migrate
from userorg.main import create_app
from userorg.middleware import GATEWAY_PATHS
from userorg.settings import Settings

WRONG_PORT = "This route is not served on this port"


@pytest.mark.parametrize("path", sorted(GATEWAY_PATHS))
async def test_gateway_routes_only_on_the_gateway_port(tmp_path: Path, path: str) -> None:
    settings = Settings(
        **base_settings("embedded", tmp_path, admin_api_port=8081, gateway_port=9555)
    )
    migrate.upgrade(settings.effective_database_url)
    app = create_app(settings)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with (
            httpx.AsyncClient(transport=transport, base_url="http://svc:8081") as admin,
            httpx.AsyncClient(transport=transport, base_url="http://svc:9555") as gateway,
        ):
            refused = await admin.post(path, json={})
            assert refused.status_code == 404
            assert refused.json()["code"] == "not_found"
            assert refused.json()["message"] == WRONG_PORT
            # On its own port the route reaches the application (whatever it answers).
            passed = await gateway.post(path, json={})
            assert passed.json().get("message") != WRONG_PORT
            # The gateway port serves nothing of the admin API ...
            admin_route = await gateway.get("/v1/orgs")
            assert admin_route.status_code == 404
            assert admin_route.json()["message"] == WRONG_PORT
            # ... but probes and metrics answer on both.
            for client in (admin, gateway):
                assert (await client.get("/healthz")).status_code == 200
                assert (await client.get("/readyz")).status_code == 200
                assert (await client.get("/metrics")).status_code == 200
            assert (await admin.get("/v1/orgs")).status_code == 401


def test_serve_listens_on_both_ports(tmp_path: Path) -> None:
    admin_port, gateway_port = free_port(), free_port()
    env = _env(
        tmp_path,
        USER_ORG_ADMIN_API_PORT=str(admin_port),
        USER_ORG_GATEWAY_PORT=str(gateway_port),
        USER_ORG_BOOTSTRAP_ADMIN_PASSWORD="Sturdy-Operator-Passphrase-9",
    )
    process = subprocess.Popen(
        [*USERORG, "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        _wait_healthy(admin_port, process)
        _wait_healthy(gateway_port, process)
        on_gateway = httpx.get(f"http://127.0.0.1:{gateway_port}/v1/orgs", timeout=5)
        assert on_gateway.status_code == 404
        assert on_gateway.json()["message"] == WRONG_PORT
        refused = httpx.post(f"http://127.0.0.1:{admin_port}/v1/authorize", json={}, timeout=5)
        assert refused.json()["message"] == WRONG_PORT
        assert httpx.get(f"http://127.0.0.1:{admin_port}/v1/orgs", timeout=5).status_code == 401
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
    assert process.returncode in {0, -15}, output


def test_gateway_port_must_differ(tmp_path: Path) -> None:
    env = _env(tmp_path, USER_ORG_GATEWAY_PORT="8081")
    result = subprocess.run(
        [*USERORG, "serve"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [
        "configuration error: USER_ORG_GATEWAY_PORT: must differ from USER_ORG_ADMIN_API_PORT "
        "and USER_ORG_RECONCILER_PORT"
    ]
