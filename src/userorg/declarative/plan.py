"""The plan: the difference between an org's declared and actual state, as operations.

Pure data in, pure data out (no database), so the same code plans in the reconciler, in the
API's dry run and offline in ``userorg declarative plan``. Operations come out in the order
``apply`` runs them: roles before the grants that use them, grants before removals, removals
of members and accounts before the roles they held.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from userorg.authz.catalogue import ORG_SYSTEM_ROLES, OWNER_ROLE
from userorg.declarative.schema import ConfigError, DesiredOrg

KIND_ORDER = ("role", "organization", "member", "service_account", "budget_policy")
SKIP_PRUNE = "prune_disabled"
SKIP_BUDGETS = "budgets_capability_unavailable"
SKIP_REASONS = {
    SKIP_PRUNE: "not in Git; kept because pruning is off",
    SKIP_BUDGETS: "not applied: budgets capability unavailable",
}


@dataclass
class ActualOrg:
    """What the database holds for the managed parts of an org."""

    slug: str
    org: dict[str, Any] = field(default_factory=dict)
    roles: dict[str, dict[str, Any]] = field(default_factory=dict)
    members: dict[str, dict[str, Any]] = field(default_factory=dict)
    service_accounts: dict[str, dict[str, Any]] = field(default_factory=dict)
    budget: dict[str, Any] | None = None
    budgets_available: bool = False

    @classmethod
    def from_desired(cls, slug: str, desired: DesiredOrg | None) -> ActualOrg:
        """The state an org would have if ``desired`` had been applied to an empty org."""
        actual = cls(slug=slug, budgets_available=True)
        if desired is None:
            return actual
        actual.org = dict(desired.org)
        actual.roles = {
            name: {"scopes": spec["scopes"], "description": spec.get("description")}
            for name, spec in (desired.roles or {}).items()
        }
        actual.members = {
            email: {"roles": spec["roles"], "status": "active"}
            for email, spec in (desired.members or {}).items()
        }
        actual.service_accounts = {
            name: {
                "roles": spec["roles"],
                "description": spec.get("description"),
                "status": spec.get("status", "active"),
            }
            for name, spec in (desired.service_accounts or {}).items()
        }
        actual.budget = dict(desired.budget) if desired.budget is not None else None
        return actual


@dataclass
class Operation:
    kind: str
    action: str  # create | update | delete
    target: str
    changes: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "action": self.action,
            "target": self.target,
            "changes": self.changes,
            "applied": self.skipped is None,
            "skipped": self.skipped,
        }

    def render(self) -> str:
        symbol = {"create": "+", "update": "~", "delete": "-"}[self.action]
        if self.skipped:
            symbol = "!"
        label = f"{self.kind.replace('_', ' ')} {self.target}".strip()
        if self.skipped:
            return f"  {symbol} {label}: {SKIP_REASONS.get(self.skipped, self.skipped)}"
        if not self.changes:
            return f"  {symbol} {label}"
        parts = []
        for name, change in self.changes.items():
            before, after = change.get("from"), change.get("to")
            if self.action == "create":
                parts.append(f"{name}={_show(after)}")
            elif self.action == "delete":
                parts.append(f"{name}={_show(before)}")
            else:
                parts.append(f"{name}: {_show(before)} → {_show(after)}")
        return f"  {symbol} {label}: " + "; ".join(parts)


def _show(value: Any) -> str:
    if value is None:
        return "(unset)"
    if isinstance(value, list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


@dataclass
class Plan:
    slug: str
    operations: list[Operation] = field(default_factory=list)
    errors: list[ConfigError] = field(default_factory=list)
    commit_id: str | None = None
    base_commit: str | None = None

    @property
    def applicable(self) -> list[Operation]:
        return [op for op in self.operations if op.skipped is None]

    @property
    def not_applied(self) -> list[Operation]:
        return [op for op in self.operations if op.skipped is not None]

    @property
    def has_changes(self) -> bool:
        return bool(self.applicable)

    @property
    def valid(self) -> bool:
        return not self.errors

    def counts(self) -> dict[str, int]:
        counts = {"create": 0, "update": 0, "delete": 0, "notApplied": 0}
        for op in self.operations:
            if op.skipped:
                counts["notApplied"] += 1
            else:
                counts[op.action] += 1
        return counts

    def to_json(self) -> dict[str, Any]:
        return {
            "slug": self.slug,
            "commitId": self.commit_id,
            "baseCommit": self.base_commit,
            "valid": self.valid,
            "hasChanges": self.has_changes,
            "counts": self.counts(),
            "operations": [op.to_json() for op in self.operations],
            "errors": [e.to_json() for e in self.errors],
            "text": self.render(),
        }

    def render(self) -> str:
        head = f"Plan for org {self.slug}"
        if self.commit_id:
            base = self.base_commit[:12] if self.base_commit else "nothing applied"
            head += f" (commit {self.commit_id[:12]}, last applied {base})"
        lines = [head + ":"]
        if self.errors:
            lines.append("  errors:")
            lines += [f"    {e.render()}" for e in self.errors]
        lines += [op.render() for op in self.operations]
        if len(lines) == 1:
            lines.append("  no changes")
        c = self.counts()
        lines.append(
            f"Plan: {c['create']} to add, {c['update']} to change, {c['delete']} to remove, "
            f"{c['notApplied']} not applied."
            + (" Refused: the configuration has errors." if self.errors else "")
        )
        return "\n".join(lines)


def _diff_fields(desired: dict[str, Any], actual: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: {"from": actual.get(name), "to": value}
        for name, value in desired.items()
        if actual.get(name) != value
    }


def _created(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: {"from": None, "to": value} for name, value in spec.items()}


def _deleted(spec: dict[str, Any], keys: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    return {name: {"from": spec.get(name), "to": None} for name in keys if name in spec}


def compute_plan(
    desired: DesiredOrg,
    actual: ActualOrg,
    *,
    prune: bool,
    max_removal_fraction: float = 1.0,
) -> Plan:
    """Diff ``desired`` against ``actual``; check references and the safety guard."""
    plan = Plan(slug=actual.slug)
    ops = plan.operations
    errors = plan.errors

    if desired.slug is not None and desired.slug != actual.slug:
        errors.append(
            ConfigError(
                f"this folder declares slug {desired.slug!r} but the org is {actual.slug!r}",
                code="slug_mismatch",
                **_loc(desired, "org:slug"),
            )
        )

    # Roles first: grants below may name the roles created here.
    role_deletes: list[Operation] = []
    available_custom = set(actual.roles)
    if desired.roles is not None:
        for name, spec in sorted(desired.roles.items()):
            current = actual.roles.get(name)
            if current is None:
                ops.append(Operation("role", "create", name, _created(spec)))
            else:
                changes = _diff_fields(spec, current)
                if changes:
                    ops.append(Operation("role", "update", name, changes))
        for name in sorted(set(actual.roles) - set(desired.roles)):
            op = Operation("role", "delete", name, _deleted(actual.roles[name], ("scopes",)))
            if not prune:
                op.skipped = SKIP_PRUNE
            else:
                available_custom.discard(name)
            role_deletes.append(op)
        available_custom |= set(desired.roles)
    known_roles = ORG_SYSTEM_ROLES | available_custom

    def check_roles(roles: list[str], key: str, what: str) -> None:
        unknown = sorted(set(roles) - known_roles)
        if unknown:
            errors.append(
                ConfigError(
                    f"{what}: unknown roles {', '.join(unknown)}",
                    code="unknown_role",
                    **_loc(desired, key),
                )
            )

    if desired.org:
        if "mfaRequiredRoles" in desired.org:
            check_roles(desired.org["mfaRequiredRoles"], "org:mfaRequiredRoles", "mfaRequiredRoles")
        changes = _diff_fields(desired.org, actual.org)
        if changes:
            ops.append(Operation("organization", "update", "", changes))

    member_deletes: list[Operation] = []
    if desired.members is not None:
        creates, updates = [], []
        for email, spec in sorted(desired.members.items()):
            check_roles(spec["roles"], f"member:{email}", f"member {email}")
            current = actual.members.get(email)
            if current is None:
                creates.append(Operation("member", "create", email, _created(spec)))
            elif current.get("roles") != spec["roles"]:
                updates.append(
                    Operation(
                        "member",
                        "update",
                        email,
                        {"roles": {"from": current.get("roles"), "to": spec["roles"]}},
                    )
                )
        # Grants of OrgOwner before anything that takes it away (the last-owner invariant).
        updates.sort(key=lambda op: OWNER_ROLE not in (op.changes["roles"]["to"] or []))
        ops += creates + updates
        for email in sorted(set(actual.members) - set(desired.members)):
            op = Operation("member", "delete", email, _deleted(actual.members[email], ("roles",)))
            if not prune:
                op.skipped = SKIP_PRUNE
            member_deletes.append(op)

    account_deletes: list[Operation] = []
    if desired.service_accounts is not None:
        for name, spec in sorted(desired.service_accounts.items()):
            check_roles(spec["roles"], f"service_account:{name}", f"service account {name}")
            current = actual.service_accounts.get(name)
            if current is None:
                ops.append(Operation("service_account", "create", name, _created(spec)))
            else:
                changes = _diff_fields(spec, current)
                if changes:
                    ops.append(Operation("service_account", "update", name, changes))
        for name in sorted(set(actual.service_accounts) - set(desired.service_accounts)):
            op = Operation(
                "service_account",
                "delete",
                name,
                _deleted(actual.service_accounts[name], ("roles",)),
            )
            if not prune:
                op.skipped = SKIP_PRUNE
            account_deletes.append(op)

    ops += member_deletes + account_deletes + role_deletes

    if desired.budget is not None:
        if "overrideRequiredRoles" in desired.budget:
            check_roles(
                desired.budget["overrideRequiredRoles"],
                "budget:overrideRequiredRoles",
                "overrideRequiredRoles",
            )
        if not actual.budgets_available:
            ops.append(
                Operation(
                    "budget_policy", "update", "", _created(desired.budget), skipped=SKIP_BUDGETS
                )
            )
        elif actual.budget is None:
            ops.append(Operation("budget_policy", "create", "", _created(desired.budget)))
        else:
            changes = _diff_fields(desired.budget, actual.budget)
            if changes:
                ops.append(Operation("budget_policy", "update", "", changes))

    errors += _guard(desired, actual, member_deletes, max_removal_fraction)
    return plan


def _loc(desired: DesiredOrg, key: str) -> dict[str, Any]:
    return desired.locate(key)


def _guard(
    desired: DesiredOrg,
    actual: ActualOrg,
    member_deletes: list[Operation],
    max_removal_fraction: float,
) -> list[ConfigError]:
    """Refuse plans that remove too many members at once or leave the org without an owner."""
    if desired.members is None:
        return []
    errors = []
    removed = [op for op in member_deletes if op.skipped is None]
    allowed = max(1, math.floor(max_removal_fraction * len(actual.members)))
    if len(removed) > allowed:
        errors.append(
            ConfigError(
                f"the plan removes {len(removed)} of {len(actual.members)} members; at most "
                f"{allowed} may be removed at once ({max_removal_fraction:.0%})",
                code="removal_guard",
                **_loc(desired, "members"),
            )
        )
    owners = 0
    removed_emails = {op.target for op in removed}
    for email, current in actual.members.items():
        if email in removed_emails:
            continue
        roles = desired.members[email]["roles"] if email in desired.members else current["roles"]
        if OWNER_ROLE in roles and current.get("status", "active") == "active":
            owners += 1
    for email, spec in desired.members.items():
        if email not in actual.members and OWNER_ROLE in spec["roles"]:
            owners += 1
    if owners == 0:
        errors.append(
            ConfigError(
                "the plan leaves the organization without an active OrgOwner",
                code="no_owner",
                **_loc(desired, "members"),
            )
        )
    return errors
