"""Budgets: the policy, usage intake (API and Kafka share it), status, history, overrides and
threshold alerts. Every mutation and denial is audited in the caller's unit of work.

Amounts are ``Decimal``; spend is kept per calendar month (UTC) and a period (monthly,
quarterly, annual) sums its months, so the period of an event follows from its timestamp and a
new period starts from zero without any job.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final

import structlog
from sqlalchemy import and_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from userorg.audit import recorder as audit
from userorg.budgets.counters import BudgetCounters, committed_spend
from userorg.budgets.models import (
    BudgetAlert,
    BudgetOverride,
    BudgetPolicy,
    BudgetSpend,
    BudgetUsageEvent,
)
from userorg.budgets.money import PERIODS, Period, from_micro, money, month_of, period_of, to_micro
from userorg.context import Actor
from userorg.db import UnitOfWork, utcnow
from userorg.errors import (
    Conflict,
    DomainError,
    Forbidden,
    NotFound,
    PreconditionFailed,
    ValidationFailed,
)
from userorg.notifications import service as notifications
from userorg.orgs.models import Organization
from userorg.platform.keystore import Keystore
from userorg.platform.ratelimit import RateLimiter, enforce

log = structlog.get_logger("userorg.budgets")

CHANNEL: Final = "budget"
DEFAULT_OVERRIDE_ROLES: Final = ("OrgOwner", "BillingAdmin")
MAX_BATCH: Final = 1000


@dataclass(frozen=True, slots=True)
class PolicyData:
    limit: Decimal
    currency: str
    period: str
    warn_threshold: int = 80
    block_threshold: int = 100
    grace_period_minutes: int = 0
    override_required_roles: tuple[str, ...] = DEFAULT_OVERRIDE_ROLES
    notifications: dict[str, Any] = field(default_factory=dict)
    status: str = "active"


@dataclass(frozen=True, slots=True)
class UsageEvent:
    event_id: str
    amount: Decimal
    currency: str
    timestamp: dt.datetime
    api_key_id: uuid.UUID | None = None
    model: str | None = None
    reservation_id: str | None = None


@dataclass(slots=True)
class UsageResult:
    recorded: list[UsageEvent] = field(default_factory=list)
    duplicates: list[UsageEvent] = field(default_factory=list)


@dataclass(slots=True)
class Budgets:
    """What the budget services need beyond the unit of work."""

    counters: BudgetCounters
    keystore: Keystore
    wake_notifier: Callable[[], Awaitable[None]] | None = None
    max_future_seconds: float = 300.0
    limiter: RateLimiter | None = None
    override_requests_per_hour: int = 20


# -- policy -------------------------------------------------------------------------------
async def active_policy(session: AsyncSession, org_id: uuid.UUID) -> BudgetPolicy | None:
    result = await session.execute(
        select(BudgetPolicy).where(BudgetPolicy.org_id == org_id, BudgetPolicy.status == "active")
    )
    return result.scalars().first()


def policy_document(policy: BudgetPolicy) -> dict[str, Any]:
    """The policy in the declarative (camelCase) shape."""
    return {
        "limit": money(policy.limit),
        "currency": policy.currency,
        "period": policy.period,
        "warnThreshold": policy.warn_threshold,
        "blockThreshold": policy.block_threshold,
        "gracePeriodMinutes": policy.grace_period_minutes,
        "overrideRequiredRoles": list(policy.override_required_roles),
        "notifications": {
            "emails": list(policy.notifications.get("emails", [])),
            "webhookUrls": list(policy.notifications.get("webhookUrls", [])),
        },
    }


async def put_policy(
    uow: UnitOfWork,
    *,
    org: Organization,
    data: PolicyData,
    actor: Actor,
    expected_version: int | None = None,
    source: str = "budgets",
    audit_metadata: dict[str, Any] | None = None,
) -> BudgetPolicy | None:
    """Create, replace or archive the org's one active policy."""
    if data.block_threshold < data.warn_threshold:
        raise ValidationFailed(
            "blockThreshold must be at least warnThreshold",
            details={"field": "blockThreshold"},
        )
    session = uow.session
    policy = await active_policy(session, org.id)
    if expected_version is not None and (policy is None or policy.version != expected_version):
        raise PreconditionFailed(
            "The budget policy has changed", details={"version": policy.version if policy else None}
        )
    before = policy_document(policy) if policy is not None else None
    if data.status == "archived":
        if policy is None:
            raise NotFound("budget_policy", org.id)
        policy.status = "archived"
        policy.updated_at = utcnow()
        action = f"{source}:policy:archive"
    elif policy is None:
        policy = BudgetPolicy(
            org_id=org.id,
            limit=data.limit,
            currency=data.currency,
            period=data.period,
            warn_threshold=data.warn_threshold,
            block_threshold=data.block_threshold,
            grace_period_minutes=data.grace_period_minutes,
            override_required_roles=list(data.override_required_roles),
            notifications=dict(data.notifications),
            created_by=_actor_uuid(actor),
        )
        session.add(policy)
        action = f"{source}:policy:create"
    else:
        policy.limit = data.limit
        policy.currency = data.currency
        policy.period = data.period
        policy.warn_threshold = data.warn_threshold
        policy.block_threshold = data.block_threshold
        policy.grace_period_minutes = data.grace_period_minutes
        policy.override_required_roles = list(data.override_required_roles)
        policy.notifications = dict(data.notifications)
        policy.updated_at = utcnow()
        action = f"{source}:policy:update"
    await session.flush()
    await audit.record(
        session,
        action=action if source == "budgets" else f"{source}:budget_policy:apply",
        actor=actor,
        org_id=org.id,
        target_type="budget_policy",
        target_id=policy.id,
        metadata={
            **(audit_metadata or {}),
            "before": before,
            "after": policy_document(policy) if data.status == "active" else None,
        },
    )
    uow.publish_after_commit(CHANNEL, {"org": str(org.id)})
    return policy


