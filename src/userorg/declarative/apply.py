"""Reading an org's actual state and applying a plan to it, inside one unit of work.

Every change is audited with the reconciler as a ``system`` actor and the commit id, run id
and trigger in the metadata. Domain invariants (the last OrgOwner, roles in use) are checked
by the same helpers the API uses; a failure raises and the caller rolls everything back.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from userorg.audit import recorder as audit
from userorg.authz.catalogue import OWNER_ROLE
from userorg.context import Actor
from userorg.db import UnitOfWork, new_id, utcnow
from userorg.declarative.budget import BudgetPolicyPort
from userorg.declarative.plan import ActualOrg, Operation, Plan
from userorg.declarative.schema import DesiredOrg
from userorg.errors import Conflict
from userorg.orgs.models import Organization
from userorg.roles import service as roles_service
from userorg.roles.models import CustomRole, RoleAssignment
from userorg.serviceaccounts import service as accounts_service
from userorg.serviceaccounts.models import ServiceAccount
from userorg.users.models import Invite, Membership, User

SOURCE = "declarative"
RECONCILER_ACTOR = Actor.system("reconciler")


async def load_actual(
    session: AsyncSession, *, org: Organization, budgets: BudgetPolicyPort | None
) -> ActualOrg:
    actual = ActualOrg(
        slug=org.slug,
        org={
            "name": org.name,
            "billingOwnerEmail": org.billing_owner_email,
            "mfaRequiredRoles": sorted(org.mfa_required_roles or []),
        },
        budgets_available=budgets is not None,
    )
    for role in (
        await session.execute(select(CustomRole).where(CustomRole.org_id == org.id))
    ).scalars():
        actual.roles[role.name] = {
            "scopes": sorted(role.scopes or []),
            "description": role.description,
        }
    grants: dict[tuple[str, uuid.UUID], list[str]] = {}
    for principal_type, principal_id, role_name in await session.execute(
        select(RoleAssignment.principal_type, RoleAssignment.principal_id, RoleAssignment.role_name)
        .where(RoleAssignment.org_id == org.id)
        .order_by(RoleAssignment.role_name)
    ):
        grants.setdefault((principal_type, principal_id), []).append(role_name)
    for user_id, email, status in await session.execute(
        select(User.id, User.email, Membership.status)
        .join(Membership, Membership.user_id == User.id)
        .where(Membership.org_id == org.id, Membership.status != "removed")
    ):
        actual.members[email] = {"roles": grants.get(("user", user_id), []), "status": status}
    for account in (
        await session.execute(
            select(ServiceAccount).where(
                ServiceAccount.org_id == org.id, ServiceAccount.deleted_at.is_(None)
            )
        )
    ).scalars():
        actual.service_accounts[account.name] = {
            "roles": grants.get(("service_account", account.id), []),
            "description": account.description,
            "status": account.status,
        }
    if budgets is not None:
        actual.budget = await budgets.current_policy(session, org_id=org.id)
    return actual


class _Applier:
    def __init__(
        self,
        uow: UnitOfWork,
        *,
        org: Organization,
        desired: DesiredOrg,
        metadata: dict[str, Any],
        budgets: BudgetPolicyPort | None,
        action_prefix: str,
    ) -> None:
        self.uow = uow
        self.session = uow.session
        self.org = org
        self.desired = desired
        self.metadata = metadata
        self.budgets = budgets
        self.prefix = action_prefix

    async def record(
        self, subject: str, verb: str, target_type: str, target_id: object, **extra: Any
    ) -> None:
        await audit.record(
            self.session,
            action=f"{self.prefix}:{subject}:{verb}",
            actor=RECONCILER_ACTOR,
            org_id=self.org.id,
            target_type=target_type,
            target_id=target_id,
            metadata={**self.metadata, **extra},
        )

    async def set_roles(
        self, principal_type: str, principal_id: uuid.UUID, roles: list[str]
    ) -> None:
        await roles_service.replace_roles(
            self.uow,
            actor=RECONCILER_ACTOR,
            org=self.org,
            principal_type=principal_type,
            principal_id=principal_id,
            roles=roles,
            justification="declared in Git",
            source=self.prefix,
            metadata=self.metadata,
            # As for invites: roles that require MFA are held, in force once the member
            # signs in with a second factor (docs/authentication.md).
            enforce_mfa=False,
        )

    # -- organization -------------------------------------------------------------------
    async def organization(self, op: Operation) -> None:
        org = self.org
        for name, change in op.changes.items():
            value = change["to"]
            if name == "name":
                org.name = value
            elif name == "billingOwnerEmail":
                org.billing_owner_email = value
            elif name == "mfaRequiredRoles":
                org.mfa_required_roles = list(value)
        org.updated_at = utcnow()
        await self.session.flush()
        await self.record("organization", "update", "organization", org.id, changes=op.changes)

    # -- roles --------------------------------------------------------------------------
    async def _role(self, name: str) -> CustomRole | None:
        return (
            await self.session.execute(
                select(CustomRole).where(CustomRole.org_id == self.org.id, CustomRole.name == name)
            )
        ).scalar_one_or_none()

    async def role(self, op: Operation) -> None:
        if op.action == "create":
            spec = self.desired.roles[op.target] if self.desired.roles else {}
            self.session.add(
                CustomRole(
                    org_id=self.org.id,
                    name=op.target,
                    description=spec.get("description"),
                    scopes=list(spec["scopes"]),
                )
            )
            await self.session.flush()
            await self.record("role", "create", "role", op.target, scopes=spec["scopes"])
            return
        role = await self._role(op.target)
        if role is None:
            raise Conflict("The role disappeared during the run", code="concurrent_change")
        if op.action == "update":
            for name, change in op.changes.items():
                if name == "scopes":
                    role.scopes = list(change["to"])
                elif name == "description":
                    role.description = change["to"]
            role.updated_at = utcnow()
            await self.session.flush()
            await self.record("role", "update", "role", op.target, changes=op.changes)
            return
        holders = (
            await self.session.execute(
                select(func.count())
                .select_from(RoleAssignment)
                .where(RoleAssignment.org_id == self.org.id, RoleAssignment.role_name == role.name)
            )
        ).scalar_one()
        invites = [
            invite
            for invite in (
                await self.session.execute(
                    select(Invite).where(Invite.org_id == self.org.id, Invite.status == "pending")
                )
            ).scalars()
            if role.name in invite.roles
        ]
        in_mfa = role.name in (self.org.mfa_required_roles or [])
        if holders or invites or in_mfa:
            raise Conflict(
                f"Role {role.name} is still in use and cannot be pruned",
                code="role_in_use",
                details={
                    "role": role.name,
                    "assignments": holders,
                    "pendingInvites": len(invites),
                    "inMfaRequiredRoles": in_mfa,
                },
            )
        await self.session.delete(role)
        await self.session.flush()
        await self.record("role", "delete", "role", op.target)

    # -- members ------------------------------------------------------------------------
    async def add_members(self, ops: list[Operation]) -> None:
        """New members in bulk: a few statements for all of them, one audit event each.

        A new member holds no role yet, so the grants are plain inserts (nothing to revoke,
        no last-owner question)."""
        emails = [op.target for op in ops]
        users: dict[str, User] = {}
        for start in range(0, len(emails), 500):
            chunk = emails[start : start + 500]
            for user in (
                await self.session.execute(select(User).where(User.email.in_(chunk)))
            ).scalars():
                users[user.email] = user
        existing = set(users)
        for email in emails:
            if email not in users:
                # A passwordless identity: the person sets a password through the reset flow.
                users[email] = User(id=new_id(), email=email)
                self.session.add(users[email])
        if len(users) > len(existing):
            await self.session.flush()  # users first: the rows below reference them
        memberships = {
            m.user_id: m
            for m in (
                await self.session.execute(
                    select(Membership).where(Membership.org_id == self.org.id)
                )
            ).scalars()
        }
        for op in ops:
            user = users[op.target]
            membership = memberships.get(user.id)
            if membership is None:
                self.session.add(Membership(id=new_id(), org_id=self.org.id, user_id=user.id))
            else:
                membership.status = "active"
                membership.status_reason = None
                membership.updated_at = utcnow()
            for role in op.changes["roles"]["to"]:
                self.session.add(
                    RoleAssignment(
                        id=new_id(),
                        org_id=self.org.id,
                        principal_type="user",
                        principal_id=user.id,
                        role_name=role,
                    )
                )
        await self.session.flush()
        for op in ops:
            await self.record(
                "member",
                "add",
                "user",
                users[op.target].id,
                email=op.target,
                roles=op.changes["roles"]["to"],
                newIdentity=op.target not in existing,
            )

    async def member(self, op: Operation) -> None:
        email = op.target
        user = (
            await self.session.execute(select(User).where(User.email == email))
        ).scalar_one_or_none()
        if op.action == "create":
            new_identity = user is None
            if user is None:
                # A passwordless identity: the person sets a password through the reset flow.
                user = User(email=email)
                self.session.add(user)
                await self.session.flush()
            membership = (
                await self.session.execute(
                    select(Membership).where(
                        Membership.org_id == self.org.id, Membership.user_id == user.id
                    )
                )
            ).scalar_one_or_none()
            if membership is None:
                self.session.add(Membership(org_id=self.org.id, user_id=user.id))
            else:
                membership.status = "active"
                membership.status_reason = None
                membership.updated_at = utcnow()
            await self.session.flush()
            roles = op.changes["roles"]["to"]
            await self.record(
                "member", "add", "user", user.id, email=email, roles=roles, newIdentity=new_identity
            )
            await self.set_roles("user", user.id, roles)
            return
        if user is None:
            raise Conflict("The member disappeared during the run", code="concurrent_change")
        if op.action == "update":
            await self.set_roles("user", user.id, op.changes["roles"]["to"])
            return
        membership = (
            await self.session.execute(
                select(Membership).where(
                    Membership.org_id == self.org.id, Membership.user_id == user.id
                )
            )
        ).scalar_one()
        roles = await roles_service.roles_of(
            self.session, org_id=self.org.id, principal_type="user", principal_id=user.id
        )
        if OWNER_ROLE in roles:
            await roles_service.ensure_other_owner(
                self.session, org_id=self.org.id, excluding_user=user.id
            )
        await roles_service.remove_all_roles(
            self.session, org_id=self.org.id, principal_type="user", principal_id=user.id
        )
        membership.status = "removed"
        membership.status_reason = "removed"
        membership.updated_at = utcnow()
        await self.session.flush()
        await self.record("member", "remove", "user", user.id, email=email, roles=roles)

    # -- service accounts ---------------------------------------------------------------
    async def _account(self, name: str) -> ServiceAccount | None:
        return (
            await self.session.execute(
                select(ServiceAccount).where(
                    ServiceAccount.org_id == self.org.id,
                    ServiceAccount.name == name,
                    ServiceAccount.deleted_at.is_(None),
                )
            )
        ).scalar_one_or_none()

    async def service_account(self, op: Operation) -> None:
        if op.action == "create":
            spec = (self.desired.service_accounts or {})[op.target]
            account = ServiceAccount(
                org_id=self.org.id,
                name=op.target,
                description=spec.get("description"),
                status=spec.get("status", "active"),
            )
            self.session.add(account)
            await self.session.flush()
            await self.record(
                "service_account", "create", "service_account", account.id, name=op.target
            )
            await self.set_roles("service_account", account.id, spec["roles"])
            return
        existing = await self._account(op.target)
        if existing is None:
            raise Conflict(
                "The service account disappeared during the run", code="concurrent_change"
            )
        account = existing
        roles = await roles_service.roles_of(
            self.session,
            org_id=self.org.id,
            principal_type="service_account",
            principal_id=account.id,
        )
        view = accounts_service.ServiceAccountView(account, roles)
        if op.action == "delete":
            await accounts_service.delete_service_account(
                self.uow,
                actor=RECONCILER_ACTOR,
                org=self.org,
                view=view,
                source=self.prefix,
                metadata=self.metadata,
            )
            return
        if "description" in op.changes:
            account.description = op.changes["description"]["to"]
            account.updated_at = utcnow()
            await self.session.flush()
            await self.record(
                "service_account",
                "update",
                "service_account",
                account.id,
                changes={"description": op.changes["description"]},
            )
        if "status" in op.changes:
            await accounts_service.set_status(
                self.uow,
                actor=RECONCILER_ACTOR,
                org=self.org,
                view=view,
                status=op.changes["status"]["to"],
                source=self.prefix,
                metadata=self.metadata,
            )
        if "roles" in op.changes:
            await self.set_roles("service_account", account.id, op.changes["roles"]["to"])

    # -- budget -------------------------------------------------------------------------
    async def budget_policy(self, op: Operation) -> None:
        assert self.budgets is not None
        assert self.desired.budget is not None
        await self.budgets.apply_policy(
            self.uow,
            org=self.org,
            policy=dict(self.desired.budget),
            actor=RECONCILER_ACTOR,
            audit_metadata=self.metadata,
        )


async def apply_plan(
    uow: UnitOfWork,
    *,
    org: Organization,
    plan: Plan,
    desired: DesiredOrg,
    metadata: dict[str, Any],
    budgets: BudgetPolicyPort | None,
    action_prefix: str = SOURCE,
) -> int:
    """Run the plan's applicable operations in order; returns how many ran."""
    applier = _Applier(
        uow,
        org=org,
        desired=desired,
        metadata=metadata,
        budgets=budgets,
        action_prefix=action_prefix,
    )
    count = 0
    pending_adds: list[Operation] = []
    for op in plan.applicable:
        if op.kind == "member" and op.action == "create":
            pending_adds.append(op)
            continue
        if pending_adds:
            await applier.add_members(pending_adds)
            count, pending_adds = count + len(pending_adds), []
        handler = getattr(applier, op.kind)
        await handler(op)
        count += 1
    if pending_adds:
        await applier.add_members(pending_adds)
        count += len(pending_adds)
    return count
