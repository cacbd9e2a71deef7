"""Hot reload over HTTP: a policy change takes effect without a restart; a broken policy never
does (the good one keeps serving and /readyz shows the failure)."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import WEBHOOK_SECRET, base_settings, start_env
from tests.support.api import Env
from tests.support.receiver import WebhookReceiver
from userorg.settings import Settings

POLICIES = Settings().effective_policy_dir

FREEZE = """package userorg.authz.custom

deny contains {"reason": "change_freeze", "policy_id": "acme.freeze"} if {
	input.action == "roles:write"
}
"""


@pytest.fixture
async def reload_env(tmp_path: Path, receiver: WebhookReceiver) -> AsyncIterator[tuple[Env, Path]]:
    policy_dir = tmp_path / "policies"
    shutil.copytree(POLICIES, policy_dir)
    values: dict[str, Any] = base_settings(
        "embedded",
        tmp_path / "data",
        policy_dir=policy_dir,
        policy_reload_interval_seconds=0.05,
        notifier="webhook",
        notify_webhook_url=receiver.url,
        notify_webhook_secret=WEBHOOK_SECRET,
        notify_retry_base_seconds=0.05,
        notify_poll_interval_seconds=0.1,
    )
    env, manager = await start_env("embedded", values, receiver)
    try:
        yield env, policy_dir
    finally:
        await env.client.aclose()
        await manager.__aexit__(None, None, None)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met within the deadline")


async def test_policy_changes_apply_without_restart_and_broken_ones_never(
    reload_env: tuple[Env, Path],
) -> None:
    env, policy_dir = reload_env
    org = await env.create_org()
    admin_member = await env.add_member(org["orgId"], ["OrgAdmin"])
    url = f"/v1/orgs/{org['orgId']}/roles"
    counter = iter(range(1000))

    async def create_role() -> Any:
        return await env.client.post(
            url,
            json={"name": f"R{next(counter)}", "scopes": ["orgs:read"]},
            headers=admin_member.headers,
        )

    assert (await create_role()).status_code == 201
    first = (await env.client.get("/v1/policy/info", headers=await env.admin_headers())).json()

    # 1. A new policy file takes effect without a restart.
    (policy_dir / "freeze.rego").write_text(FREEZE)

    async def frozen() -> bool:
        response = await create_role()
        return response.status_code == 403

    await eventually(frozen)
    denied = await create_role()
    assert denied.json()["details"] == {
        "permission": "roles:write",
        "reason": "change_freeze",
        "policyId": "acme.freeze",
    }
    second = (await env.client.get("/v1/policy/info", headers=await env.admin_headers())).json()
    assert second["revision"] != first["revision"]
    assert "data.userorg.authz.custom" in second["packages"]

    # 2. A broken edit is refused: the previous policy keeps serving, /readyz tells why.
    (policy_dir / "freeze.rego").write_text(FREEZE + "\ndeny contains x if {\n")

    async def refused() -> bool:
        ready = (await env.client.get("/readyz")).json()
        return "lastReloadError" in ready["checks"]["policy"]

    await eventually(refused)
    ready = await env.client.get("/readyz")
    assert ready.status_code == 200  # still serving decisions
    check = ready.json()["checks"]["policy"]
    assert check["revision"] == second["revision"]
    assert "freeze.rego" in check["lastReloadError"]["message"]
    assert (await create_role()).status_code == 403  # the freeze still applies
    assert (await env.client.get(url, headers=admin_member.headers)).status_code == 200

    # 3. Removing the file lifts the freeze, and the error clears.
    (policy_dir / "freeze.rego").unlink()

    async def lifted() -> bool:
        return (await create_role()).status_code == 201

    await eventually(lifted)
    info = (await env.client.get("/v1/policy/info", headers=await env.admin_headers())).json()
    assert info["revision"] == first["revision"]
    assert info["lastReloadError"] is None
