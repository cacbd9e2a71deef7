"""The gateway hot path under load: `/v1/authorize` and `/v1/auth/validate-api-key`.

Everything runs on this machine: real `userorg serve` processes (uvicorn, uvloop, httptools, one
process each) in production mode on a fresh PostgreSQL database and Redis, 10,000 API keys in
the database, `wrk` (Debian) over keep-alive connections cycling through all the keys, and, in
the same run with the same uvicorn settings, a bare ASGI app answering a fixed JSON body: the
machine's ceiling. Measured:

- throughput and p50/p99 on the cache-hit path (authorize and validate) and the ceiling;
- the cache-miss path: a server with the cache off (TTL 0), so every request reads PostgreSQL;
- p50 with one connection;
- p99 at a fixed 1,000 req/s: an open-loop client (wrk2 is not packaged in Debian) that sends
  on a fixed schedule and measures each latency from the request's scheduled time, so a slow
  answer is not hidden by the client waiting for it (no coordinated omission);
- revocation propagation over 100 trials: revoke on replica A, poll `/v1/authorize` on
  replica B, time from the revoke's response to B's first deny.

The table is written into docs/performance.md between the gateway markers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support import services  # noqa: E402
from tests.support.replicas import (  # noqa: E402
    admin_token,
    make_org_with_keys,
    shared_environment,
    start_replica,
    stop_replica,
)

KEYS = 10_000
DURATION = int(os.environ.get("BENCH_SECONDS", "10"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "32"))
DOC = ROOT / "docs" / "performance.md"
START, END = "<!-- gateway-bench:start -->", "<!-- gateway-bench:end -->"

LUA = """
local keys = {}
for line in io.lines(os.getenv("BENCH_KEYS")) do keys[#keys + 1] = line end
local kind = os.getenv("BENCH_KIND")
local i = math.random(#keys)
local headers = {["Content-Type"] = "application/json"}
request = function()
  i = i + 1
  if i > #keys then i = 1 end
  local body
  if kind == "validate" then
    body = '{"apiKeySecret":"' .. keys[i] .. '"}'
  else
    body = '{"credential":"' .. keys[i] .. '","action":"inference:invoke","resource":"gpt-large"}'
  end
  return wrk.format("POST", nil, headers, body)
end
"""


def ensure_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise SystemExit("wrk is not installed: `apt-get install -y wrk` (make bench does it)")
    return path


def seed_keys(database_url: str, org_id: str, account_id: str, count: int) -> list[str]:
    """Insert ``count`` keys directly (issuing 10,000 through the API is rate limited)."""
    from sqlalchemy import insert, text

    from userorg.apikeys import secrets
    from userorg.apikeys.models import ApiKey
    from userorg.db import create_engine, new_id, utcnow

    generated = [secrets.generate("live") for _ in range(count)]
    now = utcnow()
    rows = [
        {
            "id": new_id(),
            "org_id": uuid.UUID(org_id),
            "principal_type": "service_account",
            "principal_id": uuid.UUID(account_id),
            "name": f"bench-{n}",
            "prefix": g.prefix,
            "fingerprint": g.fingerprint,
            "secret_hash": g.hash,
            "scopes": ["inference:invoke"],
            "annotations": {},
            "status": "active",
            "created_at": now,
            "updated_at": now,
            "usage_count": 0,
            "version": 1,
        }
        for n, g in enumerate(generated)
    ]

    async def go() -> None:
        engine = create_engine(database_url)
        async with engine.begin() as connection:
            for start in range(0, len(rows), 1000):
                await connection.execute(insert(ApiKey.__table__), rows[start : start + 1000])
        async with engine.begin() as connection:
            # Statistics, as autovacuum would have them on a live table (else: sequential scans).
            await connection.execute(text("ANALYZE"))
        await engine.dispose()

    asyncio.run(go())
    return [g.secret for g in generated]


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def _ms(value: str) -> float:
    match = re.match(r"([\d.]+)(us|ms|s)", value)
    assert match, value
    return float(match.group(1)) * _UNITS[match.group(2)]


def run_wrk(
    url: str, keys_file: Path, kind: str, *, connections: int, seconds: int, script: Path
) -> dict[str, float]:
    output = subprocess.run(
        [
            ensure_wrk(),
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        env={**os.environ, "BENCH_KEYS": str(keys_file), "BENCH_KIND": kind},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    distribution = output[output.index("Latency Distribution") :]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)$", distribution, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)$", distribution, re.M).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(r"Socket errors: (.*)", output)
    if errors or socket_errors:
        print(f"  wrk reported problems for {url}: {output}", flush=True)
    return {"rps": rps, "p50": p50, "p99": p99}


async def _open_loop(
    host: str, port: int, bodies: list[bytes], path: str, rate: float, seconds: float
) -> list[float]:
    """Send at a fixed schedule over keep-alive connections; latency from the scheduled time."""
    connections = 16
    per_connection = rate / connections
    latencies: list[float] = []
    start = time.perf_counter() + 0.2

    async def worker(index: int) -> None:
        reader, writer = await asyncio.open_connection(host, port)
        n = 0
        try:
            while True:
                scheduled = start + (n + index / connections) / per_connection
                if scheduled - start > seconds:
                    return
                delay = scheduled - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                body = bodies[(n * connections + index) % len(bodies)]
                writer.write(
                    b"POST " + path.encode() + b" HTTP/1.1\r\nHost: bench\r\n"
                    b"Content-Type: application/json\r\nContent-Length: "
                    + str(len(body)).encode()
                    + b"\r\n\r\n"
                    + body
                )
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(re.search(rb"content-length: (\d+)", head.lower()).group(1))  # type: ignore[union-attr]
                await reader.readexactly(length)
                latencies.append((time.perf_counter() - scheduled) * 1000)
                n += 1
        finally:
            writer.close()

    await asyncio.gather(*(worker(i) for i in range(connections)))
    return latencies


def fixed_rate(url: str, secrets_list: list[str], rate: float, seconds: float) -> dict[str, float]:
    import uvloop

    parsed = httpx.URL(url)
    bodies = [
        b'{"credential":"' + s.encode() + b'","action":"inference:invoke","resource":"gpt-large"}'
        for s in secrets_list
    ]
    latencies = uvloop.run(
        _open_loop(parsed.host, parsed.port or 80, bodies, parsed.path, rate, seconds)
    )
    latencies.sort()
    return {
        "rps": len(latencies) / seconds,
        "p50": latencies[len(latencies) // 2],
        "p99": latencies[int(len(latencies) * 0.99)],
    }


def propagation(
    on_a: httpx.Client,
    on_b: httpx.Client,
    org_id: str,
    keys: list[dict[str, Any]],
    headers: dict[str, str],
) -> list[float]:
    delays = []
    for key in keys:
        body = {"credential": key["secret"], "action": "inference:invoke", "resource": "m"}
        for _ in range(2):
            assert on_b.post("/v1/authorize", json=body).json()["decision"] == "allow"
        response = on_a.delete(f"/v1/orgs/{org_id}/api-keys/{key['apiKeyId']}", headers=headers)
        assert response.status_code == 204
        revoked_at = time.perf_counter()
        while True:
            answer = on_b.post("/v1/authorize", json=body).json()
            if answer["decision"] == "deny":
                delays.append((time.perf_counter() - revoked_at) * 1000)
                break
            if time.perf_counter() - revoked_at > 10:
                delays.append(10_000.0)
                break
    return delays


def start_bare(port: int, log_dir: Path) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import uvicorn, sys; sys.path.insert(0, {str(ROOT)!r}); "
            "from bench.bare_asgi import app; "
            f"uvicorn.run(app, host='127.0.0.1', port={port}, loop='uvloop', http='httptools', "
            "server_header=False, date_header=False, access_log=False, log_level='warning')",
        ],
        stdout=(log_dir / "bare.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.post(f"http://127.0.0.1:{port}/", content=b"{}", timeout=1)
            return process
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("bare ASGI app did not start")


def cache_counts(url: str) -> dict[str, float]:
    counts = {"hit": 0.0, "miss": 0.0, "bypass": 0.0}
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        match = re.match(r'userorg_gateway_cache_total\{result="(\w+)"\} ([\d.e+]+)', line)
        if match:
            counts[match.group(1)] = float(match.group(2))
    return counts


def fmt(result: dict[str, float]) -> str:
    return f"{result['rps']:,.0f} | {result['p50']:.2f} ms | {result['p99']:.2f} ms"


def main() -> None:
    ensure_wrk()
    services.require_postgres()
    services.require_redis()
    # A background `make bench` ignores SIGINT; make SIGTERM unwind so servers are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    results: dict[str, Any] = {}
    with contextlib.ExitStack() as cleanup:
        work = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
        cleanup.callback(shutil.rmtree, work, ignore_errors=True)
        database_url = services.run_in_thread(services.create_database)
        cleanup.callback(
            lambda: services.run_in_thread(lambda: services.drop_database(database_url))
        )
        script = work / "keys.lua"
        script.write_text(LUA)
        from userorg import migrate

        migrate.upgrade(database_url)
        env = shared_environment(
            database_url,
            work,
            USER_ORG_LOG_LEVEL="error",
            USER_ORG_API_KEY_ISSUE_LIMIT_PER_PRINCIPAL="1000",
            USER_ORG_API_KEY_ISSUE_LIMIT_PER_ORG="1000",
        )
        run_servers(env, database_url, work, script, results)
        # The miss path: the same server with its cache off, every request reads PostgreSQL.
        cold = start_replica(
            {**env, "USER_ORG_GATEWAY_CACHE_TTL_SECONDS": "0"}, work, "replica-nocache"
        )
        cleanup.callback(stop_replica, cold)
        keys_file = work / "keys.txt"
        url = f"{cold.url}/v1/authorize"
        run_wrk(url, keys_file, "authorize", connections=CONNECTIONS, seconds=3, script=script)
        results["authorize_miss"] = run_wrk(
            url, keys_file, "authorize", connections=CONNECTIONS, seconds=DURATION, script=script
        )
        print(f"  authorize_miss: {fmt(results['authorize_miss'])}", flush=True)
    write_doc(results)


def run_servers(
    env: dict[str, str], database_url: str, work: Path, script: Path, results: dict[str, Any]
) -> None:
    with contextlib.ExitStack() as cleanup:
        a = start_replica(env, work, "replica-a")
        cleanup.callback(stop_replica, a)
        b = start_replica(env, work, "replica-b")
        cleanup.callback(stop_replica, b)
        bare_port = services.free_port()
        bare = start_bare(bare_port, work)
        cleanup.callback(lambda: (bare.terminate(), bare.wait()))
        on_a = cleanup.enter_context(httpx.Client(base_url=a.url, timeout=30))
        on_b = cleanup.enter_context(httpx.Client(base_url=b.url, timeout=30))
        headers = {"Authorization": f"Bearer {admin_token(on_a)}"}
        setup = make_org_with_keys(on_a, headers, keys=100)
        print("  seeding keys ...", flush=True)
        secrets_list = seed_keys(database_url, setup["orgId"], setup["serviceAccountId"], KEYS)
        keys_file = work / "keys.txt"
        keys_file.write_text("\n".join(secrets_list) + "\n")
        sample = on_a.post(
            "/v1/authorize",
            json={"credential": secrets_list[0], "action": "inference:invoke", "resource": "m"},
        )
        assert sample.json()["decision"] == "allow", sample.text

        def wrk(url: str, kind: str, connections: int, seconds: int) -> dict[str, float]:
            return run_wrk(
                url, keys_file, kind, connections=connections, seconds=seconds, script=script
            )

        def measure(name: str, url: str, kind: str, connections: int = CONNECTIONS) -> None:
            wrk(url, kind, connections, 3)
            if url.startswith(a.url):
                # Until every key is cached: the hit path is measured without misses.
                for _ in range(30):
                    before = cache_counts(a.url)["miss"]
                    wrk(url, kind, connections, 3)
                    if cache_counts(a.url)["miss"] == before:
                        break
            before_counts = cache_counts(a.url)
            results[name] = wrk(url, kind, connections, DURATION)
            after = cache_counts(a.url)
            lookups = sum(after.values()) - sum(before_counts.values())
            if lookups and url.startswith(a.url):
                results[name]["hit_ratio"] = (after["hit"] - before_counts["hit"]) / lookups
            results.setdefault("load", []).append(os.getloadavg()[0])
            print(f"  {name}: {fmt(results[name])} {results[name]}", flush=True)

        bare_url = f"http://127.0.0.1:{bare_port}/"
        measure("ceiling", bare_url, "authorize")
        measure("authorize_hit", f"{a.url}/v1/authorize", "authorize")
        measure("validate_hit", f"{a.url}/v1/auth/validate-api-key", "validate")
        # The machine is shared: measure the ceiling again and compare with the mean of both.
        measure("ceiling_after", bare_url, "authorize")
        measure("authorize_1conn", f"{a.url}/v1/authorize", "authorize", connections=1)
        measure("ceiling_1conn", bare_url, "authorize", connections=1)
        results["fixed_1000"] = fixed_rate(f"{a.url}/v1/authorize", secrets_list, 1000, DURATION)
        print(f"  fixed 1000 req/s: {fmt(results['fixed_1000'])}", flush=True)
        print("  revocation propagation, 100 trials ...", flush=True)
        results["propagation"] = propagation(on_a, on_b, setup["orgId"], setup["keys"], headers)


def write_doc(results: dict[str, Any]) -> None:
    ceiling = (results["ceiling"]["rps"] + results["ceiling_after"]["rps"]) / 2
    delays = sorted(results["propagation"])

    def ratio(name: str) -> str:
        return f"{results[name]['rps'] / ceiling:.0%}"

    lines = [
        START,
        f"Measured by `make bench` on {time.strftime('%Y-%m-%d')} (2 cores shared by server, "
        f"PostgreSQL and load generator; {KEYS:,} keys in the database; wrk, 1 thread, "
        f"{CONNECTIONS} keep-alive connections, {DURATION} s per row after a warm-up that runs "
        "until no key misses the cache; one uvicorn process per server, uvloop + httptools). "
        f"1-minute load average during the rows: {min(results['load']):.1f}–"
        f"{max(results['load']):.1f} (other work shares the machine; the ratio to the ceiling, "
        "measured in the same run, is the comparable figure).",
        "",
        f"The ratio is to the mean of the two ceiling rows ({ceiling:,.0f} req/s).",
        "",
        "| path | req/s | p50 | p99 | ratio to ceiling |",
        "|---|---|---|---|---|",
        f"| bare ASGI, fixed JSON (ceiling), before | {fmt(results['ceiling'])} | — |",
        f"| bare ASGI, fixed JSON (ceiling), after the hit rows | {fmt(results['ceiling_after'])} | — |",
        f"| `/v1/authorize`, cache hit ({results['authorize_hit'].get('hit_ratio', 0):.1%} hits) | {fmt(results['authorize_hit'])} | {ratio('authorize_hit')} |",
        f"| `/v1/auth/validate-api-key`, cache hit ({results['validate_hit'].get('hit_ratio', 0):.1%} hits) | {fmt(results['validate_hit'])} | {ratio('validate_hit')} |",
        f"| `/v1/authorize`, cache miss (cache off, PostgreSQL every request) | {fmt(results['authorize_miss'])} | {ratio('authorize_miss')} |",
        f"| `/v1/authorize`, 1 connection | {fmt(results['authorize_1conn'])} | — |",
        f"| bare ASGI, 1 connection | {fmt(results['ceiling_1conn'])} | — |",
        f"| `/v1/authorize` at a fixed 1,000 req/s (open loop) | {fmt(results['fixed_1000'])} | — |",
        "",
        f"Revocation propagation (replica A revokes, replica B answers `/v1/authorize` in a loop; "
        f"{len(delays)} trials): p50 {statistics.median(delays):.1f} ms, "
        f"p99 {delays[int(len(delays) * 0.99) - 1]:.1f} ms, max {delays[-1]:.1f} ms; "
        f"{sum(d <= 1000 for d in delays)}/{len(delays)} within 1 s.",
        END,
    ]
    text = DOC.read_text()
    block = "\n".join(lines)
    if START in text:
        text = text[: text.index(START)] + block + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip() + "\n\n## Gateway hot path (`bench/bench_gateway.py`)\n" + block + "\n"
    DOC.write_text(text)
    print("\n".join(lines[3:]), flush=True)


if __name__ == "__main__":
    main()
