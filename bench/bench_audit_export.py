"""Audit export throughput and peak memory: 100k and 1,000,000 events in one org's chain.

For each database (SQLite file; PostgreSQL when reachable) the bench loads a valid hash chain of
1M events, then, in a fresh child process per window, runs the export job (plan the range,
render the NDJSON while verifying the chain and hashing it, sign the digest) and renders the
download once more (what `GET .../download` streams). The child reports its peak RSS, so the
memory figure is the export's own; the same peak at 100k and 1M events is "constant memory".

Run: `make bench` (all benchmarks) or `.venv/bin/python bench/run.py bench_audit_export`.
Target (docs/performance.md): 1M events ≤ 30 s.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EVENTS = 1_000_000
WINDOWS = (100_000, 1_000_000)
START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
ORG = uuid.UUID("01900000-0000-7000-8000-00000000b0b0")


def _rows(count: int):  # type: ignore[no-untyped-def]
    """A valid chain of ``count`` events, as column tuples (in the table's column order)."""
    from userorg.audit.chain import GENESIS_HASH, event_hash
    from userorg.audit.recorder import format_timestamp

    chain = str(ORG)
    actor = "0190aaaa-0000-7000-8000-000000000001"
    prev = GENESIS_HASH
    for seq in range(1, count + 1):
        event_id = uuid.UUID(int=(ORG.int & ~0xFFFFFFFFFFFF) | seq)
        occurred = START + dt.timedelta(milliseconds=seq)
        metadata = {"changes": {"name": f"Name {seq}"}}
        document = {
            "eventId": str(event_id),
            "chainId": chain,
            "seq": seq,
            "orgId": chain,
            "occurredAt": format_timestamp(occurred),
            "action": "api:organization:update",
            "outcome": "success",
            "actor": {"type": "user", "id": actor},
            "target": {"type": "organization", "id": chain},
            "policyId": None,
            "reason": None,
            "ip": "10.0.0.1",
            "userAgent": "bench/1.0",
            "requestId": f"req-{seq}",
            "metadata": metadata,
            "prevHash": prev,
        }
        digest = event_hash(document)
        yield (
            event_id,
            chain,
            seq,
            ORG,
            occurred,
            "api:organization:update",
            "success",
            "user",
            actor,
            "organization",
            chain,
            None,
            None,
            "10.0.0.1",
            "bench/1.0",
            f"req-{seq}",
            metadata,
            prev,
            digest,
        )
        prev = digest


COLUMNS = (
    "id, chain_id, seq, org_id, occurred_at, action, outcome, actor_type, actor_id, "
    "target_type, target_id, policy_id, reason, ip, user_agent, request_id, metadata, "
    "prev_hash, hash"
)


def _load(url: str, count: int) -> None:
    """Bulk load with the raw drivers (SQLAlchemy's per-row overhead would dominate)."""
    import orjson

    if url.startswith("sqlite"):
        import sqlite3

        connection = sqlite3.connect(url.removeprefix("sqlite:///"))
        rows = (
            (
                r[0].hex,
                r[1],
                r[2],
                r[3].hex,
                r[4].replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds"),
                *r[5:16],
                orjson.dumps(r[16]).decode(),
                r[17],
                r[18],
            )
            for r in _rows(count)
        )
        with connection:
            connection.executemany(
                f"INSERT INTO audit_events ({COLUMNS}) VALUES ({', '.join('?' * 19)})", rows
            )
            last = connection.execute("SELECT hash FROM audit_events ORDER BY seq DESC LIMIT 1")
            connection.execute(
                "INSERT INTO audit_chain_heads VALUES (?, ?, ?)",
                (str(ORG), count, last.fetchone()[0]),
            )
        connection.close()
        return

    async def load_pg() -> None:
        import asyncpg

        connection = await asyncpg.connect(url)
        try:
            placeholders = ", ".join(f"${i}::jsonb" if i == 17 else f"${i}" for i in range(1, 20))
            statement = f"INSERT INTO audit_events ({COLUMNS}) VALUES ({placeholders})"
            batch: list[tuple[object, ...]] = []
            last_hash = ""
            for record in _rows(count):
                batch.append((*record[:16], orjson.dumps(record[16]).decode(), *record[17:]))
                last_hash = record[18]
                if len(batch) == 10_000:
                    await connection.executemany(statement, batch)
                    batch = []
            if batch:
                await connection.executemany(statement, batch)
            await connection.execute(
                "INSERT INTO audit_chain_heads VALUES ($1, $2, $3)",
                str(ORG),
                count,
                last_hash,
            )
        finally:
            await connection.close()

    asyncio.run(load_pg())


async def _child(url: str, window_events: int) -> dict[str, float]:
    """One export in a fresh process: timings and the process's peak RSS."""
    from sqlalchemy.ext.asyncio import async_sessionmaker

    from userorg.audit import export as exporter
    from userorg.audit.models import AuditExport
    from userorg.audit.signing import LocalSigner
    from userorg.db import create_engine, new_id, utcnow
    from userorg.platform.keystore import LocalKeystore

    engine = create_engine(url)
    reader = create_engine(url, read_only=True) if url.startswith("sqlite") else engine
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    read_sessions = async_sessionmaker(reader, expire_on_commit=False)
    signer = LocalSigner(
        session_factory=sessions,
        read_session_factory=read_sessions,
        keystore=LocalKeystore(b"bench-master-key-32-bytes-long!!"),
    )
    await signer.start()
    export_id = new_id()
    async with sessions() as session:
        session.add(
            AuditExport(
                id=export_id,
                org_id=ORG,
                chain_id=str(ORG),
                window_from=START,
                window_to=START + dt.timedelta(milliseconds=window_events + 1),
                status="running",
                requested_by_type="user",
                attempts=1,
                created_at=utcnow(),
            )
        )
        await session.commit()
    started = time.perf_counter()
    export = await exporter.produce(
        session_factory=sessions,
        read_session_factory=read_sessions,
        signer=signer,
        export_id=export_id,
    )
    produced = time.perf_counter() - started
    assert export.event_count == window_events, export.event_count
    started = time.perf_counter()
    size = 0
    async with read_sessions() as session:
        async for chunk in exporter.render(session, export):
            size += len(chunk)
    downloaded = time.perf_counter() - started
    assert size == export.size_bytes
    await engine.dispose()
    if reader is not engine:
        await reader.dispose()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "produce_s": produced,
        "download_s": downloaded,
        "bytes": size,
        "peak_rss_mb": usage.ru_maxrss / 1024,
    }