def _actor_uuid(actor: Actor) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(actor.id)) if actor.id else None
    except ValueError:
        return None


def month_key(at: dt.datetime) -> str:
    month = month_of(at)
    return f"{month.year:04d}-{month.month:02d}"


# -- usage --------------------------------------------------------------------------------
def _insert(session: AsyncSession) -> Any:
    bind = session.bind
    return (
        postgresql.insert
        if bind is not None and bind.dialect.name == "postgresql"
        else (sqlite.insert)
    )


def check_events(
    events: Sequence[UsageEvent], *, currency: str | None, now: dt.datetime, max_future: float
) -> None:
    """Bad input is refused as a whole (422), naming the event and the field."""
    if not events:
        raise ValidationFailed("No usage events", details={"field": "events"})
    if len(events) > MAX_BATCH:
        raise ValidationFailed(
            f"At most {MAX_BATCH} events per request", details={"field": "events"}
        )
    seen: set[str] = set()
    for event in events:
        if event.event_id in seen:
            raise ValidationFailed(
                "The same eventId appears twice in the request",
                code="duplicate_event_id",
                details={"eventId": event.event_id},
            )
        seen.add(event.event_id)
        if currency is not None and event.currency != currency:
            raise ValidationFailed(
                f"Usage in {event.currency} for a budget in {currency}",
                code="currency_mismatch",
                details={
                    "eventId": event.event_id,
                    "currency": event.currency,
                    "expected": currency,
                },
            )
        if event.timestamp.tzinfo is None:
            raise ValidationFailed(
                "timestamp needs a time zone", details={"eventId": event.event_id}
            )
        if event.timestamp > now + dt.timedelta(seconds=max_future):
            raise ValidationFailed(
                "The event's timestamp is in the future",
                code="event_in_future",
                details={"eventId": event.event_id, "timestamp": event.timestamp.isoformat()},
            )


def _same(row: BudgetUsageEvent, event: UsageEvent) -> bool:
    return (
        Decimal(row.amount) == event.amount
        and row.currency == event.currency
        and row.occurred_at == event.timestamp.astimezone(dt.UTC)
    )


