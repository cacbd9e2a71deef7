"""Retention: expired events are sealed by a signed checkpoint, then purged; the chain and
exports stay verifiable from the checkpoint."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import uuid
from pathlib import Path

import orjson
from sqlalchemy import func, select

from tests.support.api import Env
from tests.support.audit import export_files, public_key_pems, wait_outbox_empty
from userorg.audit import recorder
from userorg.audit.models import AuditCheckpoint, AuditEvent
from userorg.audit.retention import purge_expired
from userorg.audit.service import verify_checkpoint, verify_stored_chain
from userorg.context import Actor
from userorg.db import utcnow

USERORG = [sys.executable, "-m", "userorg"]


async def test_maintenance_seals_then_purges_expired_events(env: Env) -> None:
    org_id = uuid.uuid4()  # a chain whose every event is older than the retention
    old = utcnow() - dt.timedelta(days=env.settings.audit_retention_days + 30)
    async with env.container.uow() as uow:
        for i in range(5):
            await recorder.record(
                uow.session,
                action="api:organization:update",
                actor=Actor.system("test"),
                org_id=org_id,
                occurred_at=old + dt.timedelta(minutes=i),
                metadata={"i": i},
            )
    await wait_outbox_empty(env.container)
    result = await env.container.maintenance.run_once()
    assert result["auditEventsPurged"] >= 5
    chain = str(org_id)
    async with env.container.session_factory() as session:
        checkpoint = (
            await session.execute(select(AuditCheckpoint).where(AuditCheckpoint.chain_id == chain))
        ).scalar_one()
        remaining = (
            await session.execute(
                select(AuditEvent.seq, AuditEvent.action, AuditEvent.prev_hash)
                .where(AuditEvent.chain_id == chain)
                .order_by(AuditEvent.seq)
            )
        ).all()
        assert checkpoint.seq == 5 and checkpoint.head_seq == 5
        # What remains is the purge's own record, linked to the checkpoint.
        assert [(r[0], r[1]) for r in remaining] == [(6, "system:audit:purge")]
        assert remaining[0][2] == checkpoint.hash
        assert (await verify_stored_chain(session, chain_id=chain)).ok
        assert await verify_checkpoint(session, signer=env.container.audit_signer, chain_id=chain)
        # A tampered checkpoint is detected.
        checkpoint.hash = "0" * 64
        assert not await verify_checkpoint(
            session, signer=env.container.audit_signer, chain_id=chain
        )
        await session.rollback()
    # Running again changes nothing (idempotent).
    again = await env.container.maintenance.run_once()
    assert again["auditChainsSealed"] == 0
    async with env.container.session_factory() as session:
        count = (
            await session.execute(
                select(func.count())
                .select_from(AuditCheckpoint)
                .where(AuditCheckpoint.chain_id == chain)
            )
        ).scalar_one()
    assert count == 1


async def test_exports_verify_from_the_checkpoint_and_old_exports_expire(
    env: Env, tmp_path: Path
) -> None:
    headers = await env.admin_headers()
    org = await env.create_org()
    for i in range(3):
        await env.client.patch(f"/v1/orgs/{org['orgId']}", json={"name": f"R{i}"}, headers=headers)
    start = (utcnow() - dt.timedelta(hours=1)).isoformat()
    before_purge, _body, _sig = await export_files(
        env, org["orgId"], start, utcnow().isoformat(), headers
    )
    await wait_outbox_empty(env.container)
    # Pretend 401 days passed, for this org's chain only.
    report = await purge_expired(
        session_factory=env.container.session_factory,
        signer=env.container.audit_signer,
        retention_days=400,
        now=utcnow() + dt.timedelta(days=401),
        only_chains=[org["orgId"]],
    )
    assert report.chains_sealed == 1 and report.events_purged == 5
    gone = await env.client.get(
        f"/v1/audit/exports/{before_purge['exportId']}/download", headers=headers
    )
    assert (gone.status_code, gone.json()["code"]) == (410, "export_expired")

    await env.client.patch(f"/v1/orgs/{org['orgId']}", json={"name": "After"}, headers=headers)
    status, body, signature = await export_files(
        env, org["orgId"], start, utcnow().isoformat(), headers
    )
    header = orjson.loads(body.splitlines()[0])
    assert header["checkpoint"]["seq"] == 5
    assert header["firstSeq"] == 6 and header["anchorHash"] == header["checkpoint"]["hash"]
    keys = await public_key_pems(env, headers)
    (tmp_path / "e.ndjson").write_bytes(body)
    (tmp_path / "e.sig").write_bytes(signature)
    (tmp_path / "k.pem").write_text(keys[status["keyId"]])
    result = subprocess.run(
        [
            *USERORG,
            "audit",
            "verify",
            str(tmp_path / "e.ndjson"),
            "--signature",
            str(tmp_path / "e.sig"),
            "--public-key",
            str(tmp_path / "k.pem"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "checkpoint: valid" in result.stdout
