"""The budget part of a gateway decision: the hook the budgets issue fills in.

``Gateway`` asks ``container.budget_gate.check(...)`` after the policy allowed; until budgets
exist the answer is always ``ok`` with no known remainder and no reservation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class BudgetResult:
    status: str  # ok | warn | block
    remaining: float | None = None
    reservation_id: str | None = None

    @property
    def blocks(self) -> bool:
        return self.status == "block"


BUDGET_OK = BudgetResult("ok")


class BudgetGate(Protocol):
    async def check(
        self, *, org_id: str, principal_id: str, estimated_cost: float | None
    ) -> BudgetResult: ...


class NoBudgets:
    """Until the budgets issue: every org is within budget."""

    async def check(
        self, *, org_id: str, principal_id: str, estimated_cost: float | None
    ) -> BudgetResult:
        return BUDGET_OK
