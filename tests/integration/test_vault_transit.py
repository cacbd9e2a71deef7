"""Vault/OpenBao Transit against a real ``bao server -dev``: keystore and audit signing."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import base_settings, start_env
from tests.support.audit import export_files, public_key_pems
from tests.support.openbao import BaoServer
from tests.support.receiver import WebhookReceiver
from userorg.audit.signing import TransitSigner, load_public_key, verify_signature
from userorg.platform.keystore import KeystoreError, VaultTransitKeystore
from userorg.platform.vault import VaultUnavailable, make_client
from userorg.settings import Settings

USERORG = [sys.executable, "-m", "userorg"]


def _keystore(bao: BaoServer, key: str = "test-keystore") -> VaultTransitKeystore:
    return VaultTransitKeystore(
        make_client(bao.address, bao.token, timeout=5), mount="transit", key_name=key
    )


async def test_keystore_round_trip_is_bound_to_its_context(bao: BaoServer) -> None:
    keystore = _keystore(bao)
    secret = b"JBSWY3DPEHPK3PXP totp secret"
    sealed = await keystore.encrypt(secret, context="totp:user-1")
    assert sealed.startswith("v1:vault:")
    assert b"JBSWY3DP" not in base64.urlsafe_b64decode(sealed.rsplit(":", 1)[1])
    assert await keystore.decrypt(sealed, context="totp:user-1") == secret
    with pytest.raises(KeystoreError):
        await keystore.decrypt(sealed, context="totp:user-2")
    # Another replica (no cached data key) unwraps through Transit.
    assert await _keystore(bao).decrypt(sealed, context="totp:user-1") == secret
    # After a Transit key rotation old ciphertexts still decrypt; new ones use the new version.
    await asyncio.to_thread(bao.client().secrets.transit.rotate_key, name="test-keystore")
    fresh = _keystore(bao)
    assert await fresh.decrypt(sealed, context="totp:user-1") == secret
    newer = await fresh.encrypt(b"after rotation", context="c")
    assert b"vault:v2:" in base64.urlsafe_b64decode(newer.split(":")[2])
    with pytest.raises(KeystoreError):
        await keystore.decrypt("v1:local:abc", context="c")


async def test_unreachable_vault_is_a_dependency_error() -> None:
    dead = VaultTransitKeystore(
        make_client("http://127.0.0.1:1", "token", timeout=1), mount="transit", key_name="k"
    )
    with pytest.raises(VaultUnavailable) as caught:
        await dead.encrypt(b"x", context="c")
    assert caught.value.status == 503
    assert caught.value.code == "dependency_unavailable"


async def test_transit_signatures_verify_with_every_published_key(bao: BaoServer) -> None:
    signer = TransitSigner(
        make_client(bao.address, bao.token, timeout=5), mount="transit", key_name="test-audit"
    )
    await signer.start()
    first_id = await signer.active_key_id()
    digest = hashlib.sha256(b"an export").digest()
    first = await signer.sign(digest, key_id=first_id)
    assert len(first.value) == 64
    rotated = await signer.rotate()
    assert rotated.key_id != first_id and rotated.status == "active"
    second = await signer.sign(digest, key_id=rotated.key_id)
    keys = {k.key_id: k for k in await signer.public_keys()}
    assert keys[first_id].status == "retired"
    assert verify_signature(load_public_key(keys[first_id].public_key_pem), first.value, digest)
    assert verify_signature(
        load_public_key(keys[rotated.key_id].public_key_pem), second.value, digest
    )
    assert not verify_signature(
        load_public_key(keys[first_id].public_key_pem), second.value, digest
    )


def test_vault_settings_are_checked_at_start(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from userorg.settings import format_settings_error

    for values, variable in (
        ({"keystore": "vault"}, "USER_ORG_VAULT_ADDR"),
        ({"audit_signer": "vault", "vault_addr": "http://x:8200"}, "USER_ORG_VAULT_ADDR"),
        (
            {
                "mode": "production",
                "database_url": "postgresql://x/y",
                "redis_url": "redis://x",
                "master_key": base64.b64encode(b"k" * 32).decode(),
            },
            "USER_ORG_KAFKA_BOOTSTRAP_SERVERS",
        ),
    ):
        with pytest.raises(ValidationError) as caught:
            Settings(data_dir=tmp_path, **values)
        assert variable in format_settings_error(caught.value)
    assert (
        Settings(
            data_dir=tmp_path, vault_addr="http://x:8200", vault_token="t"
        ).effective_audit_signer
        == "vault"
    )


async def test_production_service_on_vault_signs_exports_that_verify_offline(
    tmp_path: Path, fresh_pg_database: str, receiver: WebhookReceiver, bao: BaoServer
) -> None:
    """Keystore and audit signing both on Transit; the export verifies with the published key."""
    settings = base_settings(
        "production",
        tmp_path,
        database_url=fresh_pg_database,
        keystore="vault",
        master_key=None,
        vault_addr=bao.address,
        vault_token=bao.token,
        vault_keystore_key="app-keystore",
        vault_audit_key="app-audit",
    )
    env, manager = await start_env("production", settings, receiver)
    try:
        assert env.container.audit_signer.name == "vault"
        headers = await env.admin_headers()  # sign-in works: JWT keys are sealed by Transit
        org = await env.create_org()
        await env.client.patch(
            f"/v1/orgs/{org['orgId']}", json={"name": "Vaulted"}, headers=headers
        )
        now = dt.datetime.now(dt.UTC)
        status, body, signature = await export_files(
            env,
            org["orgId"],
            (now - dt.timedelta(hours=1)).isoformat(),
            now.isoformat(),
            headers,
        )
        keys = await public_key_pems(env, headers)
        transit = bao.client().secrets.transit.read_key(name="app-audit")["data"]["keys"]
        published = {
            base64.b64encode(load_public_key(pem).public_bytes_raw()).decode()
            for pem in keys.values()
        }
        assert {v["public_key"] for v in transit.values()} == published
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
        # Nothing secret is stored in the clear: the JWT signing key is a Transit envelope.
        from sqlalchemy import select

        from userorg.authn.models import SigningKey

        async with env.container.session_factory() as session:
            sealed = (
                (await session.execute(select(SigningKey.private_key_encrypted))).scalars().all()
            )
        assert sealed and all(value.startswith("v1:vault:") for value in sealed)
    finally:
        await env.client.aclose()
        await manager.__aexit__(None, None, None)
