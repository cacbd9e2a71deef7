"""Budget I/O models. Amounts are decimals: JSON strings (``"12.50"``) or numbers in, strings
out, at most six decimals; never floats."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import AwareDatetime, Field, StrictInt, StringConstraints

from userorg.schemas import Email, InputModel, OutputModel, RoleName

Currency = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Z]{3}$"),
    Field(description="ISO 4217 code", examples=["USD"]),
]
Amount = Annotated[
    Decimal,
    Field(ge=0, le=Decimal("1000000000"), max_digits=16, decimal_places=6, allow_inf_nan=False),
]
PositiveAmount = Annotated[
    Decimal,
    Field(gt=0, le=Decimal("1000000000"), max_digits=16, decimal_places=6, allow_inf_nan=False),
]
Percent = Annotated[StrictInt, Field(ge=0, le=1000)]
HttpsUrl = Annotated[str, StringConstraints(max_length=2048, pattern=r"^https://[^\s]+$")]
Period = Literal["monthly", "quarterly", "annual"]
EventId = Annotated[str, StringConstraints(min_length=1, max_length=200)]


class BudgetNotifications(InputModel):
    emails: Annotated[list[Email], Field(max_length=50)] = []
    webhook_urls: Annotated[list[HttpsUrl], Field(max_length=10)] = []


class BudgetPolicyIn(InputModel):
    limit: Amount
    currency: Currency
    period: Period
    warn_threshold: Percent = Field(default=80, description="Percent of the limit")
    block_threshold: Percent = Field(default=100, description="Percent of the limit; ≥ warn")
    grace_period_minutes: Annotated[StrictInt, Field(ge=0, le=44_640)] = Field(
        default=0,
        description="After the block threshold is crossed, requests keep passing this long",
    )
    override_required_roles: Annotated[list[RoleName], Field(min_length=1, max_length=10)] = [
        "OrgOwner",
        "BillingAdmin",
    ]
    notifications: BudgetNotifications = BudgetNotifications()
    status: Literal["active", "archived"] = "active"


class NotificationsRead(OutputModel):
    emails: list[str]
    webhook_urls: list[str]


class BudgetPolicyRead(OutputModel):
    policy_id: uuid.UUID
    org_id: uuid.UUID
    limit: str
    currency: str
    period: Period
    warn_threshold: int
    block_threshold: int
    grace_period_minutes: int
    override_required_roles: list[str]
    notifications: NotificationsRead
    status: Literal["active", "archived"]
    version: int
    created_at: dt.datetime
    updated_at: dt.datetime


class UsageEventIn(InputModel):
    event_id: EventId
    amount: Amount
    currency: Currency
    timestamp: AwareDatetime
    api_key_id: uuid.UUID | None = None
    model: Annotated[str, StringConstraints(max_length=200)] | None = None
    reservation_id: Annotated[str, StringConstraints(max_length=64)] | None = None
    org_id: Annotated[str, StringConstraints(max_length=100)] | None = Field(
        default=None, description="When given, must name the path's org"
    )


class UsageBatchIn(InputModel):
    events: Annotated[list[UsageEventIn], Field(min_length=1, max_length=1000)]


class UsageItem(OutputModel):
    event_id: str
    status: Literal["recorded", "duplicate"]
    month: str


class UsageResultRead(OutputModel):
    recorded: int
    duplicates: int
    items: list[UsageItem]


class OverrideView(OutputModel):
    override_id: uuid.UUID
    org_id: uuid.UUID
    amount: str
    reason: str
    status: Literal["pending", "approved", "rejected", "expired"]
    requested_by: uuid.UUID
    approvals: list[uuid.UUID]
    rejected_by: uuid.UUID | None = None
    expires_at: dt.datetime
    created_at: dt.datetime
    decided_at: dt.datetime | None = None


class BudgetStatusRead(OutputModel):
    period: str = Field(examples=["2026-11", "2026-Q4", "2026"])
    period_start: dt.datetime
    period_end: dt.datetime
    spend: str
    reserved: str
    limit: str
    currency: str
    warn_threshold: int
    block_threshold: int
    status: Literal["ok", "warn", "block"]
    remaining: str
    overrides_active: list[OverrideView]
    pending_override: OverrideView | None = None


class PeriodTotal(OutputModel):
    period: str
    period_start: dt.datetime
    period_end: dt.datetime
    spend: str
    events: int
    currency: str | None = None


class HistoryRead(OutputModel):
    items: list[PeriodTotal]


class OverrideRequest(InputModel):
    amount: PositiveAmount
    reason: Annotated[str, StringConstraints(min_length=1, max_length=1000)]
    expires_in_hours: Annotated[StrictInt, Field(ge=1, le=24 * 90)]


class OverrideList(OutputModel):
    items: list[OverrideView]


class KafkaUsageEvent(UsageEventIn):
    """A message of the ``billing.usage`` topic: a usage event that names its org."""

    org_id: Annotated[str, StringConstraints(min_length=1, max_length=100)]
