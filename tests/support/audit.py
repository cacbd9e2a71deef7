"""Helpers for audit pipeline tests: the outbox, the stream (topic or JSONL file), exports."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import func, select

from tests.support.api import Env
from tests.support.kafka import read_topic
from userorg.audit.models import AuditOutbox
from userorg.container import Container

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "docs" / "schemas" / "audit-event.v1.json"


def event_schema_validator() -> Any:
    from jsonschema import Draft202012Validator, FormatChecker

    schema = json.loads(SCHEMA_PATH.read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=FormatChecker())


async def outbox_size(container: Container) -> int:
    async with container.session_factory() as session:
        return int(
            (await session.execute(select(func.count()).select_from(AuditOutbox))).scalar_one()
        )


async def wait_outbox_empty(container: Container, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await outbox_size(container) == 0:
            return
        container.audit_relay.wake()
        await asyncio.sleep(0.05)
    raise AssertionError(f"the audit outbox did not drain in {timeout}s")


async def stream_documents(env: Env, *, expect_ids: set[str] | None = None) -> list[dict[str, Any]]:
    """Every event on the env's stream (Kafka topic or JSONL file), as (headers, key, doc)."""
    settings = env.settings
    if settings.effective_audit_stream == "kafka":
        assert settings.kafka_bootstrap_servers is not None

        def done(records: list[Any]) -> bool:
            return expect_ids is None or expect_ids <= {r.value["eventId"] for r in records}

        records = await asyncio.to_thread(
            read_topic,
            settings.kafka_bootstrap_servers,
            settings.audit_topic,
            until=done if expect_ids is not None else None,
        )
        return [
            {"doc": r.value, "key": r.key, "headers": r.headers, "partition": r.partition}
            for r in records
        ]
    path = settings.effective_audit_stream_file
    lines = path.read_bytes().splitlines() if path.exists() else []
    return [{"doc": orjson.loads(line), "key": None, "headers": {}} for line in lines]


async def wait_export(
    env: Env, export_id: str, headers: dict[str, str], timeout: float = 30.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = await env.client.get(f"/v1/audit/exports/{export_id}", headers=headers)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        if body["status"] in {"completed", "failed"}:
            return body
        env.container.audit_exports._wakeup.set()
        await asyncio.sleep(0.05)
    raise AssertionError(f"export {export_id} did not finish in {timeout}s")


async def export_files(
    env: Env, org_ref: str, window_from: str, window_to: str, headers: dict[str, str]
) -> tuple[dict[str, Any], bytes, bytes]:
    """Request an export, wait for it, download file and signature."""
    created = await env.client.post(
        "/v1/audit/export",
        json={"orgId": org_ref, "from": window_from, "to": window_to},
        headers=headers,
    )
    assert created.status_code == 202, created.text
    assert created.json()["status"] == "pending"
    status = await wait_export(env, created.json()["exportId"], headers)
    assert status["status"] == "completed", status
    download = await env.client.get(
        f"/v1/audit/exports/{status['exportId']}/download", headers=headers
    )
    assert download.status_code == 200, download.text
    signature = await env.client.get(
        f"/v1/audit/exports/{status['exportId']}/signature", headers=headers
    )
    assert signature.status_code == 200, signature.text
    return status, download.content, signature.content


async def public_key_pems(env: Env, headers: dict[str, str]) -> dict[str, str]:
    response = await env.client.get("/v1/audit/keys", headers=headers)
    assert response.status_code == 200, response.text
    return {k["keyId"]: k["publicKeyPem"] for k in response.json()["keys"]}