async def record_usage(
    uow: UnitOfWork,
    budgets: Budgets,
    *,
    org: Organization,
    events: Sequence[UsageEvent],
    actor: Actor,
    source: str,
) -> UsageResult:
    """Record usage once per eventId; replays of the same event are no-ops, a different event
    under a known id is a 409. Counters and threshold alerts follow in the same transaction."""
    session = uow.session
    now = utcnow()
    policy = await active_policy(session, org.id)
    check_events(
        events,
        currency=policy.currency if policy else None,
        now=now,
        max_future=budgets.max_future_seconds,
    )
    result = UsageResult()
    ids = [event.event_id for event in events]
    known = {
        row.event_id: row
        for row in (
            await session.execute(
                select(BudgetUsageEvent).where(
                    BudgetUsageEvent.org_id == org.id, BudgetUsageEvent.event_id.in_(ids)
                )
            )
        ).scalars()
    }
    fresh: list[UsageEvent] = []
    for event in events:
        row = known.get(event.event_id)
        if row is None:
            fresh.append(event)
        elif _same(row, event):
            result.duplicates.append(event)
        else:
            raise Conflict(
                "Another event was recorded under this eventId",
                code="event_id_conflict",
                details={"eventId": event.event_id},
            )
    inserted: set[str] = set()
    if fresh:
        insert = _insert(session)
        statement = (
            insert(BudgetUsageEvent)
            .values(
                [
                    {
                        "id": uuid.uuid4(),
                        "org_id": org.id,
                        "event_id": event.event_id,
                        "amount": event.amount,
                        "currency": event.currency,
                        "occurred_at": event.timestamp.astimezone(dt.UTC),
                        "month": month_of(event.timestamp),
                        "api_key_id": event.api_key_id,
                        "model": event.model,
                        "reservation_id": event.reservation_id,
                        "source": source,
                        "recorded_at": now,
                    }
                    for event in fresh
                ]
            )
            .on_conflict_do_nothing(index_elements=["org_id", "event_id"])
            .returning(BudgetUsageEvent.event_id)
        )
        inserted = set((await session.execute(statement)).scalars())
    for event in fresh:
        (result.recorded if event.event_id in inserted else result.duplicates).append(event)
    if result.recorded:
        await _add_spend(uow, budgets, org=org, policy=policy, events=result.recorded, now=now)
    await audit.record(
        session,
        action=f"budgets:usage:{source}",
        actor=actor,
        org_id=org.id,
        target_type="budget",
        target_id=org.id,
        metadata={
            "recorded": len(result.recorded),
            "duplicates": len(result.duplicates),
            "amount": money(sum((e.amount for e in result.recorded), Decimal(0))),
            "eventIds": [e.event_id for e in result.recorded][:50],
        },
    )
    return result


async def _add_spend(
    uow: UnitOfWork,
    budgets: Budgets,
    *,
    org: Organization,
    policy: BudgetPolicy | None,
    events: list[UsageEvent],
    now: dt.datetime,
) -> None:
    session = uow.session
    by_month: dict[dt.date, list[UsageEvent]] = defaultdict(list)
    for event in events:
        by_month[month_of(event.timestamp)].append(event)
    insert = _insert(session)
    for month, items in sorted(by_month.items()):
        amount = sum((e.amount for e in items), Decimal(0))
        statement = insert(BudgetSpend).values(
            org_id=org.id, month=month, amount=amount, events=len(items), updated_at=now
        )
        statement = statement.on_conflict_do_update(
            index_elements=["org_id", "month"],
            set_={
                "amount": BudgetSpend.amount + statement.excluded.amount,
                "events": BudgetSpend.events + statement.excluded.events,
                "updated_at": statement.excluded.updated_at,
            },
        )
        await session.execute(statement)
    # The shared counters, per period of the policy's kind (the others only if present).
    primary = policy.period if policy is not None else "monthly"
    by_period: dict[str, tuple[Period, list[UsageEvent]]] = {}
    for event in events:
        period = period_of(primary, event.timestamp)
        by_period.setdefault(period.key, (period, []))[1].append(event)
    for period, items in by_period.values():
        await budgets.counters.apply(
            session,
            org_id=org.id,
            period=period,
            amount=to_micro(sum((e.amount for e in items), Decimal(0))),
            reservation_ids=[e.reservation_id for e in items if e.reservation_id],
        )
    for kind in PERIODS:
        if kind == primary:
            continue
        # A counter of another period kind (a policy that changed its period) stays exact
        # too, but is not created here.
        others: dict[str, tuple[Period, Decimal]] = {}
        for event in events:
            period = period_of(kind, event.timestamp)
            previous = others.get(period.key, (period, Decimal(0)))[1]
            others[period.key] = (period, previous + event.amount)
        for period, amount in others.values():
            await budgets.counters.apply(
                session,
                org_id=org.id,
                period=period,
                amount=to_micro(amount),
                reservation_ids=[],
                only_if_present=True,
            )
    if policy is not None:
        for period, _items in by_period.values():
            await _check_thresholds(uow, budgets, org=org, policy=policy, period=period, now=now)