def _pg_url() -> str | None:
    sys.path.insert(0, str(ROOT))
    from tests.support import services

    if not services.reachable(services.POSTGRES_URL, 5432):
        return None
    url: str = services.run_in_thread(lambda: services.create_database("userorg_bench"))
    return url


def main() -> None:
    from userorg import migrate

    print(
        "| database | events | export job (plan + render + verify + hash + sign) | download render | events/s (job) | file | peak RSS (child) |"
    )
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        targets = [("SQLite", f"sqlite:///{tmp}/bench.db")]
        pg = _pg_url()
        if pg is not None:
            targets.append(("PostgreSQL", pg))
        for name, url in targets:
            migrate.upgrade(url)
            started = time.perf_counter()
            _load(url, EVENTS)
            print(
                f"<!-- {name}: loaded {EVENTS} events in {time.perf_counter() - started:.1f} s -->",
                flush=True,
            )
            for window in WINDOWS:
                output = subprocess.run(
                    [sys.executable, __file__, "--child", url, str(window)],
                    capture_output=True,
                    text=True,
                    check=True,
                    cwd=ROOT,
                ).stdout
                result = json.loads(output.strip().splitlines()[-1])
                print(
                    f"| {name} | {window:,} | {result['produce_s']:.1f} s | "
                    f"{result['download_s']:.1f} s | {window / result['produce_s']:,.0f} | "
                    f"{result['bytes'] / 1e6:.0f} MB | {result['peak_rss_mb']:.0f} MB |",
                    flush=True,
                )
            if name == "PostgreSQL":
                from tests.support import services

                services.run_in_thread(lambda url=url: services.drop_database(url))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        print(json.dumps(asyncio.run(_child(sys.argv[2], int(sys.argv[3])))))
    else:
        main()
