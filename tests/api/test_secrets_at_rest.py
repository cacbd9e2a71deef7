"""Secrets at rest: a full end-to-end run hands out every kind of secret the service has
(passwords, access and refresh tokens, TOTP secrets and recovery codes, OAuth client secrets,
API keys, invite and password-reset tokens) and is configured with the rest (webhook secrets,
the bootstrap password, the master key); then every column of every table is read back and
none of those secrets may appear, neither as it was handed out nor encoded (base64, base64url,
hex, the random part of a prefixed token, a TOTP secret's raw bytes). The audit stream file is
scanned too.

Runs against a fresh database in embedded mode (local key), production mode (PostgreSQL +
Redis, local master key) and production mode with the keystore and audit signer on a real
OpenBao Transit engine.
"""

from __future__ import annotations

import base64
import binascii
import secrets as pysecrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import inspect, text

from tests.conftest import base_settings, start_env
from tests.support import services
from tests.support.api import Env, bearer, uid
from tests.support.authenticators import TotpApp
from tests.support.openbao import BaoServer
from tests.support.receiver import WebhookReceiver

WEBHOOK_SECRET = "test-webhook-secret"
DECLARATIVE_SECRET = "declarative-hook-" + pysecrets.token_hex(12)
MIN_NEEDLE = 12  # shorter fragments would match by chance


@pytest.fixture(params=["embedded", "production", "production-vault"])
async def fresh_env(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    receiver: WebhookReceiver,
) -> AsyncIterator[Env]:
    mode = request.param.split("-")[0]
    overrides: dict[str, Any] = {
        "notifier": "webhook",
        "notify_webhook_url": receiver.url,
        "notify_webhook_secret": WEBHOOK_SECRET,
        "notify_retry_base_seconds": 0.05,
        "notify_poll_interval_seconds": 0.1,
        "declarative_webhook_secret": DECLARATIVE_SECRET,
        "bootstrap_admin_password": "Bootstrap-" + pysecrets.token_urlsafe(16),
        "audit_stream": "file",
    }
    if mode == "production":
        services.require_redis()
        overrides["database_url"] = request.getfixturevalue("fresh_pg_database")
    if request.param == "production-vault":
        bao: BaoServer = request.getfixturevalue("bao")
        overrides.update(
            keystore="vault",
            vault_addr=bao.address,
            vault_token=bao.token,
            vault_keystore_key=f"ks-{uid()}",
            vault_audit_key=f"audit-{uid()}",
        )
    data_dir: Path = tmp_path_factory.mktemp(f"at-rest-{request.param}")
    env, manager = await start_env(mode, base_settings(mode, data_dir, **overrides), receiver)
    try:
        yield env
    finally:
        await env.client.aclose()
        await manager.__aexit__(None, None, None)


def ok(response: httpx.Response, status: int = 200) -> dict[str, Any]:
    assert response.status_code == status, response.text
    return response.json() if response.content else {}


