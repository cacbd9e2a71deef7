"""Every list and get endpoint, and `/v1/authorize` on a cache miss, on the scale data set.

`userorg seed-demo --scale` loads 20,000 orgs, 200,000 users and 500,000 API keys into a fresh
PostgreSQL database (timed), then one real `userorg serve` process (production mode, uvloop +
httptools, gateway cache off so every `/v1/authorize` reads PostgreSQL) answers sequential
requests over one keep-alive connection: p50/p99 per endpoint from the client's clock.

Org-scoped lists are measured twice: on random orgs (most are small: the long tail) and on
the largest org (`demo-00000`, ~4,800 members, ~11,900 keys, ~600 service accounts), first
page and deep pages (a cursor taken from a page far into the list), with each filter.

Environment: ``BENCH_SCALE_SAMPLES`` (requests per row, default 400),
``BENCH_SCALE_DATABASE_URL`` (reuse an already seeded database instead of a fresh one; its
``BENCH_SCALE_SECRETS`` file must be given too), ``BENCH_SCALE_ORGS/USERS/KEYS`` (smaller runs).
The table goes into docs/performance.md between the scale markers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support import services  # noqa: E402
from tests.support.replicas import (  # noqa: E402
    admin_token,
    shared_environment,
    start_replica,
    stop_replica,
)

SAMPLES = int(os.environ.get("BENCH_SCALE_SAMPLES", "400"))
SIZES = {
    "orgs": int(os.environ.get("BENCH_SCALE_ORGS", "20000")),
    "users": int(os.environ.get("BENCH_SCALE_USERS", "200000")),
    "keys": int(os.environ.get("BENCH_SCALE_KEYS", "500000")),
}
TARGET_MS = 50.0
DOC = ROOT / "docs" / "performance.md"
START, END = "<!-- scale-bench:start -->", "<!-- scale-bench:end -->"


def seed(env: dict[str, str], secrets_file: Path) -> tuple[float, str]:
    started = time.perf_counter()
    result = subprocess.run(
        [
            sys.executable, "-m", "userorg", "seed-demo",
            "--orgs", str(SIZES["orgs"]), "--users", str(SIZES["users"]),
            "--keys", str(SIZES["keys"]), "--secrets-file", str(secrets_file),
        ],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise SystemExit(f"seed-demo failed: {result.stderr}")
    return time.perf_counter() - started, result.stdout.strip()


async def sample_ids(database_url: str, count: int) -> dict[str, Any]:
    import asyncpg

    connection = await asyncpg.connect(database_url)
    try:

        async def rows(query: str, *args: Any) -> list[Any]:
            return list(await connection.fetch(query, *args))

        largest = await connection.fetchrow(
            "SELECT id FROM organizations WHERE slug = 'demo-00000'"
        )
        largest_id = largest["id"]
        ids = {
            "largest": str(largest_id),
            "orgs": [str(r["id"]) for r in await rows(
                "SELECT id FROM organizations WHERE status = 'active' ORDER BY random() LIMIT $1",
                count,
            )],
            "slugs": [r["slug"] for r in await rows(
                "SELECT slug FROM organizations ORDER BY random() LIMIT $1", count
            )],
            "users": [(str(r["org_id"]), str(r["user_id"])) for r in await rows(
                "SELECT org_id, user_id FROM memberships TABLESAMPLE SYSTEM (5) LIMIT $1", count
            )],
            "accounts": [(str(r["org_id"]), str(r["id"])) for r in await rows(
                "SELECT org_id, id FROM service_accounts TABLESAMPLE SYSTEM (10) LIMIT $1", count
            )],
            "keys": [(str(r["org_id"]), str(r["id"])) for r in await rows(
                "SELECT org_id, id FROM api_keys TABLESAMPLE SYSTEM (2) LIMIT $1", count
            )],
            "largest_accounts": [str(r["id"]) for r in await rows(
                "SELECT id FROM service_accounts WHERE org_id = $1 ORDER BY random() LIMIT $2",
                largest_id, count,
            )],
            "largest_users": [str(r["user_id"]) for r in await rows(
                "SELECT user_id FROM memberships WHERE org_id = $1 ORDER BY random() LIMIT $2",
                largest_id, count,
            )],
            "largest_emails": [r["email"][:9] for r in await rows(
                "SELECT u.email FROM memberships m JOIN users u ON u.id = m.user_id "
                "WHERE m.org_id = $1 ORDER BY random() LIMIT $2",
                largest_id, count,
            )],
            "member_login": await connection.fetchval(
                "SELECT u.email FROM memberships m JOIN users u ON u.id = m.user_id "
                "JOIN role_assignments r ON r.principal_id = u.id AND r.org_id = m.org_id "
                "WHERE m.org_id = $1 AND r.role_name = 'OrgAdmin' LIMIT 1",
                largest_id,
            ),
        }  # fmt: skip
    finally:
        await connection.close()
    return ids


def deep_cursor(client: httpx.Client, path: str, headers: dict[str, str], pages: int) -> str:
    """The cursor of a page far into the list (follows ``pages`` pages of 200)."""
    cursor = None
    for _ in range(pages):
        params: dict[str, Any] = {"limit": 200}
        if cursor:
            params["cursor"] = cursor
        body = client.get(path, params=params, headers=headers).json()
        if body["nextCursor"] is None:
            break
        cursor = body["nextCursor"]
    assert cursor is not None, path
    return cursor


def measure(
    client: httpx.Client, make: Callable[[int], tuple[str, str, dict[str, Any]]], samples: int
) -> dict[str, float]:
    """``make(i)`` -> (method, path, kwargs); sequential requests, latency per request."""
    for index in range(min(20, samples)):  # warm-up: connection, prepared statements
        method, path, kwargs = make(index)
        client.request(method, path, **kwargs)
    latencies = []
    for index in range(samples):
        method, path, kwargs = make(index)
        started = time.perf_counter()
        response = client.request(method, path, **kwargs)
        latencies.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            raise SystemExit(f"{method} {path}: {response.status_code} {response.text[:300]}")
    latencies.sort()
    return {
        "p50": latencies[len(latencies) // 2],
        "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "n": float(len(latencies)),
    }


def main() -> None:
    services.require_postgres()
    services.require_redis()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    with contextlib.ExitStack() as cleanup:
        work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
        cleanup.callback(shutil.rmtree, work, ignore_errors=True)
        reuse = os.environ.get("BENCH_SCALE_DATABASE_URL")
        from userorg import migrate

        if reuse:
            database_url = reuse
            secrets_file = Path(os.environ["BENCH_SCALE_SECRETS"])
            migrate.upgrade(database_url)
            extra = {"USER_ORG_LOG_LEVEL": "error"}
            if os.environ.get("BENCH_SCALE_MASTER_KEY"):  # the key the reused data was made with
                extra["USER_ORG_MASTER_KEY"] = os.environ["BENCH_SCALE_MASTER_KEY"]
            env = shared_environment(database_url, work, **extra)
            seed_seconds, seed_output = 0.0, "(reused an already seeded database)"
        else:
            database_url = services.run_in_thread(services.create_database)
            cleanup.callback(
                lambda: services.run_in_thread(lambda: services.drop_database(database_url))
            )
            migrate.upgrade(database_url)
            env = shared_environment(database_url, work, USER_ORG_LOG_LEVEL="error")
            secrets_file = work / "secrets.tsv"
            print(f"  seeding {SIZES} ...", flush=True)
            seed_seconds, seed_output = seed(env, secrets_file)
            print(f"  {seed_output} (wall {seed_seconds:.1f} s)", flush=True)
        server = start_replica(
            {**env, "USER_ORG_GATEWAY_CACHE_TTL_SECONDS": "0"}, work, "scale-server"
        )
        cleanup.callback(stop_replica, server)
        client = cleanup.enter_context(httpx.Client(base_url=server.url, timeout=30))
        admin = {"Authorization": f"Bearer {admin_token(client)}"}
        ids = asyncio.run(sample_ids(database_url, SAMPLES))
        rows = run_rows(client, admin, ids, secrets_file)
        load = os.getloadavg()[0]
    write_doc(rows, seed_seconds, seed_output, load)


def run_rows(
    client: httpx.Client, admin: dict[str, str], ids: dict[str, Any], secrets_file: Path
) -> list[tuple[str, dict[str, float], bool]]:
    """(label, result, is a list endpoint)."""
    rng = random.Random(7)
    big = ids["largest"]
    orgs, n = ids["orgs"], len(ids["orgs"])
    secrets_list = [line.split("\t")[0] for line in secrets_file.read_text().splitlines()]
    rng.shuffle(secrets_list)
    login = client.post(
        "/v1/auth/login",
        json={"email": ids["member_login"], "password": "Demo-Seed-Passphrase-2024"},
    )
    assert login.status_code == 200, login.text
    member = {"Authorization": f"Bearer {login.json()['accessToken']}"}
    deep = {
        "users": deep_cursor(client, f"/v1/orgs/{big}/users", admin, 15),
        "keys": deep_cursor(client, f"/v1/orgs/{big}/api-keys", admin, 40),
        "accounts": deep_cursor(client, f"/v1/orgs/{big}/service-accounts", admin, 2),
        "orgs": deep_cursor(client, "/v1/orgs", admin, 60),
    }
    a_user = ids["largest_users"][0]

    def get(
        path: str, headers: dict[str, str] = admin, **params: Any
    ) -> tuple[str, str, dict[str, Any]]:
        return "GET", path, {"headers": headers, "params": params}

    cases: list[tuple[str, bool, Callable[[int], tuple[str, str, dict[str, Any]]]]] = [
        # The floor of every admin request on this machine at this moment (token, session,
        # policy, one small read): compare the rows with it when the machine is busy.
        ("`GET /v1/auth/me` (baseline: authentication, no list)", False,
         lambda i: get("/v1/auth/me")),
        ("`GET /v1/orgs` (platform admin, first page)", True, lambda i: get("/v1/orgs")),
        ("`GET /v1/orgs` (platform admin, page ~12,000 deep)", True,
         lambda i: get("/v1/orgs", cursor=deep["orgs"])),
        ("`GET /v1/orgs?status=suspended`", True, lambda i: get("/v1/orgs", status="suspended")),
        ("`GET /v1/orgs?slugPrefix=` (random slug)", True,
         lambda i: get("/v1/orgs", slugPrefix=ids["slugs"][i % len(ids["slugs"])][:9])),
        ("`GET /v1/orgs` (a member: own orgs)", True, lambda i: get("/v1/orgs", member)),
        ("`GET /v1/orgs/{orgId}`", False, lambda i: get(f"/v1/orgs/{orgs[i % n]}")),
        ("`GET /v1/orgs/{slug}`", False,
         lambda i: get(f"/v1/orgs/{ids['slugs'][i % len(ids['slugs'])]}")),
        ("`GET .../users` (random org)", True, lambda i: get(f"/v1/orgs/{orgs[i % n]}/users")),
        ("`GET .../users` (largest org)", True, lambda i: get(f"/v1/orgs/{big}/users")),
        ("`GET .../users` (largest org, deep page, limit 200)", True,
         lambda i: get(f"/v1/orgs/{big}/users", cursor=deep["users"], limit=200)),
        ("`GET .../users?role=BillingAdmin` (largest org)", True,
         lambda i: get(f"/v1/orgs/{big}/users", role="BillingAdmin")),
        ("`GET .../users?emailPrefix=` (largest org)", True,
         lambda i: get(f"/v1/orgs/{big}/users",
                       emailPrefix=ids["largest_emails"][i % len(ids["largest_emails"])])),
        ("`GET .../users?status=suspended` (largest org, no match)", True,
         lambda i: get(f"/v1/orgs/{big}/users", status="suspended")),
        ("`GET .../users/{userId}`", False,
         lambda i: get("/v1/orgs/{}/users/{}".format(*ids["users"][i % len(ids["users"])]))),
        ("`GET .../users/{userId}/sessions`", True,
         lambda i: get(f"/v1/orgs/{big}/users/{a_user}/sessions")),
        ("`GET .../invites` (largest org)", True, lambda i: get(f"/v1/orgs/{big}/invites")),
        ("`GET .../roles` (random org)", True, lambda i: get(f"/v1/orgs/{orgs[i % n]}/roles")),
        ("`GET .../service-accounts` (random org)", True,
         lambda i: get(f"/v1/orgs/{orgs[i % n]}/service-accounts")),
        ("`GET .../service-accounts` (largest org)", True,
         lambda i: get(f"/v1/orgs/{big}/service-accounts")),
        ("`GET .../service-accounts` (largest org, deep page)", True,
         lambda i: get(f"/v1/orgs/{big}/service-accounts", cursor=deep["accounts"])),
        ("`GET .../service-accounts/{id}`", False,
         lambda i: get("/v1/orgs/{}/service-accounts/{}".format(
             *ids["accounts"][i % len(ids["accounts"])]))),
        ("`GET .../api-keys` (random org)", True,
         lambda i: get(f"/v1/orgs/{orgs[i % n]}/api-keys")),
        ("`GET .../api-keys` (largest org)", True, lambda i: get(f"/v1/orgs/{big}/api-keys")),
        ("`GET .../api-keys` (largest org, deep page, limit 200)", True,
         lambda i: get(f"/v1/orgs/{big}/api-keys", cursor=deep["keys"], limit=200)),
        ("`GET .../api-keys?status=revoked` (largest org)", True,
         lambda i: get(f"/v1/orgs/{big}/api-keys", status="revoked")),
        ("`GET .../api-keys?status=active` (largest org)", True,
         lambda i: get(f"/v1/orgs/{big}/api-keys", status="active")),
        ("`GET .../api-keys?principalId=` (largest org, a service account)", True,
         lambda i: get(f"/v1/orgs/{big}/api-keys", principalType="service_account",
                       principalId=ids["largest_accounts"][i % len(ids["largest_accounts"])])),
        ("`GET .../api-keys/{apiKeyId}`", False,
         lambda i: get("/v1/orgs/{}/api-keys/{}".format(*ids["keys"][i % len(ids["keys"])]))),
        ("`GET .../audit-events` (largest org)", True,
         lambda i: get(f"/v1/orgs/{big}/audit-events")),
        ("`GET /v1/declarative/status/{orgId}`", False,
         lambda i: get(f"/v1/declarative/status/{orgs[i % n]}")),
        ("`POST /v1/authorize` (cache miss, seeded keys)", False,
         lambda i: ("POST", "/v1/authorize", {"json": {
             "credential": secrets_list[i % len(secrets_list)], "action": "inference:invoke",
             "resource": "gpt-large"}})),
    ]  # fmt: skip
    results = []
    for label, is_list, make in cases:
        result = measure(client, make, SAMPLES)
        results.append((label, result, is_list))
        print(f"  {label}: p50 {result['p50']:.2f} ms, p99 {result['p99']:.2f} ms", flush=True)
    return results


def write_doc(
    rows: list[tuple[str, dict[str, float], bool]],
    seed_seconds: float,
    seed_output: str,
    load: float,
) -> None:
    worst = max(result["p99"] for _, result, is_list in rows if is_list)
    lines = [
        START,
        f"Measured by `make bench` (`bench/bench_scale.py`) on {time.strftime('%Y-%m-%d')}: "
        f"{SIZES['orgs']:,} orgs, {SIZES['users']:,} users, {SIZES['keys']:,} API keys loaded by "
        f"`userorg seed-demo` in {seed_seconds:.0f} s; one `userorg serve` process (production "
        "mode, PostgreSQL and Redis on the same 2 shared cores, gateway cache off), one "
        f"keep-alive connection, {SAMPLES} sequential requests per row (random orgs/ids per "
        f"request where the row says so), 1-minute load average at the end {load:.1f}.",
        "",
        f"Seed: {seed_output.splitlines()[0] if seed_output else ''}",
        "",
        "| endpoint | p50 | p99 | list target p99 ≤ 50 ms |",
        "|---|---|---|---|",
    ]
    for label, result, is_list in rows:
        verdict = ("met" if result["p99"] <= TARGET_MS else "**missed**") if is_list else "—"
        lines.append(f"| {label} | {result['p50']:.2f} ms | {result['p99']:.2f} ms | {verdict} |")
    lines += ["", f"Worst list p99: {worst:.2f} ms.", END]
    text = DOC.read_text()
    block = "\n".join(lines)
    if START in text:
        text = text[: text.index(START)] + block + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip() + "\n\n## Scale data (`bench/bench_scale.py`)\n" + block + "\n"
    DOC.write_text(text)
    print("\n".join(lines[1:]), flush=True)


if __name__ == "__main__":
    main()
