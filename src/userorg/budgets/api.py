"""Routes: budget policy, usage intake, status, history, overrides (PRODUCT.md §7)."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response

from userorg.budgets import service
from userorg.budgets.models import BudgetOverride, BudgetPolicy
from userorg.budgets.schemas import (
    BudgetPolicyIn,
    BudgetPolicyRead,
    BudgetStatusRead,
    HistoryRead,
    NotificationsRead,
    OverrideList,
    OverrideRequest,
    OverrideView,
    PeriodTotal,
    UsageBatchIn,
    UsageEventIn,
    UsageItem,
    UsageResultRead,
)
from userorg.container import Container
from userorg.db import utcnow
from userorg.deps import AuthContext, ContainerDep, UoW, require
from userorg.errors import NotFound, ValidationFailed
from userorg.http import IfMatch, set_etag

router = APIRouter(tags=["budgets"])
BASE = "/v1/budgets/{orgId}"


def budgets_of(container: Container) -> service.Budgets:
    budgets = container.budgets
    assert budgets is not None
    return budgets


def _policy(policy: BudgetPolicy, response: Response | None = None) -> BudgetPolicyRead:
    document = service.policy_document(policy)
    result = BudgetPolicyRead(
        policy_id=policy.id,
        org_id=policy.org_id,
        limit=document["limit"],
        currency=policy.currency,
        period=policy.period,
        warn_threshold=policy.warn_threshold,
        block_threshold=policy.block_threshold,
        grace_period_minutes=policy.grace_period_minutes,
        override_required_roles=list(policy.override_required_roles),
        notifications=NotificationsRead(
            emails=document["notifications"]["emails"],
            webhook_urls=document["notifications"]["webhookUrls"],
        ),
        status=policy.status,
        version=policy.version,
        created_at=policy.created_at,
        updated_at=policy.updated_at,
    )
    if response is not None:
        set_etag(response, policy.version)
    return result


def _override(override: BudgetOverride) -> OverrideView:
    return OverrideView.model_validate(service.override_view(override, utcnow()))


@router.put(
    f"{BASE}/policy",
    response_model=BudgetPolicyRead,
    summary="Create or replace the org's budget policy (status archived archives it)",
)
async def put_policy(
    body: BudgetPolicyIn,
    uow: UoW,
    response: Response,
    if_match: IfMatch = None,
    ctx: AuthContext = require("budgets:write"),
) -> BudgetPolicyRead:
    expected = None
    if if_match is not None:
        try:
            expected = int(if_match.strip('W/"'))
        except ValueError:
            raise ValidationFailed(
                "If-Match must be an ETag", details={"header": "If-Match"}
            ) from None
    policy = await service.put_policy(
        uow,
        org=ctx.org_required,
        data=service.PolicyData(
            limit=body.limit,
            currency=body.currency,
            period=body.period,
            warn_threshold=body.warn_threshold,
            block_threshold=body.block_threshold,
            grace_period_minutes=body.grace_period_minutes,
            override_required_roles=tuple(body.override_required_roles),
            notifications={
                "emails": list(body.notifications.emails),
                "webhookUrls": list(body.notifications.webhook_urls),
            },
            status=body.status,
        ),
        actor=ctx.actor,
        expected_version=expected,
    )
    assert policy is not None
    return _policy(policy, response)


@router.get(f"{BASE}/policy", response_model=BudgetPolicyRead, summary="The org's budget policy")
async def get_policy(
    uow: UoW, response: Response, ctx: AuthContext = require("budgets:read")
) -> BudgetPolicyRead:
    policy = await service.active_policy(uow.session, ctx.org_required.id)
    if policy is None:
        raise NotFound("budget_policy", ctx.org_required.id)
    return _policy(policy, response)


@router.post(
    f"{BASE}/usage",
    response_model=UsageResultRead,
    summary="Report usage: one event or {events: [...]}; idempotent by eventId",
)
async def post_usage(
    body: UsageEventIn | UsageBatchIn,
    uow: UoW,
    container: ContainerDep,
    ctx: AuthContext = require("budgets:usage:write"),
) -> UsageResultRead:
    org = ctx.org_required
    items = body.events if isinstance(body, UsageBatchIn) else [body]
    for item in items:
        if item.org_id is not None and item.org_id not in {str(org.id), org.slug}:
            raise ValidationFailed(
                "The event names another org",
                code="org_mismatch",
                details={"eventId": item.event_id},
            )
    events = [
        service.UsageEvent(
            event_id=item.event_id,
            amount=item.amount,
            currency=item.currency,
            timestamp=item.timestamp,
            api_key_id=item.api_key_id,
            model=item.model,
            reservation_id=item.reservation_id,
        )
        for item in items
    ]
    result = await service.record_usage(
        uow, budgets_of(container), org=org, events=events, actor=ctx.actor, source="api"
    )
    recorded = {e.event_id for e in result.recorded}
    return UsageResultRead(
        recorded=len(result.recorded),
        duplicates=len(result.duplicates),
        items=[
            UsageItem(
                event_id=e.event_id,
                status="recorded" if e.event_id in recorded else "duplicate",
                month=service.month_key(e.timestamp),
            )
            for e in events
        ],
    )


@router.get(f"{BASE}/status", response_model=BudgetStatusRead, summary="Spend against the budget")
async def get_status(
    uow: UoW, container: ContainerDep, ctx: AuthContext = require("budgets:read")
) -> BudgetStatusRead:
    state = await service.status(uow.session, budgets_of(container), org=ctx.org_required)
    return BudgetStatusRead.model_validate(state)


@router.get(
    f"{BASE}/history",
    response_model=HistoryRead,
    summary="Committed spend per period, newest first",
)
async def get_history(uow: UoW, ctx: AuthContext = require("budgets:read")) -> HistoryRead:
    periods = await service.history(uow.session, org=ctx.org_required)
    return HistoryRead(items=[PeriodTotal.model_validate(p) for p in periods])


@router.post(
    f"{BASE}/overrides",
    status_code=202,
    response_model=OverrideView,
    summary="Request a temporary raise of the block limit (needs two approvals)",
    description="Rate limited per requester (USER_ORG_BUDGET_OVERRIDE_REQUESTS_PER_HOUR): 429.",
)
async def request_override(
    body: OverrideRequest,
    uow: UoW,
    container: ContainerDep,
    ctx: AuthContext = require("budgets:override:request"),
) -> OverrideView:
    override = await service.request_override(
        uow,
        budgets_of(container),
        org=ctx.org_required,
        amount=body.amount,
        reason=body.reason,
        expires_in_hours=body.expires_in_hours,
        actor=ctx.actor,
    )
    return _override(override)


@router.get(f"{BASE}/overrides", response_model=OverrideList, summary="The org's overrides")
async def list_overrides(uow: UoW, ctx: AuthContext = require("budgets:read")) -> OverrideList:
    rows = await service.list_overrides(uow.session, org=ctx.org_required)
    return OverrideList(items=[_override(o) for o in rows])


@router.post(
    f"{BASE}/overrides/{{overrideId}}/approve",
    response_model=OverrideView,
    summary="Approve an override (two distinct approvers, neither the requester)",
)
async def approve_override(
    overrideId: uuid.UUID, uow: UoW, ctx: AuthContext = require("budgets:override:approve")
) -> OverrideView:
    override = await service.decide_override(
        uow,
        org=ctx.org_required,
        override_id=overrideId,
        actor=ctx.actor,
        actor_roles=ctx.roles,
        approve=True,
    )
    return _override(override)


@router.post(
    f"{BASE}/overrides/{{overrideId}}/reject",
    response_model=OverrideView,
    summary="Reject an override",
)
async def reject_override(
    overrideId: uuid.UUID, uow: UoW, ctx: AuthContext = require("budgets:override:approve")
) -> OverrideView:
    override = await service.decide_override(
        uow,
        org=ctx.org_required,
        override_id=overrideId,
        actor=ctx.actor,
        actor_roles=ctx.roles,
        approve=False,
    )
    return _override(override)
