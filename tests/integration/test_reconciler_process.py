"""The reconciler as a real process (`userorg reconcile`): killed or stopped in the middle of a
large apply it leaves nothing half-applied, and the next run completes. Both modes."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from tests.support.api import Env, uid
from tests.support.declarative import managed_org, send_webhook, status, wait_for, wait_synced
from tests.support.gitrepo import GitRepo, members_doc
from tests.support.services import free_port
from userorg.audit.models import AuditEvent
from userorg.declarative.models import DeclarativeRun, DeclarativeState
from userorg.users.models import Membership

MEMBERS = 400


def _process_env(env: Env, data_dir: Path, port: int) -> dict[str, str]:
    values = {k: v for k, v in os.environ.items() if not k.startswith("USER_ORG_")}
    settings = env.settings
    values.update(
        USER_ORG_MODE=settings.mode.value,
        USER_ORG_DATA_DIR=str(data_dir),
        USER_ORG_DATABASE_URL=settings.effective_database_url,
        USER_ORG_RECONCILER_PORT=str(port),
        USER_ORG_LOG_LEVEL="warning",
        USER_ORG_DECLARATIVE_ALLOW_LOCAL_REPOS="true",
        USER_ORG_DECLARATIVE_WORK_POLL_SECONDS="0.2",
        USER_ORG_DECLARATIVE_LEASE_SECONDS="2",
        USER_ORG_DECLARATIVE_STOP_GRACE_SECONDS="0",
        USER_ORG_DECLARATIVE_POLL_INTERVAL_SECONDS="3600",
    )
    if settings.redis_url:
        values["USER_ORG_REDIS_URL"] = settings.redis_url
        values["USER_ORG_KEY_PREFIX"] = settings.key_prefix
    if settings.master_key is not None:
        values["USER_ORG_MASTER_KEY"] = settings.master_key.get_secret_value()
    # The reconciler records audit events like the admin-api: same stream as the service.
    values["USER_ORG_AUDIT_STREAM"] = settings.effective_audit_stream
    if settings.kafka_bootstrap_servers:
        values["USER_ORG_KAFKA_BOOTSTRAP_SERVERS"] = settings.kafka_bootstrap_servers
    return values


def _start(env: Env, tmp_path: Path) -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    # The output goes to a file, not a pipe: a pipe nobody reads fills up and blocks the
    # process in its next log write (it would then never stop).
    with _log_path(tmp_path).open("a") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "userorg", "reconcile"],
            # Embedded mode: both processes share the data directory (database, key directory).
            env=_process_env(env, env.settings.data_dir, port),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            text=True,
        )
    return process, port


def _log_path(tmp_path: Path) -> Path:
    return tmp_path / "reconciler.log"


async def _writer_busy(env: Env) -> bool:
    """Is a long write transaction open (the apply), seen from outside the process?"""
    if env.mode == "embedded":
        path = env.settings.effective_database_url.removeprefix("sqlite:///")

        def probe() -> bool:
            connection = sqlite3.connect(path, timeout=0, isolation_level=None)
            try:
                connection.execute("BEGIN IMMEDIATE")
                connection.execute("ROLLBACK")
                return False
            except sqlite3.OperationalError:
                return True
            finally:
                connection.close()

        return await asyncio.to_thread(probe)
    async with env.container.read_session_factory() as session:
        from sqlalchemy import text

        count = (
            await session.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid() AND backend_xid IS NOT NULL "
                    "AND now() - xact_start > interval '300 milliseconds'"
                )
            )
        ).scalar_one()
        return bool(count)


async def _counts(env: Env, org_id: uuid.UUID) -> dict[str, Any]:
    async with env.container.read_session_factory() as session:
        members = (
            await session.execute(
                select(func.count()).select_from(Membership).where(Membership.org_id == org_id)
            )
        ).scalar_one()
        added = (
            await session.execute(
                select(func.count())
                .select_from(AuditEvent)
                .where(AuditEvent.org_id == org_id, AuditEvent.action == "declarative:member:add")
            )
        ).scalar_one()
        state = await session.get(DeclarativeState, org_id)
        runs = list(
            (
                await session.execute(
                    select(DeclarativeRun)
                    .where(DeclarativeRun.org_id == org_id)
                    .order_by(DeclarativeRun.started_at)
                )
            ).scalars()
        )
        return {
            "members": members,
            "added": added,
            "applied": state.last_applied_commit if state else None,
            "runs": [(r.status, (r.error or {}).get("code")) for r in runs],
            "run_ids": [r.id for r in runs],
        }


async def _interrupt_mid_apply(
    env: Env, tmp_path: Path, org_id: uuid.UUID, sig: signal.Signals
) -> subprocess.Popen[str]:
    earlier = set((await _counts(env, org_id))["run_ids"])
    process, _port = _start(env, tmp_path)
    try:

        async def mid_apply() -> bool:
            assert process.poll() is None, _log_path(tmp_path).read_text()
            counts = await _counts(env, org_id)
            running = any(
                status == "running" and run_id not in earlier
                for (status, _), run_id in zip(counts["runs"], counts["run_ids"], strict=True)
            )
            return running and await _writer_busy(env)

        await wait_for(mid_apply, bool, timeout=60)
        process.send_signal(sig)
        try:
            # Generous: on a loaded CI machine the rollback and the interrupted-run write
            # queue behind the other process's writers (SQLite has one).
            await asyncio.to_thread(process.wait, 120)
        except subprocess.TimeoutExpired:
            log = _log_path(tmp_path).read_text()
            pytest.fail(f"the reconciler did not stop within 120 s of {sig.name}:\n{log}")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return process


@pytest.mark.slow
async def test_killed_or_stopped_mid_apply_leaves_nothing_and_the_next_run_completes(
    env: Env, tmp_path: Path
) -> None:
    repo = GitRepo(tmp_path / "config")
    tag = uid()
    members = {f"owner-{tag}@example.com": ["OrgOwner"]} | {
        f"m{i}-{tag}@example.com": ["Developer"] for i in range(MEMBERS)
    }
    first = repo.write({"members.yaml": members_doc(members)})
    org = await managed_org(env, repo)  # queues a sync; no reconciler runs yet
    org_id = uuid.UUID(org["orgId"])

    # 1. SIGKILL in the middle of the apply transaction.
    killed = await _interrupt_mid_apply(env, tmp_path, org_id, signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL
    after_kill = await _counts(env, org_id)
    assert after_kill["members"] == 0
    assert after_kill["added"] == 0
    assert after_kill["applied"] is None
    assert after_kill["runs"] == [("running", None)]  # the run row was committed before

    # 2. SIGTERM (graceful stop) in the middle of the next apply: rolled back, said so.
    stopped = await _interrupt_mid_apply(env, tmp_path, org_id, signal.SIGTERM)
    assert stopped.returncode in {0, -signal.SIGTERM}
    after_stop = await _counts(env, org_id)
    assert after_stop["members"] == 0
    assert after_stop["added"] == 0
    assert after_stop["applied"] is None
    assert after_stop["runs"] == [("failed", "interrupted"), ("failed", "interrupted")]
    async with env.container.read_session_factory() as session:
        state = await session.get(DeclarativeState, org_id)
        assert state is not None
        assert state.lease_owner is None  # released on the way out

    # 3. The next reconciler completes; then a webhook crosses the two processes.
    process, port = _start(env, tmp_path)
    try:
        await wait_synced(env, str(org_id), first, timeout=120)
        done = await _counts(env, org_id)
        assert done["members"] == MEMBERS + 1
        assert done["added"] == MEMBERS + 1
        assert done["runs"][-1] == ("successful", None)

        newcomer = f"late-{tag}@example.com"
        second = repo.write({"members.yaml": members_doc({**members, newcomer: ["OrgAdmin"]})})
        started = time.monotonic()
        assert (await send_webhook(env, repo)).status_code == 202
        await wait_synced(env, str(org_id), second, timeout=30)
        assert time.monotonic() - started < 30

        # The reconciler's own status endpoint (port 8082 in production).
        token = (await env.admin_headers())["Authorization"]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            response = await wait_for(
                lambda: client.get(
                    f"/v1/reconcile/status/{org_id}", headers={"Authorization": token}
                ),
                lambda r: r.status_code == 200,
            )
            body = response.json()
            assert body["status"] == "synced"
            assert body["lastAppliedCommit"] == second
            assert body["reconcilerId"]
            assert (await client.get(f"/v1/reconcile/status/{org_id}")).status_code == 401
            metrics = (await client.get("/metrics")).text
            assert "userorg_reconcile_runs_total" in metrics
            assert "userorg_reconcile_queue_depth" in metrics
        assert (await status(env, str(org_id)))["lastRun"]["trigger"] == "webhook"
    finally:
        process.terminate()
        await asyncio.to_thread(process.wait, 30)