# -- thresholds ---------------------------------------------------------------------------
async def active_overrides(
    session: AsyncSession, org_id: uuid.UUID, now: dt.datetime
) -> list[BudgetOverride]:
    result = await session.execute(
        select(BudgetOverride)
        .where(
            BudgetOverride.org_id == org_id,
            BudgetOverride.status == "approved",
            BudgetOverride.expires_at > now,
        )
        .order_by(BudgetOverride.expires_at)
    )
    return list(result.scalars())


def thresholds(policy: BudgetPolicy, overrides: Decimal) -> tuple[Decimal, Decimal]:
    """(warn at, block at): percentages of the limit; approved overrides raise the block."""
    limit = Decimal(policy.limit)
    warn = limit * policy.warn_threshold / 100
    block = limit * policy.block_threshold / 100 + overrides
    return warn, block


async def _check_thresholds(
    uow: UnitOfWork,
    budgets: Budgets,
    *,
    org: Organization,
    policy: BudgetPolicy,
    period: Period,
    now: dt.datetime,
) -> None:
    session = uow.session
    spend = await committed_spend(session, org.id, period)
    overrides = sum((o.amount for o in await active_overrides(session, org.id, now)), Decimal(0))
    warn_at, block_at = thresholds(policy, Decimal(overrides))
    crossed = [name for name, at in (("warn", warn_at), ("block", block_at)) if spend >= at]
    if not crossed:
        return
    insert = _insert(session)
    for threshold in crossed:
        statement = (
            insert(BudgetAlert)
            .values(
                id=uuid.uuid4(),
                org_id=org.id,
                period_key=period.key,
                threshold=threshold,
                spend=spend,
                crossed_at=now,
            )
            .on_conflict_do_nothing(index_elements=["org_id", "period_key", "threshold"])
            .returning(BudgetAlert.id)
        )
        if (await session.execute(statement)).first() is None:
            continue  # this period already alerted for this threshold
        details = {
            "orgId": str(org.id),
            "threshold": threshold,
            "period": period.key,
            "spend": money(spend),
            "limit": money(policy.limit),
            "thresholdAmount": money(warn_at if threshold == "warn" else block_at),
            "currency": policy.currency,
        }
        await audit.record(
            session,
            action=f"budgets:threshold:{threshold}",
            actor=Actor(type="system", id="budgets"),
            org_id=org.id,
            target_type="budget",
            target_id=org.id,
            reason=f"{threshold}_threshold_crossed",
            metadata=details,
        )
        await notifications.enqueue(
            uow,
            keystore=budgets.keystore,
            kind="budget_threshold",
            org_id=org.id,
            payload={
                **details,
                "webhookUrls": list(policy.notifications.get("webhookUrls", [])),
                "emails": list(policy.notifications.get("emails", [])),
            },
            wake=budgets.wake_notifier,
        )
        uow.publish_after_commit(CHANNEL, {"org": str(org.id)})


