"""Budgets over HTTP, in both modes: policy, usage intake (idempotent, period from the event's
timestamp), status, history, reservations on /v1/authorize, alerts, overrides, bad input."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from typing import Any

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from tests.support.api import Env, Member, uid
from tests.support.keys import Setup, authorize, issue, setup_account
from userorg.budgets.models import BudgetOverride, BudgetUsageEvent


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")


async def _policy(env: Env, setup: Setup, **body: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {"limit": "100.00", "currency": "USD", "period": "monthly"}
    payload.update(body)
    response = await env.client.put(
        f"/v1/budgets/{setup.org_id}/policy", json=payload, headers=setup.admin.headers
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def _usage(env: Env, org_id: str, headers: dict[str, str], body: Any) -> Any:
    return await env.client.post(f"/v1/budgets/{org_id}/usage", json=body, headers=headers)


def _event(amount: Any = "1.00", **extra: Any) -> dict[str, Any]:
    event = {"eventId": f"ev-{uid()}", "amount": amount, "currency": "USD", "timestamp": _now()}
    event.update(extra)
    return event


async def _status(env: Env, setup: Setup) -> dict[str, Any]:
    response = await env.client.get(
        f"/v1/budgets/{setup.org_id}/status", headers=setup.admin.headers
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def _event_rows(env: Env, org_id: str) -> int:
    async with env.container.session_factory() as session:
        return int(
            (
                await session.execute(
                    select(func.count())
                    .select_from(BudgetUsageEvent)
                    .where(BudgetUsageEvent.org_id == uuid.UUID(org_id))
                )
            ).scalar_one()
        )


async def test_policy_usage_status_history_and_period_boundary(env: Env) -> None:
    setup = await setup_account(env)
    created = await _policy(
        env,
        setup,
        limit="250.5",
        warnThreshold=70,
        blockThreshold=90,
        notifications={"webhookUrls": ["https://hooks.example.com/budget"]},
    )
    assert created["limit"] == "250.50"
    assert created["period"] == "monthly" and created["status"] == "active"
    assert created["overrideRequiredRoles"] == ["OrgOwner", "BillingAdmin"]
    got = await env.client.get(f"/v1/budgets/{setup.org_id}/policy", headers=setup.admin.headers)
    assert got.status_code == 200 and got.json() == created
    assert got.headers["ETag"]

    headers = setup.admin.headers
    single = _event("10.25")
    response = await _usage(env, setup.org_id, headers, single)
    assert response.status_code == 200, response.text
    assert response.json()["recorded"] == 1
    batch = [_event("0.000001"), _event(5)]
    response = await _usage(env, setup.org_id, headers, {"events": batch})
    assert response.status_code == 200, response.text
    assert [i["status"] for i in response.json()["items"]] == ["recorded", "recorded"]
    # A replay counts nothing (same eventId, same content); mixed with a new event.
    replay = await _usage(env, setup.org_id, headers, {"events": [single, _event("1")]})
    assert replay.status_code == 200, replay.text
    assert (replay.json()["recorded"], replay.json()["duplicates"]) == (1, 1)
    # Same eventId with another amount: a conflict, nothing recorded.
    before = await _event_rows(env, setup.org_id)
    clash = await _usage(env, setup.org_id, headers, {**single, "amount": "99"})
    assert clash.status_code == 409 and clash.json()["code"] == "event_id_conflict"
    assert await _event_rows(env, setup.org_id) == before

    status = await _status(env, setup)
    assert status["spend"] == "16.250001"
    assert status["limit"] == "250.50"
    assert status["status"] == "ok"
    assert status["currency"] == "USD"
    assert status["overridesActive"] == [] and status["pendingOverride"] is None
    now = dt.datetime.now(dt.UTC)
    assert status["period"] == f"{now.year:04d}-{now.month:02d}"

    # Month end: 23:59:59 and 00:00:00 land in different periods (and neither in this one).
    last = {**_event("3"), "timestamp": "2025-01-31T23:59:59Z"}
    first = {**_event("4"), "timestamp": "2025-02-01T00:00:00Z"}
    response = await _usage(env, setup.org_id, headers, {"events": [last, first]})
    assert response.status_code == 200, response.text
    assert [i["month"] for i in response.json()["items"]] == ["2025-01", "2025-02"]
    assert (await _status(env, setup))["spend"] == "16.250001"
    history = await env.client.get(f"/v1/budgets/{setup.org_id}/history", headers=headers)
    assert history.status_code == 200, history.text
    periods = {p["period"]: p for p in history.json()["items"]}
    assert periods["2025-01"]["spend"] == "3.00" and periods["2025-02"]["spend"] == "4.00"
    assert periods[status["period"]]["spend"] == "16.250001"
    assert periods[status["period"]]["events"] == 4

    events = await env.audit_events(setup.org_id, action="budgets:usage:api")
    assert len(events) == 4  # the conflict changed nothing and wrote nothing
    policy_events = await env.audit_events(setup.org_id, action="budgets:policy:create")
    assert len(policy_events) == 1


async def test_bad_input_is_refused_and_changes_nothing(env: Env) -> None:
    setup = await setup_account(env)
    await _policy(env, setup)
    headers = setup.admin.headers
    future = (dt.datetime.now(dt.UTC) + dt.timedelta(days=2)).isoformat()
    cases: list[tuple[Any, int, str | None]] = [
        (_event("-1"), 422, None),
        (_event(-0.5), 422, None),
        (_event("ten"), 422, None),
        (_event("1.0000001"), 422, None),
        (_event(True), 422, None),
        (_event("1", currency="EUR"), 422, "currency_mismatch"),
        (_event("1", currency="usd"), 422, None),
        (_event("1", timestamp=future), 422, "event_in_future"),
        (_event("1", timestamp="2026-01-01T00:00:00"), 422, None),
        (
            {"events": [_event("1", eventId="same"), _event("2", eventId="same")]},
            422,
            "duplicate_event_id",
        ),
        ({"events": [_event("1"), _event("1", currency="GBP")]}, 422, "currency_mismatch"),
        ({"events": []}, 422, None),
        ({**_event("1"), "unknown": 1}, 422, None),
    ]
    for body, code, error in cases:
        response = await _usage(env, setup.org_id, headers, body)
        assert response.status_code == code, (body, response.text)
        if error is not None:
            assert response.json()["code"] == error, response.text
    assert await _event_rows(env, setup.org_id) == 0
    assert (await _status(env, setup))["spend"] == "0.00"

    unknown = await _usage(env, str(uuid.uuid4()), await env.admin_headers(), _event("1"))
    assert unknown.status_code == 404
    bad_policies = [
        {"limit": "-1", "currency": "USD", "period": "monthly"},
        {"limit": "10", "currency": "USD", "period": "weekly"},
        {"limit": "10", "currency": "US", "period": "monthly"},
        {
            "limit": "10",
            "currency": "USD",
            "period": "monthly",
            "warnThreshold": 90,
            "blockThreshold": 80,
        },
        {"limit": "1e400", "currency": "USD", "period": "monthly"},
    ]
    for body in bad_policies:
        response = await env.client.put(
            f"/v1/budgets/{setup.org_id}/policy", json=body, headers=headers
        )
        assert response.status_code == 422, (body, response.text)
    assert (await env.client.get(f"/v1/budgets/{setup.org_id}/policy", headers=headers)).json()[
        "limit"
    ] == "100.00"
    # A member without budget scopes.
    viewer = await env.add_member(setup.org_id, ["OrgViewer"])
    denied = await _usage(env, setup.org_id, viewer.headers, _event("1"))
    assert denied.status_code == 403


async def test_reservations_settlement_alerts_and_block(env: Env) -> None:
    setup = await setup_account(env)
    await _policy(
        env,
        setup,
        limit="10",
        warnThreshold=50,
        notifications={"webhookUrls": ["https://hooks.example.com/b"]},
    )
    secret = (await issue(env, setup))["secret"]
    first = await authorize(env, secret, estimatedCost=4)
    assert first["decision"] == "allow", first
    assert first["reservationId"]
    assert first["budget"] == {"status": "ok", "remaining": "6.00"}
    second = await authorize(env, secret, estimatedCost=4.0)
    assert second["decision"] == "allow" and second["budget"]["remaining"] == "2.00"
    third = await authorize(env, secret, estimatedCost=4)
    assert (third["decision"], third["reason"]) == ("deny", "budget_exceeded")
    assert "reservationId" not in third

    # Another org's usage cannot settle this org's reservation.
    other = await setup_account(env)
    await _policy(env, other)
    foreign = _event("0.5", reservationId=second["reservationId"])
    response = await _usage(env, other.org_id, other.admin.headers, foreign)
    assert response.status_code == 200, response.text
    assert (await _status(env, setup))["reserved"] == "8.00"

    # Settling the first at a lower cost frees the difference.
    settle = _event("1", reservationId=first["reservationId"])
    response = await _usage(env, setup.org_id, setup.admin.headers, settle)
    assert response.status_code == 200, response.text
    status = await _status(env, setup)
    assert (status["spend"], status["reserved"], status["remaining"]) == ("1.00", "4.00", "5.00")
    again = await authorize(env, secret, estimatedCost=4)
    assert again["decision"] == "allow", again
    # An unsettled reservation is released by the sweeper once it expires.
    released = await env.container.budget_counters.sweep(now=time.time() + 10_000)
    assert released == 2
    assert (await _status(env, setup))["reserved"] == "0.00"

    # Committed spend crosses warn (5) then block (10): one alert each, not one per event.
    for amount in ("4.5", "0.5", "3", "1", "2"):
        response = await _usage(env, setup.org_id, setup.admin.headers, _event(amount))
        assert response.status_code == 200, response.text
    status = await _status(env, setup)
    assert (status["spend"], status["status"]) == ("12.00", "block")
    no_estimate = await authorize(env, secret)
    assert (no_estimate["decision"], no_estimate["reason"]) == ("deny", "budget_exceeded")
    assert no_estimate["budget"]["status"] == "block"
    warn = await env.audit_events(setup.org_id, action="budgets:threshold:warn")
    block = await env.audit_events(setup.org_id, action="budgets:threshold:block")
    assert len(warn) == 1 and len(block) == 1
    assert block[0]["metadata"]["spend"] == "10.00"
    message = await env.receiver.wait_for(
        kind="budget_threshold", orgId=setup.org_id, threshold="block"
    )
    assert message["webhookUrls"] == ["https://hooks.example.com/b"]
    assert message["spend"] == "10.00" and message["currency"] == "USD"
    await env.receiver.wait_for(kind="budget_threshold", orgId=setup.org_id, threshold="warn")
    await env.container.gateway.flush()
    denials = await env.audit_events(setup.org_id, action="gateway:api_key:deny")
    assert {e["reason"] for e in denials} == {"budget_exceeded"}


async def test_grace_period_lets_requests_through_after_the_block(env: Env) -> None:
    setup = await setup_account(env)
    await _policy(env, setup, limit="5", gracePeriodMinutes=30)
    secret = (await issue(env, setup))["secret"]
    response = await _usage(env, setup.org_id, setup.admin.headers, _event("6"))
    assert response.status_code == 200, response.text
    answer = await authorize(env, secret, estimatedCost=1)
    assert answer["decision"] == "allow", answer
    assert answer["budget"]["status"] == "block"
    await _policy(env, setup, limit="5", gracePeriodMinutes=0)
    denied = await authorize(env, secret, estimatedCost=1)
    assert (denied["decision"], denied["reason"]) == ("deny", "budget_exceeded")


async def _billing(env: Env, org_id: str) -> Member:
    return await env.add_member(org_id, ["BillingAdmin"])


async def test_overrides_need_two_distinct_approvers_other_than_the_requester(env: Env) -> None:
    setup = await setup_account(env)
    await _policy(env, setup, limit="5", overrideRequiredRoles=["BillingAdmin"])
    requester, first, second = [await _billing(env, setup.org_id) for _ in range(3)]
    secret = (await issue(env, setup))["secret"]
    await _usage(env, setup.org_id, setup.admin.headers, _event("5"))
    assert (await authorize(env, secret, estimatedCost=1))["reason"] == "budget_exceeded"

    base = f"/v1/budgets/{setup.org_id}/overrides"
    requested = await env.client.post(
        base,
        json={"amount": "20", "reason": "launch week", "expiresInHours": 24},
        headers=requester.headers,
    )
    assert requested.status_code == 202, requested.text
    override = requested.json()
    assert override["status"] == "pending"
    assert (await _status(env, setup))["pendingOverride"]["overrideId"] == override["overrideId"]
    url = f"{base}/{override['overrideId']}"

    own = await env.client.post(f"{url}/approve", headers=requester.headers)
    assert own.status_code == 403 and own.json()["code"] == "override_self_approval"
    # The org admin holds the scope through OrgOwner? No: OrgAdmin lacks the approve scope.
    admin = await env.client.post(f"{url}/approve", headers=setup.admin.headers)
    assert admin.status_code == 403
    one = await env.client.post(f"{url}/approve", headers=first.headers)
    assert one.status_code == 200 and one.json()["status"] == "pending"
    twice = await env.client.post(f"{url}/approve", headers=first.headers)
    assert twice.status_code == 409 and twice.json()["code"] == "override_already_approved"
    assert (await authorize(env, secret, estimatedCost=1))["reason"] == "budget_exceeded"
    done = await env.client.post(f"{url}/approve", headers=second.headers)
    assert done.status_code == 200 and done.json()["status"] == "approved"
    assert sorted(done.json()["approvals"]) == sorted([first.user_id, second.user_id])
    status = await _status(env, setup)
    assert [o["overrideId"] for o in status["overridesActive"]] == [override["overrideId"]]
    assert status["remaining"] == "20.00"
    assert (await authorize(env, secret, estimatedCost=1))["decision"] == "allow"
    late = await env.client.post(f"{url}/reject", headers=second.headers)
    assert late.status_code == 409

    # An expired override cannot be approved.
    expiring = await env.client.post(
        base, json={"amount": "1", "reason": "x", "expiresInHours": 1}, headers=requester.headers
    )
    assert expiring.status_code == 202
    async with env.container.uow() as uow:
        await uow.session.execute(
            update(BudgetOverride)
            .where(BudgetOverride.id == uuid.UUID(expiring.json()["overrideId"]))
            .values(expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
        )
    expired = await env.client.post(
        f"{base}/{expiring.json()['overrideId']}/approve", headers=first.headers
    )
    assert expired.status_code == 409 and expired.json()["code"] == "override_expired"
    listed = await env.client.get(base, headers=setup.admin.headers)
    assert {o["status"] for o in listed.json()["items"]} == {"approved", "expired"}

    actions = [e["action"] for e in await env.audit_events(setup.org_id, limit=200)]
    assert actions.count("budgets:override:approve") >= 5  # 2 approvals + 3 audited denials
    assert "budgets:override:request" in actions

    # The database itself refuses what the code refuses.
    bad_rows = [
        {"first_approver": "requester"},
        {"first_approver": "a", "second_approver": "a"},
        {"second_approver": "a"},
        {"status": "approved", "first_approver": "a"},
    ]
    people = {"requester": uuid.UUID(requester.user_id), "a": uuid.UUID(first.user_id)}
    for values in bad_rows:
        row = BudgetOverride(
            org_id=uuid.UUID(setup.org_id),
            amount=1,
            reason="direct",
            requested_by=people["requester"],
            expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1),
            **{k: people[v] if k != "status" else v for k, v in values.items()},
        )
        async with env.container.session_factory() as session:
            session.add(row)
            with pytest.raises(IntegrityError):
                await session.commit()


async def test_declared_budget_policy_is_applied_through_the_port(env: Env) -> None:
    from userorg.context import Actor

    org = await env.create_org()
    port = env.container.budget_policies
    assert port is not None
    from userorg.orgs.models import Organization

    async with env.container.uow() as uow:
        row = await uow.session.get(Organization, uuid.UUID(org["orgId"]))
        assert row is not None
        await port.apply_policy(
            uow,
            org=row,
            policy={"limit": "5000.00", "currency": "EUR", "period": "quarterly"},
            actor=Actor(type="system", id="reconciler"),
            audit_metadata={"commitId": "abc"},
        )
    async with env.container.session_factory() as session:
        current = await port.current_policy(session, org_id=uuid.UUID(org["orgId"]))
    assert current is not None
    assert (current["limit"], current["currency"], current["period"]) == (
        "5000.00",
        "EUR",
        "quarterly",
    )
    events = await env.audit_events(org["orgId"], action="declarative:budget_policy:apply")
    assert events and events[0]["metadata"]["commitId"] == "abc"


async def test_override_requests_are_rate_limited_per_requester(env: Env) -> None:
    setup = await setup_account(env)
    await _policy(env, setup)
    requester = await _billing(env, setup.org_id)
    base = f"/v1/budgets/{setup.org_id}/overrides"
    body = {"amount": "1", "reason": "burst", "expiresInHours": 1}
    limit = env.settings.budget_override_requests_per_hour
    for _ in range(limit):
        response = await env.client.post(base, json=body, headers=requester.headers)
        assert response.status_code == 202, response.text
    limited = await env.client.post(base, json=body, headers=requester.headers)
    assert limited.status_code == 429, limited.text
    assert int(limited.headers["Retry-After"]) >= 1
    listed = await env.client.get(base, headers=setup.admin.headers)
    assert len(listed.json()["items"]) == limit
