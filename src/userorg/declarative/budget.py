"""The narrow interface through which declarative management reads and writes an org's
budget policy.

The budgets capability (PRODUCT.md §7) does not exist yet. Until it registers an
implementation on ``Container.budget_policies``, every plan that declares a ``BudgetPolicy``
reports it as *not applied: budgets capability unavailable* and the org's status carries that
warning: nothing pretends the policy took effect.

An implementation receives and returns the policy in the YAML's shape (camelCase keys,
``limit`` as a decimal string) and, in ``apply_policy``, writes it and its audit event inside
the caller's unit of work, so a failing reconciliation rolls it back with everything else.
"""

from __future__ import annotations

import uuid
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from userorg.context import Actor
from userorg.db import UnitOfWork
from userorg.orgs.models import Organization


class BudgetPolicyPort(Protocol):
    async def current_policy(
        self, session: AsyncSession, *, org_id: uuid.UUID
    ) -> dict[str, Any] | None:
        """The org's policy in the declarative shape, or None when it has none."""
        ...

    async def apply_policy(
        self,
        uow: UnitOfWork,
        *,
        org: Organization,
        policy: dict[str, Any],
        actor: Actor,
        audit_metadata: dict[str, Any],
    ) -> None:
        """Set the declared fields of ``policy`` (absent fields stay as they are)."""
        ...