async def hand_out_everything(env: Env) -> dict[str, str]:
    """Drive the service like its clients; return every secret it handed out, by name."""
    handed: dict[str, str] = {}
    client = env.client
    admin = bearer(await env.login(env.admin_email, env.admin_password))
    org = await env.create_org()
    org_id = org["orgId"]

    # Invitation (token delivered through the signed webhook), acceptance with a password.
    email = f"member-{uid()}@example.com"
    invite_token = await env.invite(org_id, email, ["OrgAdmin"])
    handed["invite_token"] = invite_token
    password = "Member-" + pysecrets.token_urlsafe(18)
    handed["password"] = password
    ok(
        await client.post(
            "/v1/invites/accept",
            json={"token": invite_token, "password": password, "displayName": "M"},
        )
    )
    login = ok(await client.post("/v1/auth/login", json={"email": email, "password": password}))
    handed["access_token"] = login["accessToken"]
    handed["refresh_token"] = login["refreshToken"]
    rotated = ok(
        await client.post("/v1/auth/refresh", json={"refreshToken": login["refreshToken"]})
    )
    handed["refresh_token_2"] = rotated["refreshToken"]
    member = bearer(rotated["accessToken"])

    # TOTP enrolment: the secret and the recovery codes are shown once.
    enrolled = ok(await client.post("/v1/auth/mfa/totp/enroll", headers=member))
    handed["totp_secret"] = enrolled["secret"]
    app = TotpApp(enrolled["secret"])
    confirmed = ok(
        await client.post(
            "/v1/auth/mfa/totp/confirm", json={"code": await app.code()}, headers=member
        )
    )
    for i, code in enumerate(confirmed["recoveryCodes"]):
        handed[f"recovery_code_{i}"] = code

    # Password reset (token through the webhook) to a new password.
    ok(await client.post("/v1/auth/password/forgot", json={"email": email}), 202)
    message = await env.receiver.wait_for(kind="password_reset", to=email)
    handed["reset_token"] = message["token"]
    new_password = "Reset-" + pysecrets.token_urlsafe(18)
    handed["new_password"] = new_password
    ok(
        await client.post(
            "/v1/auth/password/reset", json={"token": message["token"], "newPassword": new_password}
        ),
        204,
    )

    # Service account: OAuth client secret (and its rotation), client-credentials token.
    account = ok(
        await client.post(
            f"/v1/orgs/{org_id}/service-accounts",
            json={"name": f"bot-{uid()}", "roles": ["Developer"]},
            headers=admin,
        ),
        201,
    )
    account_url = f"/v1/orgs/{org_id}/service-accounts/{account['serviceAccountId']}"
    if account.get("clientSecret"):
        handed["client_secret_initial"] = account["clientSecret"]
    rotated_client = ok(await client.post(f"{account_url}/client-secret", headers=admin))
    handed["client_secret"] = rotated_client["clientSecret"]
    token = ok(
        await client.post(
            "/oauth2/token",
            data={"grant_type": "client_credentials"},
            auth=(rotated_client["clientId"], rotated_client["clientSecret"]),
        )
    )
    handed["machine_access_token"] = token["access_token"]

    # API keys: issue, use, rotate.
    key = ok(
        await client.post(
            f"{account_url}/api-keys", json={"scopes": ["inference:invoke"]}, headers=admin
        ),
        201,
    )
    handed["api_key"] = key["secret"]
    allowed = ok(
        await client.post(
            "/v1/authorize",
            json={"credential": key["secret"], "action": "inference:invoke", "resource": "m"},
        )
    )
    assert allowed["decision"] == "allow", allowed
    rotated_key = ok(
        await client.post(
            f"/v1/orgs/{org_id}/api-keys/{key['apiKeyId']}/rotate", json={}, headers=admin
        )
    )
    handed["api_key_rotated"] = rotated_key["secret"]

    # Not secrets: a positive control that the scan reads the rows these calls wrote.
    handed["_control_email"] = email
    handed["_control_key_id"] = key["apiKeyId"]

    # Configured secrets.
    handed["bootstrap_password"] = env.admin_password
    handed["notify_webhook_secret"] = WEBHOOK_SECRET
    handed["declarative_webhook_secret"] = DECLARATIVE_SECRET
    if env.settings.master_key is not None:
        handed["master_key"] = env.settings.master_key.get_secret_value()
    if env.settings.vault_token is not None:
        handed["vault_token"] = env.settings.vault_token.get_secret_value()
    # Publish the audit outbox, so the stream file holds what the outbox held.
    await env.container.audit_relay.run_once()
    return handed


