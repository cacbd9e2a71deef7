"""Signed exports through the API: produce, download, verify offline (CLI and openssl)."""

from __future__ import annotations

import datetime as dt
import hashlib
import subprocess
import sys
import uuid
from pathlib import Path

import orjson
from sqlalchemy import func, select

from tests.support.api import Env
from tests.support.audit import export_files, public_key_pems
from userorg.audit.models import AuditExport

USERORG = [sys.executable, "-m", "userorg"]


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _window() -> tuple[str, str]:
    now = dt.datetime.now(dt.UTC)
    return _iso(now - dt.timedelta(hours=1)), _iso(now)


async def test_export_is_signed_streamed_and_verifies_offline(env: Env, tmp_path: Path) -> None:
    headers = await env.admin_headers()
    org = await env.create_org()
    for i in range(6):
        await env.client.patch(f"/v1/orgs/{org['orgId']}", json={"name": f"E{i}"}, headers=headers)
    window_from, window_to = _window()
    status, body, signature = await export_files(env, org["slug"], window_from, window_to, headers)
    assert status["eventCount"] == 7
    assert status["orgId"] == org["orgId"]
    assert status["sha256"] == hashlib.sha256(body).hexdigest()
    assert status["sizeBytes"] == len(body)
    assert len(signature) == 64
    lines = body.splitlines()
    header = orjson.loads(lines[0])
    assert header["kind"] == "userorg.audit.export"
    assert header["firstSeq"] == 1 and header["lastSeq"] == 7 and header["eventCount"] == 7
    assert header["keyId"] == status["keyId"]
    events = [orjson.loads(line) for line in lines[1:]]
    assert [e["seq"] for e in events] == list(range(1, 8))
    assert events[-1]["action"] == "api:organization:update"
    # The request itself is audited (after the window's last event).
    requested = await env.audit_events(org["orgId"], action="api:audit_export:create")
    assert requested[0]["target"]["id"] == status["exportId"]

    keys = await public_key_pems(env, headers)
    assert status["keyId"] in keys
    export_path, sig_path, key_path = (
        tmp_path / "export.ndjson",
        tmp_path / "export.sig",
        tmp_path / "key.pem",
    )
    export_path.write_bytes(body)
    sig_path.write_bytes(signature)
    key_path.write_text(keys[status["keyId"]])
    verified = subprocess.run(
        [
            *USERORG,
            "audit",
            "verify",
            str(export_path),
            "--signature",
            str(sig_path),
            "--public-key",
            str(key_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "signature: valid" in verified.stdout
    assert "VERIFIED" in verified.stdout

    # Standard tools: the signature is Ed25519 over the file's SHA-256 digest (docs/audit.md).
    digest_path = tmp_path / "export.sha256"
    subprocess.run(
        ["openssl", "dgst", "-sha256", "-binary", "-out", str(digest_path), str(export_path)],
        check=True,
        timeout=30,
    )
    openssl = subprocess.run(
        [
            "openssl",
            "pkeyutl",
            "-verify",
            "-pubin",
            "-inkey",
            str(key_path),
            "-rawin",
            "-in",
            str(digest_path),
            "-sigfile",
            str(sig_path),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert openssl.returncode == 0, openssl.stdout + openssl.stderr
    assert "Signature Verified Successfully" in openssl.stdout
    export_path.write_bytes(body.replace(b'"E3"', b'"E9"'))
    subprocess.run(
        ["openssl", "dgst", "-sha256", "-binary", "-out", str(digest_path), str(export_path)],
        check=True,
        timeout=30,
    )
    tampered = subprocess.run(
        [
            "openssl",
            "pkeyutl",
            "-verify",
            "-pubin",
            "-inkey",
            str(key_path),
            "-rawin",
            "-in",
            str(digest_path),
            "-sigfile",
            str(sig_path),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert tampered.returncode != 0

    # Each event's hash can be recomputed with sed + sha256sum (docs/audit.md).
    export_path.write_bytes(body)
    recomputed = subprocess.run(
        [
            "bash",
            "-c",
            f'sed -n 2p {export_path} | sed -E \'s/,"hash":"[0-9a-f]{{64}}"}}$/}}/\' '
            "| tr -d '\\n' | sha256sum",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert recomputed.stdout.split()[0] == events[0]["hash"]

    # Downloading again yields the same bytes, although the chain has grown since.
    again = await env.client.get(
        f"/v1/audit/exports/{status['exportId']}/download", headers=headers
    )
    assert again.content == body
    assert again.headers["content-type"].startswith("application/x-ndjson")
    assert again.headers["x-content-sha256"] == status["sha256"]


async def test_empty_window_and_the_platform_chain(env: Env) -> None:
    headers = await env.admin_headers()
    org = await env.create_org()
    status, body, _sig = await export_files(
        env, org["orgId"], "2020-01-01T00:00:00Z", "2020-02-01T00:00:00Z", headers
    )
    assert status["eventCount"] == 0
    assert orjson.loads(body.splitlines()[0])["firstSeq"] is None
    assert len(body.splitlines()) == 1
    window_from, window_to = _window()
    platform, _body, _sig = await export_files(env, "platform", window_from, window_to, headers)
    assert platform["orgId"] == "platform"


async def test_bad_input_is_a_clear_4xx_and_changes_nothing(env: Env) -> None:
    headers = await env.admin_headers()
    org = await env.create_org()
    outsider_org = await env.create_org()
    outsider = await env.add_member(outsider_org["orgId"], ["OrgOwner"])
    developer = await env.add_member(org["orgId"], ["Developer"])
    now = dt.datetime.now(dt.UTC)
    async with env.container.session_factory() as session:
        before = (await session.execute(select(func.count()).select_from(AuditExport))).scalar_one()

    async def post(body: dict, who: dict[str, str] | None = None) -> tuple[int, dict]:
        response = await env.client.post("/v1/audit/export", json=body, headers=who or headers)
        return response.status_code, response.json()

    base = {"orgId": org["orgId"]}
    cases = [
        (
            {**base, "from": _iso(now), "to": _iso(now - dt.timedelta(days=1))},
            422,
            "invalid_time_window",
        ),
        ({**base, "from": _iso(now), "to": _iso(now)}, 422, "invalid_time_window"),
        (
            {**base, "from": _iso(now - dt.timedelta(days=400)), "to": _iso(now)},
            422,
            "window_too_large",
        ),
        (
            {**base, "from": _iso(now), "to": _iso(now + dt.timedelta(days=2))},
            422,
            "window_in_future",
        ),
        ({**base, "from": _iso(now)}, 422, "validation_error"),
        ({**base, "to": _iso(now)}, 422, "validation_error"),
        ({**base, "from": "2025-01-01T00:00:00", "to": _iso(now)}, 422, "validation_error"),
        ({**base, "from": "yesterday", "to": _iso(now)}, 422, "validation_error"),
        (
            {"orgId": "no-such-org", "from": _iso(now - dt.timedelta(days=1)), "to": _iso(now)},
            404,
            "organization_not_found",
        ),
    ]
    for body, status, code in cases:
        got_status, got = await post(body)
        assert (got_status, got["code"]) == (status, code), (body, got)
        assert got["message"]
    window = {"from": _iso(now - dt.timedelta(days=1)), "to": _iso(now)}
    # Another org's admin learns nothing; a member without audit:export is denied (403).
    status, body = await post({**base, **window}, outsider.headers)
    assert (status, body["code"]) == (404, "organization_not_found")
    status, body = await post({**base, **window}, developer.headers)
    assert (status, body["code"]) == (403, "forbidden")
    assert body["details"]["permission"] == "audit:export"
    status, body = await post({"orgId": "platform", **window}, developer.headers)
    assert status == 403
    async with env.container.session_factory() as session:
        after = (await session.execute(select(func.count()).select_from(AuditExport))).scalar_one()
    assert after == before

    # Unknown export ids, and other orgs' exports, are the same 404.
    unknown = await env.client.get(f"/v1/audit/exports/{uuid.uuid4()}", headers=headers)
    assert (unknown.status_code, unknown.json()["code"]) == (404, "audit_export_not_found")
    bad_id = await env.client.get("/v1/audit/exports/not-a-uuid", headers=headers)
    assert bad_id.status_code == 422
    created = await env.client.post("/v1/audit/export", json={**base, **window}, headers=headers)
    export_id = created.json()["exportId"]
    for suffix in ("", "/download", "/signature"):
        probe = await env.client.get(
            f"/v1/audit/exports/{export_id}{suffix}", headers=outsider.headers
        )
        assert (probe.status_code, probe.json()["code"]) == (404, "audit_export_not_found")
    denial = await env.audit_events(org["orgId"], action="authz:access:deny")
    assert denial[0]["actor"]["id"] == outsider.user_id


async def test_keys_are_published_and_rotation_keeps_old_ones(env: Env, tmp_path: Path) -> None:
    headers = await env.admin_headers()
    org = await env.create_org()
    window_from, window_to = _window()
    old_status, old_body, old_sig = await export_files(
        env, org["orgId"], window_from, window_to, headers
    )
    await env.container.audit_signer.rotate()
    keys = (await env.client.get("/v1/audit/keys", headers=headers)).json()["keys"]
    by_id = {k["keyId"]: k for k in keys}
    assert by_id[old_status["keyId"]]["status"] == "retired"
    assert by_id[old_status["keyId"]]["algorithm"] == "Ed25519"
    active = [k for k in keys if k["status"] == "active"]
    assert len(active) == 1 and active[0]["keyId"] != old_status["keyId"]
    new_status, _body, _sig = await export_files(
        env, org["orgId"], window_from, _iso(dt.datetime.now(dt.UTC)), headers
    )
    assert new_status["keyId"] == active[0]["keyId"]
    # The export signed before the rotation still verifies with the retired key.
    (tmp_path / "old.ndjson").write_bytes(old_body)
    (tmp_path / "old.sig").write_bytes(old_sig)
    (tmp_path / "old.pem").write_text(by_id[old_status["keyId"]]["publicKeyPem"])
    result = subprocess.run(
        [
            *USERORG,
            "audit",
            "verify",
            str(tmp_path / "old.ndjson"),
            "--signature",
            str(tmp_path / "old.sig"),
            "--public-key",
            str(tmp_path / "old.pem"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    anonymous = await env.client.get("/v1/audit/keys")
    assert anonymous.status_code == 401
