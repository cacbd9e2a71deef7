"""Driving declarative management in tests: managed orgs, an in-process reconciler, webhooks."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from tests.conftest import DECLARATIVE_WEBHOOK_SECRET
from tests.support.api import Env, uid
from tests.support.gitrepo import GitRepo
from userorg.declarative.factory import build_engine
from userorg.declarative.worker import Reconciler


def sign(body: bytes, secret: str = DECLARATIVE_WEBHOOK_SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def start_reconciler(env: Env, **settings: Any) -> Reconciler:
    """A reconciler in this process, on the same database and bus as the env's admin-api."""
    values = {"declarative_poll_interval_seconds": 3600.0, **settings}
    engine = build_engine(
        env.settings.model_copy(update=values),
        session_factory=env.container.session_factory,
        budgets=env.container.budget_policies,
        owner=f"test-reconciler-{uid()}",
        publish=env.container.bus.publish,
    )
    worker = Reconciler(engine, bus=env.container.bus)
    worker.start()
    return worker


async def managed_org(
    env: Env,
    repo: GitRepo,
    *,
    path: str = ".",
    drift_mode: str = "selfHeal",
    prune: bool = False,
    enabled: bool = True,
    **extra: Any,
) -> dict[str, Any]:
    return await env.create_org(
        declarative={
            "enabled": enabled,
            "repoUrl": repo.url,
            "branch": repo.branch,
            "path": path,
            "driftMode": drift_mode,
            "prune": prune,
        },
        **extra,
    )


async def set_declarative(env: Env, org_id: str, **config: Any) -> dict[str, Any]:
    headers = await env.admin_headers()
    current = (await env.client.get(f"/v1/orgs/{org_id}", headers=headers)).json()["declarative"]
    response = await env.client.patch(
        f"/v1/orgs/{org_id}", json={"declarative": {**current, **config}}, headers=headers
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def status(env: Env, org_id: str) -> dict[str, Any]:
    response = await env.client.get(
        f"/v1/declarative/status/{org_id}", headers=await env.admin_headers()
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def wait_for(
    probe: Callable[[], Awaitable[Any]], predicate: Callable[[Any], bool], timeout: float = 30.0
) -> Any:
    """Poll ``probe`` until ``predicate`` holds (no sleeps as assertions: a deadline)."""
    deadline = time.monotonic() + timeout
    pause = 0.02
    value = await probe()
    while not predicate(value):
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached in {timeout} s; last value: {value}")
        await asyncio.sleep(pause)
        pause = min(0.25, pause * 1.5)  # quick at first, then leave the CPU to the work
        value = await probe()
    return value


async def wait_status(
    env: Env, org_id: str, predicate: Callable[[dict[str, Any]], bool], timeout: float = 30.0
) -> dict[str, Any]:
    result: dict[str, Any] = await wait_for(lambda: status(env, org_id), predicate, timeout)
    return result


async def wait_synced(env: Env, org_id: str, commit: str, timeout: float = 30.0) -> dict[str, Any]:
    return await wait_status(
        env,
        org_id,
        lambda s: s["status"] == "synced" and s["lastAppliedCommit"] == commit,
        timeout,
    )


async def send_webhook(
    env: Env,
    repo: GitRepo,
    *,
    secret: str = DECLARATIVE_WEBHOOK_SECRET,
    signature: str | None = None,
) -> Any:
    body = orjson.dumps(
        {
            "ref": f"refs/heads/{repo.branch}",
            "after": repo.head,
            "repository": {"clone_url": repo.url, "full_name": "config/orgs"},
        }
    )
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": uid(),
        "X-Hub-Signature-256": signature if signature is not None else sign(body, secret),
    }
    return await env.client.post("/v1/declarative/webhook", content=body, headers=headers)


async def members_by_email(env: Env, org_id: str) -> dict[str, list[str]]:
    response = await env.client.get(
        f"/v1/orgs/{org_id}/users", params={"limit": 200}, headers=await env.admin_headers()
    )
    assert response.status_code == 200, response.text
    return {m["email"]: m["roles"] for m in response.json()["items"]}
