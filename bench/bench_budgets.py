"""The added latency of a budget reservation on `/v1/authorize`.

One real `userorg serve` process in production mode (PostgreSQL, Redis), keys of two orgs on
the cache-hit path, and the open-loop client of `bench_gateway` at a fixed 1,000 req/s
(latency counted from each request's scheduled send time, so queueing shows). Three rows,
interleaved twice on the same server so machine noise hits them alike:
- no budget policy, no estimate (the gateway without budgets: the baseline);
- a budget policy, no estimate (one Redis read of the period's counter);
- a budget policy and `estimatedCost` (the atomic Lua reservation; a `reservationId` back).
The difference of the third row to the first is the cost of a reservation. Written into
docs/performance.md between the budgets markers.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

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

from bench.bench_gateway import _open_loop  # noqa: E402

DURATION = int(os.environ.get("BENCH_SECONDS", "10"))
RATE = 1000.0
DOC = ROOT / "docs" / "performance.md"
START, END = "<!-- budgets-bench:start -->", "<!-- budgets-bench:end -->"


def bodies(secrets_list: list[str], cost: float | None) -> list[bytes]:
    extra = b"" if cost is None else b',"estimatedCost":' + repr(cost).encode()
    return [
        b'{"credential":"'
        + s.encode()
        + b'","action":"inference:invoke","resource":"gpt-large"'
        + extra
        + b"}"
        for s in secrets_list
    ]


def fixed_rate(url: str, payloads: list[bytes], seconds: float) -> dict[str, float]:
    import uvloop

    parsed = httpx.URL(url)
    latencies = uvloop.run(
        _open_loop(parsed.host, parsed.port or 80, payloads, parsed.path, RATE, seconds)
    )
    latencies.sort()
    return {
        "rps": len(latencies) / seconds,
        "p50": latencies[len(latencies) // 2],
        "p99": latencies[int(len(latencies) * 0.99)],
    }


def main() -> None:
    services.require_postgres()
    services.require_redis()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    rows: dict[str, list[dict[str, float]]] = {"baseline": [], "status": [], "reserve": []}
    with contextlib.ExitStack() as cleanup:
        work = Path(tempfile.mkdtemp(prefix="bench-budgets-"))
        cleanup.callback(shutil.rmtree, work, ignore_errors=True)
        database_url = services.run_in_thread(services.create_database)
        cleanup.callback(
            lambda: services.run_in_thread(lambda: services.drop_database(database_url))
        )
        from userorg import migrate

        migrate.upgrade(database_url)
        env = shared_environment(
            database_url,
            work,
            USER_ORG_LOG_LEVEL="error",
            USER_ORG_API_KEY_ISSUE_LIMIT_PER_PRINCIPAL="1000",
            USER_ORG_API_KEY_ISSUE_LIMIT_PER_ORG="1000",
        )
        server = start_replica(env, work, "replica")
        cleanup.callback(stop_replica, server)
        client = cleanup.enter_context(httpx.Client(base_url=server.url, timeout=30))
        headers = {"Authorization": f"Bearer {admin_token(client)}"}
        plain = make_org_with_keys(client, headers, keys=50)
        budgeted = make_org_with_keys(client, headers, keys=50)
        policy = client.put(
            f"/v1/budgets/{budgeted['orgId']}/policy",
            json={"limit": "1000000000", "currency": "USD", "period": "monthly"},
            headers=headers,
        )
        assert policy.status_code == 200, policy.text
        plain_keys = [k["secret"] for k in plain["keys"]]
        budget_keys = [k["secret"] for k in budgeted["keys"]]
        sample = client.post(
            "/v1/authorize",
            json={
                "credential": budget_keys[0],
                "action": "inference:invoke",
                "resource": "m",
                "estimatedCost": 0.002,
            },
        ).json()
        assert sample["decision"] == "allow", sample
        assert sample.get("reservationId"), sample
        url = f"{server.url}/v1/authorize"
        cases = {
            "baseline": bodies(plain_keys, None),
            "status": bodies(budget_keys, None),
            "reserve": bodies(budget_keys, 0.002),
        }
        for payloads in cases.values():
            fixed_rate(url, payloads, 3)  # warm-up: every key cached, every counter seeded
        for _round in range(2):
            for name, payloads in cases.items():
                result = fixed_rate(url, payloads, DURATION)
                rows[name].append(result)
                print(
                    f"  {name}: {result['rps']:,.0f} req/s, p50 {result['p50']:.2f} ms, "
                    f"p99 {result['p99']:.2f} ms",
                    flush=True,
                )
        load = os.getloadavg()[0]
    write_doc(rows, load)


def write_doc(rows: dict[str, list[dict[str, float]]], load: float) -> None:
    def best(name: str, field: str) -> float:
        return min(r[field] for r in rows[name])

    def cell(name: str) -> str:
        return " / ".join(f"{r['p50']:.2f} ms, {r['p99']:.2f} ms" for r in rows[name])

    added_p50 = best("reserve", "p50") - best("baseline", "p50")
    added_p99 = best("reserve", "p99") - best("baseline", "p99")
    lines = [
        START,
        f"Measured by `make bench` on {time.strftime('%Y-%m-%d')}: one `userorg serve` process "
        "(production mode: PostgreSQL, Redis on the same 2-core machine, shared with other "
        f"work; 1-minute load average {load:.1f} at the end), keys on the cache-hit path, an "
        f"open-loop client at a fixed {RATE:,.0f} req/s over 16 keep-alive connections for "
        f"{DURATION} s per row, latency from each request's scheduled send time; each row "
        "measured twice, interleaved (p50, p99 of both runs).",
        "",
        "| `/v1/authorize` | run 1 (p50, p99) / run 2 (p50, p99) |",
        "|---|---|",
        f"| org without a budget policy, no estimate (baseline) | {cell('baseline')} |",
        f"| budget policy, no estimate (reads the period counter) | {cell('status')} |",
        f"| budget policy + `estimatedCost` (atomic Lua reservation) | {cell('reserve')} |",
        "",
        f"Added by a reservation (best run against best run): p50 {added_p50:+.2f} ms, "
        f"p99 {added_p99:+.2f} ms; p99 with a reservation {best('reserve', 'p99'):.2f} ms "
        "(target ≤ 5 ms at 1,000 req/s).",
        END,
    ]
    text = DOC.read_text()
    block = "\n".join(lines)
    if START in text:
        text = text[: text.index(START)] + block + text[text.index(END) + len(END) :]
    else:
        text = (
            text.rstrip()
            + "\n\n## Budget reservations on the gateway (`bench/bench_budgets.py`)\n"
            + block
            + "\n"
        )
    DOC.write_text(text)
    print("\n".join(lines[1:-1]), flush=True)


if __name__ == "__main__":
    main()
