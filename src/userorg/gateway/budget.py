"""The budget part of a gateway decision.

``Gateway`` asks ``budgets.check(...)`` after the policy allowed. Without a budget
capability (or for an org without a policy) the answer is ``ok`` with no known remainder and
no reservation; the budgets capability (``userorg.budgets.gate.BudgetEnforcer``) reserves the
estimate atomically and says ``block`` when the org is over its block threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class BudgetResult:
    status: str  # ok | warn | block
    remaining: str | None = None  # a decimal string (never a float)
    reservation_id: str | None = None
    # Over the block threshold but inside the policy's grace period: allowed.
    grace: bool = False

    @property
    def blocks(self) -> bool:
        return self.status == "block" and not self.grace


BUDGET_OK = BudgetResult("ok")


class BudgetGate(Protocol):
    async def check(
        self, *, org_id: str, principal_id: str, estimated_cost: float | None
    ) -> BudgetResult: ...


class NoBudgets:
    """No budget capability: every org is within budget."""

    async def check(
        self, *, org_id: str, principal_id: str, estimated_cost: float | None
    ) -> BudgetResult:
        return BUDGET_OK