# -- status and history -------------------------------------------------------------------
async def status(
    session: AsyncSession, budgets: Budgets, *, org: Organization, now: dt.datetime | None = None
) -> dict[str, Any]:
    now = now or utcnow()
    policy = await active_policy(session, org.id)
    if policy is None:
        raise NotFound("budget_policy", org.id)
    period = period_of(policy.period, now)
    spend = await committed_spend(session, org.id, period)

    async def seed() -> int:
        return to_micro(spend)

    _spend, reserved_micro = await budgets.counters.totals(org_id=org.id, period=period, seed=seed)
    reserved = from_micro(reserved_micro)
    overrides = await active_overrides(session, org.id, now)
    override_total = sum((o.amount for o in overrides), Decimal(0))
    warn_at, block_at = thresholds(policy, Decimal(override_total))
    state = "block" if spend >= block_at else "warn" if spend >= warn_at else "ok"
    pending = (
        (
            await session.execute(
                select(BudgetOverride)
                .where(
                    BudgetOverride.org_id == org.id,
                    BudgetOverride.status == "pending",
                    BudgetOverride.expires_at > now,
                )
                .order_by(BudgetOverride.created_at.desc())
            )
        )
        .scalars()
        .first()
    )
    return {
        "period": period.key,
        "periodStart": period.start,
        "periodEnd": period.end,
        "spend": money(spend),
        "reserved": money(reserved),
        "limit": money(policy.limit),
        "currency": policy.currency,
        "warnThreshold": policy.warn_threshold,
        "blockThreshold": policy.block_threshold,
        "status": state,
        "remaining": money(max(Decimal(0), block_at - spend - reserved)),
        "overridesActive": [override_view(o, now) for o in overrides],
        "pendingOverride": override_view(pending, now) if pending is not None else None,
    }


async def history(
    session: AsyncSession, *, org: Organization, period_kind: str | None = None
) -> list[dict[str, Any]]:
    """Committed spend of every period that has any, newest first."""
    policy = await active_policy(session, org.id)
    kind = period_kind or (policy.period if policy else "monthly")
    rows = (
        await session.execute(
            select(BudgetSpend.month, BudgetSpend.amount, BudgetSpend.events).where(
                BudgetSpend.org_id == org.id
            )
        )
    ).all()
    periods: dict[str, dict[str, Any]] = {}
    for month, amount, count in rows:
        at = dt.datetime(month.year, month.month, 1, tzinfo=dt.UTC)
        period = period_of(kind, at)
        entry = periods.setdefault(
            period.key,
            {
                "period": period.key,
                "periodStart": period.start,
                "periodEnd": period.end,
                "spend": Decimal(0),
                "events": 0,
            },
        )
        entry["spend"] += Decimal(amount)
        entry["events"] += int(count)
    out = sorted(periods.values(), key=lambda p: p["periodStart"], reverse=True)
    for entry in out:
        entry["spend"] = money(entry["spend"])
        entry["currency"] = policy.currency if policy else None
    return out


# -- overrides ----------------------------------------------------------------------------
def override_status(override: BudgetOverride, now: dt.datetime) -> str:
    if override.status in {"pending", "approved"} and override.expires_at <= now:
        return "expired"
    return override.status


def override_view(override: BudgetOverride, now: dt.datetime) -> dict[str, Any]:
    return {
        "overrideId": override.id,
        "orgId": override.org_id,
        "amount": money(override.amount),
        "reason": override.reason,
        "status": override_status(override, now),
        "requestedBy": override.requested_by,
        "approvals": [a for a in (override.first_approver, override.second_approver) if a],
        "rejectedBy": override.rejected_by,
        "expiresAt": override.expires_at,
        "createdAt": override.created_at,
        "decidedAt": override.decided_at,
    }


async def request_override(
    uow: UnitOfWork,
    budgets: Budgets,
    *,
    org: Organization,
    amount: Decimal,
    reason: str,
    expires_in_hours: int,
    actor: Actor,
) -> BudgetOverride:
    requester = _actor_uuid(actor)
    if requester is None:
        raise Forbidden("Only an identified principal may request an override")
    if await active_policy(uow.session, org.id) is None:
        raise NotFound("budget_policy", org.id)
    if budgets.limiter is not None:
        await enforce(
            budgets.limiter,
            scope="budget_override_request",
            key=str(requester),
            limit=budgets.override_requests_per_hour,
            period_seconds=3600,
        )
    now = utcnow()
    override = BudgetOverride(
        org_id=org.id,
        amount=amount,
        reason=reason,
        requested_by=requester,
        expires_at=now + dt.timedelta(hours=expires_in_hours),
        created_at=now,
    )
    uow.session.add(override)
    await uow.session.flush()
    await audit.record(
        uow.session,
        action="budgets:override:request",
        actor=actor,
        org_id=org.id,
        target_type="budget_override",
        target_id=override.id,
        metadata={"amount": money(amount), "expiresAt": override.expires_at.isoformat()},
    )
    return override


