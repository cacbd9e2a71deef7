"""The budgets capability's implementation of ``declarative.budget.BudgetPolicyPort``: the
reconciler reads and writes the org's policy through it, in its own unit of work."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from userorg.budgets import service
from userorg.context import Actor
from userorg.db import UnitOfWork
from userorg.orgs.models import Organization


class DeclarativeBudgets:
    async def current_policy(
        self, session: AsyncSession, *, org_id: uuid.UUID
    ) -> dict[str, Any] | None:
        policy = await service.active_policy(session, org_id)
        if policy is None:
            return None
        document = service.policy_document(policy)
        # In the YAML's shape: notification lists that are empty are simply not declared.
        document["notifications"] = {k: v for k, v in document["notifications"].items() if v}
        return document

    async def apply_policy(
        self,
        uow: UnitOfWork,
        *,
        org: Organization,
        policy: dict[str, Any],
        actor: Actor,
        audit_metadata: dict[str, Any],
    ) -> None:
        current = await service.active_policy(uow.session, org.id)
        base = service.policy_document(current) if current is not None else {}
        merged = {**base, **policy}
        notifications = {**base.get("notifications", {}), **merged.get("notifications", {})}
        data = service.PolicyData(
            limit=Decimal(str(merged["limit"])),
            currency=str(merged["currency"]),
            period=str(merged["period"]),
            warn_threshold=int(merged.get("warnThreshold", 80)),
            block_threshold=int(merged.get("blockThreshold", 100)),
            grace_period_minutes=int(merged.get("gracePeriodMinutes", 0)),
            override_required_roles=tuple(
                merged.get("overrideRequiredRoles", service.DEFAULT_OVERRIDE_ROLES)
            ),
            notifications={
                "emails": list(notifications.get("emails", [])),
                "webhookUrls": list(notifications.get("webhookUrls", [])),
            },
        )
        await service.put_policy(
            uow,
            org=org,
            data=data,
            actor=actor,
            source="declarative",
            audit_metadata=audit_metadata,
        )
