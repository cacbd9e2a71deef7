"""The Prometheus series an operator alerts on move with the code paths they describe (both
modes): decision latency by decision, denials by reason, sign-in outcomes, readiness per
dependency, outbox backlog."""

from __future__ import annotations

import datetime as dt
from typing import Any

from prometheus_client import REGISTRY
from sqlalchemy import delete

from tests.support.api import Env, uid
from userorg.db import new_id, utcnow
from userorg.notifications.models import Notification


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def snapshot() -> dict[str, float]:
    decision = "userorg_authz_decision_duration_seconds_count"
    return {
        "allow": sample(decision, enforcement_point="admin_api", decision="allow"),
        "deny": sample(decision, enforcement_point="admin_api", decision="deny"),
        "scope_missing": sample("userorg_authz_denials_total", reason="scope_missing"),
        "login_failure": sample("userorg_login_attempts_total", outcome="failure"),
        "login_success": sample("userorg_login_attempts_total", outcome="success"),
    }


async def test_decisions_denials_and_sign_ins_are_counted(env: Env) -> None:
    org = await env.create_org()
    viewer = await env.add_member(org["orgId"], ["OrgViewer"])
    before = snapshot()
    url = f"/v1/orgs/{org['orgId']}"
    assert (await env.client.get(url, headers=viewer.headers)).status_code == 200
    denied = await env.client.patch(url, json={"name": "Renamed"}, headers=viewer.headers)
    assert denied.status_code == 403
    wrong = await env.client.post(
        "/v1/auth/login", json={"email": viewer.email, "password": "not-the-password-123"}
    )
    assert wrong.status_code == 401
    await env.login(viewer.email, viewer.password)
    after = snapshot()
    delta = {key: after[key] - before[key] for key in before}
    assert delta == {
        "allow": 1,
        "deny": 1,
        "scope_missing": 1,
        "login_failure": 1,
        "login_success": 1,
    }
    exposition = (await env.client.get("/metrics")).text
    assert 'userorg_authz_decision_duration_seconds_bucket{decision="deny"' in exposition


async def test_readiness_sets_one_gauge_per_dependency(env: Env) -> None:
    response = await env.client.get("/readyz")
    assert response.status_code == 200
    checks: dict[str, Any] = response.json()["checks"]
    expected = (
        {"database", "policy", "redis", "auditStream"}
        if env.mode == "production"
        else {"database", "policy", "auditStream"}
    )
    assert set(checks) == expected
    for name in expected:
        assert sample("userorg_dependency_up", dependency=name) == 1.0


async def test_outbox_backlog_gauges(env: Env) -> None:
    row_id = new_id()
    async with env.container.session_factory() as session:
        session.add(
            Notification(
                id=row_id,
                kind=f"test-{uid()}",
                payload_encrypted="not-delivered-in-this-test",
                status="pending",
                # Due in a day: the running dispatcher leaves it alone.
                next_attempt_at=utcnow() + dt.timedelta(days=1),
                created_at=utcnow() - dt.timedelta(hours=2),
            )
        )
        await session.commit()
    try:
        pending, age = await env.container.notifier.measure_backlog()
        assert pending >= 1
        assert age >= 7200
        assert sample("userorg_outbox_pending", outbox="notifications") == pending
        assert sample("userorg_outbox_oldest_pending_age_seconds", outbox="notifications") == age
    finally:
        async with env.container.session_factory() as session:
            await session.execute(delete(Notification).where(Notification.id == row_id))
            await session.commit()
    pending, age = await env.container.notifier.measure_backlog()
    assert sample("userorg_outbox_pending", outbox="notifications") == pending
    assert age < 7200
