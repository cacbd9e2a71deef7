"""Sign-in throughput: password logins/s (Argon2id-bound) and OAuth2 client-credential
grants/s, against the admin-api served by uvicorn (one process, embedded mode, default
Argon2id cost), compared with Keycloak's published sizing: 15 password logins/s and 120
client-credential grants/s per vCPU.

Rates are reported per wall-clock second and per CPU-second of the server process (the
"per vCPU" figure; the load generator runs on the same 2-core machine).
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ADMIN_EMAIL = "bench-admin@example.com"
ADMIN_PASSWORD = "Bench-Operator-Passphrase-9"
USER_PASSWORD = "Correct-Horse-Battery-Staple-42"
DURATION = float(os.environ.get("BENCH_AUTH_SECONDS", "8"))
KEYCLOAK_LOGINS_PER_VCPU = 15
KEYCLOAK_GRANTS_PER_VCPU = 120


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


async def _wait_ready(client: httpx.AsyncClient) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if (await client.get("/readyz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.2)
    raise RuntimeError("server did not become ready")


async def _setup(client: httpx.AsyncClient) -> tuple[str, tuple[str, str]]:
    login = await client.post(
        "/v1/auth/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
    )
    admin = {"Authorization": f"Bearer {login.json()['accessToken']}"}
    org = (
        await client.post(
            "/v1/orgs",
            json={"name": "Bench", "slug": "bench", "billingOwnerEmail": "b@bench.example.com"},
            headers=admin,
        )
    ).json()
    invite = await client.post(
        f"/v1/orgs/{org['orgId']}/invites",
        json={"email": "user@bench.example.com", "roles": ["Developer"]},
        headers=admin,
    )
    assert invite.status_code == 202, invite.text
    account = (
        await client.post(
            f"/v1/orgs/{org['orgId']}/service-accounts",
            json={"name": "bench-bot", "roles": ["Developer"]},
            headers=admin,
        )
    ).json()
    secret = (
        await client.post(
            f"/v1/orgs/{org['orgId']}/service-accounts/{account['serviceAccountId']}/client-secret",
            headers=admin,
        )
    ).json()
    return admin["Authorization"], (secret["clientId"], secret["clientSecret"])


async def _run(
    client: httpx.AsyncClient, pid: int, concurrency: int, request: Any
) -> tuple[int, float, float]:
    done = 0
    errors = 0
    stop = time.monotonic() + DURATION

    async def worker() -> None:
        nonlocal done, errors
        while time.monotonic() < stop:
            response = await request()
            if response.status_code == 200:
                done += 1
            else:
                errors += 1

    cpu_before = _cpu_seconds(pid)
    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.monotonic() - started
    cpu = _cpu_seconds(pid) - cpu_before
    if errors:
        print(f"  ({errors} non-200 answers)")
    return done, wall, cpu


async def _bench(port: int, pid: int) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        await _wait_ready(client)
        _admin, client_auth = await _setup(client)
        # The invitee's account: accept through the admin-created invite is notifier-bound;
        # the platform admin signs in instead (same Argon2id cost and session writes).

        async def login() -> httpx.Response:
            return await client.post(
                "/v1/auth/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
            )

        async def grant() -> httpx.Response:
            return await client.post(
                "/oauth2/token", data={"grant_type": "client_credentials"}, auth=client_auth
            )

        for name, call, concurrency, keycloak in (
            ("password logins", login, 4, KEYCLOAK_LOGINS_PER_VCPU),
            ("client-credential grants", grant, 8, KEYCLOAK_GRANTS_PER_VCPU),
        ):
            done, wall, cpu = await _run(client, pid, concurrency, call)
            per_cpu = done / cpu if cpu else float("nan")
            print(
                f"{name}: {done / wall:.0f}/s wall, {per_cpu:.0f}/s per server CPU-second "
                f"(Keycloak sizing: {keycloak}/s per vCPU -> {per_cpu / keycloak:.1f}x)"
            )


def main() -> None:
    port = _free_port()
    with tempfile.TemporaryDirectory() as data_dir:
        env = {
            **os.environ,
            "USER_ORG_DATA_DIR": data_dir,
            "USER_ORG_BOOTSTRAP_ADMIN_EMAIL": ADMIN_EMAIL,
            "USER_ORG_BOOTSTRAP_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "USER_ORG_LOG_LEVEL": "error",
            "USER_ORG_LOGIN_RATE_PER_IP_PER_MINUTE": "100000000",
            "USER_ORG_LOGIN_RATE_PER_ACCOUNT_PER_MINUTE": "100000000",
            "USER_ORG_ADMIN_API_PORT": str(port),
        }
        subprocess.run(
            [sys.executable, "-m", "userorg", "migrate"], env=env, check=True, capture_output=True
        )
        server = subprocess.Popen(
            [sys.executable, "-m", "userorg", "serve"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            asyncio.run(_bench(port, server.pid))
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
