"""USER_ORG_OPA_URL: decisions asked of an OPA data API serving the bundle of the same policies.

The OPA side is tests/support/opa_shim.py: OPA's own Go evaluator behind OPA's data API (no
`opa` binary can be installed on this machine; see docs/authorization.md).
"""

from __future__ import annotations

import dataclasses
import io
import json
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import WEBHOOK_SECRET, base_settings, start_env
from tests.policy.test_policy_suite import require_opa_bindings
from tests.support.api import Env
from tests.support.opa_shim import OpaShim
from tests.support.receiver import WebhookReceiver
from userorg.authz.engine import AuthzRequest, PolicyUnavailable
from userorg.authz.opa import RemoteOpaEngine, build_bundle
from userorg.authz.policyset import PolicyConfig, load_policy_set
from userorg.settings import Settings

POLICIES = Settings().effective_policy_dir


def bundle() -> bytes:
    return build_bundle(load_policy_set(POLICIES, PolicyConfig()))


def test_bundle_layout() -> None:
    policy = load_policy_set(POLICIES, PolicyConfig())
    with tarfile.open(fileobj=io.BytesIO(build_bundle(policy)), mode="r:gz") as archive:
        names = {m.name.lstrip("/") for m in archive.getmembers()}
        manifest = json.loads(archive.extractfile("/.manifest").read())  # type: ignore[union-attr]
    assert manifest == {"revision": policy.revision, "roots": ["userorg"]}
    assert "userorg/data.json" in names
    assert "userorg/authz/main.rego" in names
    assert not any(n.endswith("_test.rego") for n in names)


@pytest.fixture
async def opa_env(tmp_path: Path, receiver: WebhookReceiver) -> AsyncIterator[tuple[Env, OpaShim]]:
    require_opa_bindings()
    shim = OpaShim(bundle()).start()
    values: dict[str, Any] = base_settings(
        "embedded",
        tmp_path,
        opa_url=shim.url,
        notifier="webhook",
        notify_webhook_url=receiver.url,
        notify_webhook_secret=WEBHOOK_SECRET,
        notify_retry_base_seconds=0.05,
        notify_poll_interval_seconds=0.1,
    )
    env, manager = await start_env("embedded", values, receiver)
    try:
        yield env, shim
    finally:
        await env.client.aclose()
        await manager.__aexit__(None, None, None)
        shim.stop()


async def test_decisions_come_from_the_opa_server(opa_env: tuple[Env, OpaShim]) -> None:
    env, shim = opa_env
    org = await env.create_org()
    viewer = await env.add_member(org["orgId"], ["OrgViewer"])
    asked = shim.requests
    listed = await env.client.get(f"/v1/orgs/{org['orgId']}/users", headers=viewer.headers)
    assert listed.status_code == 200
    denied = await env.client.post(
        f"/v1/orgs/{org['orgId']}/roles",
        json={"name": "X1", "scopes": ["orgs:read"]},
        headers=viewer.headers,
    )
    assert denied.status_code == 403
    assert denied.json()["details"] == {
        "permission": "roles:write",
        "reason": "scope_missing",
        "policyId": "userorg.authz.rbac",
    }
    assert shim.requests > asked
    # The PDP answers through OPA as well.
    answer = await env.client.post(
        "/v1/policy/evaluate",
        json={
            "subject": {
                "orgId": org["orgId"],
                "principalId": viewer.user_id,
                "principalType": "user",
            },
            "action": "users:read",
        },
        headers=await env.admin_headers(),
    )
    assert answer.status_code == 200
    assert answer.json()["decision"] == "allow"
    info = (await env.client.get("/v1/policy/info", headers=await env.admin_headers())).json()
    assert info["engine"] == "opa"
    assert info["url"] == shim.url
    assert info["revision"] == shim.revision
    ready = await env.client.get("/readyz")
    assert ready.json()["checks"]["policy"]["status"] == "up"


async def test_an_unreachable_opa_fails_closed(opa_env: tuple[Env, OpaShim]) -> None:
    env, shim = opa_env
    org = await env.create_org()
    viewer = await env.add_member(org["orgId"], ["OrgViewer"])
    shim.stop()
    response = await env.client.get(f"/v1/orgs/{org['orgId']}/audit-events", headers=viewer.headers)
    assert response.status_code == 503
    assert response.json()["code"] == "policy_unavailable"
    ready = await env.client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["policy"]["status"] == "down"


async def test_remote_engine_contract(tmp_path: Path) -> None:
    require_opa_bindings()
    shim = OpaShim(bundle()).start()
    engine = RemoteOpaEngine(
        url=shim.url, timeout_seconds=2, directory=POLICIES, config=PolicyConfig()
    )
    engine.load()
    request = AuthzRequest(
        permission="inference:invoke",
        principal_id="u1",
        principal_type="user",
        org_id="o1",
        org_status="active",
        membership_status="active",
        roles=frozenset({"Developer"}),
        custom_role_scopes=frozenset(),
    )
    try:
        with pytest.raises(PolicyUnavailable):
            engine.decide(request)  # synchronous callers get cache hits only
        decision = await engine.decide_async(request)
        assert decision.allow
        assert engine.decide(request) is decision  # now cached
        blocked = await engine.decide_async(dataclasses.replace(request, budget_status="block"))
        assert (blocked.allow, blocked.reason) == (False, "budget_exceeded")
    finally:
        await engine.close()
        shim.stop()
    undefined = OpaShim(build_bundle(load_policy_set(POLICIES, PolicyConfig()))).start()
    try:
        empty = RemoteOpaEngine(
            url=undefined.url + "/nothing-here",
            timeout_seconds=2,
            directory=POLICIES,
            config=PolicyConfig(),
        )
        with pytest.raises(PolicyUnavailable):
            await empty.decide_async(request)
        await empty.close()
    finally:
        undefined.stop()