async def list_overrides(session: AsyncSession, *, org: Organization) -> list[BudgetOverride]:
    result = await session.execute(
        select(BudgetOverride)
        .where(BudgetOverride.org_id == org.id)
        .order_by(BudgetOverride.created_at.desc())
        .limit(200)
    )
    return list(result.scalars())


async def _deny_override(
    uow: UnitOfWork,
    *,
    org: Organization,
    override_id: uuid.UUID,
    actor: Actor,
    action: str,
    reason: str,
    error: DomainError,
) -> DomainError:
    await audit.record(
        uow.session,
        action=f"budgets:override:{action}",
        actor=actor,
        org_id=org.id,
        target_type="budget_override",
        target_id=override_id,
        outcome="denied",
        reason=reason,
    )
    error.commit = True
    return error


async def decide_override(
    uow: UnitOfWork,
    *,
    org: Organization,
    override_id: uuid.UUID,
    actor: Actor,
    actor_roles: frozenset[str],
    approve: bool,
) -> BudgetOverride:
    """One approval (two distinct approvers holding a required role, neither the requester,
    approve it) or a rejection (any one of them rejects it)."""
    session = uow.session
    action = "approve" if approve else "reject"
    override = (
        await session.execute(
            select(BudgetOverride)
            .where(BudgetOverride.id == override_id, BudgetOverride.org_id == org.id)
            .with_for_update()
        )
    ).scalar_one_or_none()
    if override is None:
        raise NotFound("budget_override", override_id)
    policy = await active_policy(session, org.id)
    required = set(policy.override_required_roles if policy else DEFAULT_OVERRIDE_ROLES)
    approver = _actor_uuid(actor)
    now = utcnow()

    async def deny(reason: str, error: DomainError) -> DomainError:
        return await _deny_override(
            uow,
            org=org,
            override_id=override.id,
            actor=actor,
            action=action,
            reason=reason,
            error=error,
        )

    if not required & actor_roles or approver is None:
        raise await deny(
            "override_role_missing",
            Forbidden(
                f"Deciding an override needs one of the roles {sorted(required)}",
                code="override_role_missing",
                details={"requiredRoles": sorted(required)},
            ),
        )
    if approver == override.requested_by:
        raise await deny(
            "override_self_approval",
            Forbidden(
                "The requester cannot decide on their own override",
                code="override_self_approval",
            ),
        )
    current = override_status(override, now)
    if current == "expired":
        raise await deny(
            "override_expired",
            Conflict("The override has expired", code="override_expired"),
        )
    if current != "pending":
        raise await deny(
            "override_not_pending",
            Conflict(f"The override is {current}", code="override_not_pending"),
        )
    if approve and approver == override.first_approver:
        raise await deny(
            "override_already_approved",
            Conflict(
                "You have already approved this override; a second approver is needed",
                code="override_already_approved",
            ),
        )
    if approve:
        if override.first_approver is None:
            override.first_approver = approver
        else:
            override.second_approver = approver
            override.status = "approved"
            override.decided_at = now
    else:
        override.status = "rejected"
        override.rejected_by = approver
        override.decided_at = now
    await session.flush()
    await audit.record(
        session,
        action=f"budgets:override:{action}",
        actor=actor,
        org_id=org.id,
        target_type="budget_override",
        target_id=override.id,
        metadata={"status": override.status, "amount": money(override.amount)},
    )
    if override.status != "pending":
        uow.publish_after_commit(CHANNEL, {"org": str(org.id)})
    return override


async def block_crossed_at(
    session: AsyncSession, org_id: uuid.UUID, period_key: str
) -> dt.datetime | None:
    return (
        await session.execute(
            select(BudgetAlert.crossed_at).where(
                and_(
                    BudgetAlert.org_id == org_id,
                    BudgetAlert.period_key == period_key,
                    BudgetAlert.threshold == "block",
                )
            )
        )
    ).scalar_one_or_none()