def forms(secret: str) -> set[str]:
    """The secret and the encodings it might be stored in."""
    raw = secret.encode()
    found = {
        secret,
        base64.b64encode(raw).decode().rstrip("="),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
        raw.hex(),
    }
    # The random part of a prefixed token (uok_live_…, uort_…, uocs_…).
    tail = secret.rsplit("_", 1)[-1]
    if len(tail) >= 20:
        found.add(tail)
    # A TOTP secret is base32: its raw bytes could be stored in other encodings.
    try:
        decoded = base64.b32decode(secret + "=" * (-len(secret) % 8))
    except (binascii.Error, ValueError):
        decoded = b""
    if len(decoded) >= 10:
        found |= {
            decoded.hex(),
            base64.b64encode(decoded).decode().rstrip("="),
            base64.urlsafe_b64encode(decoded).decode().rstrip("="),
        }
    # A base64 master key: its raw bytes, in hex.
    try:
        key_bytes = base64.b64decode(secret, validate=True)
    except (binascii.Error, ValueError):
        key_bytes = b""
    if len(key_bytes) == 32:
        found.add(key_bytes.hex())
    return {form for form in found if len(form) >= MIN_NEEDLE}


def render(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
        return data.decode("latin-1") + " " + data.hex()
    if isinstance(value, dict | list):
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS, default=str).decode()
    return str(value)


async def dump_database(env: Env) -> dict[str, list[str]]:
    """Every column of every table (reflected from the database, not from the models)."""
    cells: dict[str, list[str]] = {}
    async with env.container.engine.connect() as conn:
        tables = await conn.run_sync(lambda sync: inspect(sync).get_table_names())
        assert len(tables) >= 15, tables
        for table in tables:
            result = await conn.execute(text(f'SELECT * FROM "{table}"'))
            columns = list(result.keys())
            for row in result.all():
                for column, value in zip(columns, row, strict=True):
                    cells.setdefault(f"{table}.{column}", []).append(render(value))
    return cells


async def test_no_handed_out_secret_is_stored(fresh_env: Env) -> None:
    env = fresh_env
    handed = await hand_out_everything(env)
    controls = {name: handed.pop(name) for name in list(handed) if name.startswith("_control")}
    assert len(handed) >= 20, sorted(handed)
    needles = {form: name for name, secret in handed.items() for form in forms(secret)}
    cells = await dump_database(env)
    total = sum(len(values) for values in cells.values())
    assert total > 200, total
    for name, value in controls.items():
        assert any(value in cell for values in cells.values() for cell in values), name
    print(
        f"\nat-rest[{env.mode}]: {len(handed)} secrets, {len(needles)} forms, {len(cells)} "
        f"columns, {total} cells scanned"
    )
    hits = [
        (column, needles[needle])
        for column, values in cells.items()
        for value in values
        for needle in needles
        if needle in value
    ]
    assert not hits, hits
    # The rows that hold these secrets' protected forms are there (the scan saw them), and
    # the TOTP secret is sealed by the configured keystore (Transit in the vault run).
    assert any(column.startswith("api_keys.secret_hash") for column in cells)
    sealed = [v for c, values in cells.items() if c.endswith(".secret_encrypted") for v in values]
    assert sealed
    prefix = "v1:vault:" if env.settings.keystore == "vault" else "v1:local:"
    assert all(value.startswith(prefix) for value in sealed), sealed
    stream = env.settings.effective_audit_stream_file
    if stream.exists():
        content = stream.read_text()
        leaked = sorted({name for needle, name in needles.items() if needle in content})
        assert not leaked, leaked


def test_the_scan_finds_a_planted_secret() -> None:
    """The scan is able to fail: each encoding of a secret is found in a rendered cell."""
    secret = "uok_live_" + pysecrets.token_urlsafe(30)
    for form in forms(secret):
        assert any(needle in render({"x": form}) for needle in forms(secret))
    totp = base64.b32encode(pysecrets.token_bytes(20)).decode()
    raw = base64.b32decode(totp)
    assert raw.hex() in forms(totp)
    assert any(needle in render(raw) for needle in forms(totp))
