"""Roles: the system roles, custom roles per org, and who holds which role where."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from userorg.audit import recorder as audit
from userorg.authn import mfa
from userorg.authn.principal import Principal
from userorg.authz.catalogue import ORG_SCOPES, ORG_SYSTEM_ROLES, OWNER_ROLE, SYSTEM_ROLES
from userorg.context import Actor
from userorg.db import UnitOfWork, utcnow
from userorg.declarative.managed import check_api_change
from userorg.errors import Conflict, Forbidden, NotFound, ValidationFailed
from userorg.orgs.models import Organization
from userorg.roles.models import CustomRole, RoleAssignment
from userorg.roles.schemas import RoleCreate, RoleUpdate
from userorg.users.models import Invite, Membership


@dataclass(frozen=True, slots=True)
class Grants:
    """What a principal holds in one org."""

    membership_status: str | None  # None: not a member of the org
    roles: frozenset[str]
    scopes: frozenset[str]
    custom_scopes: frozenset[str] = frozenset()  # granted by the custom roles among ``roles``


NO_GRANTS = Grants(None, frozenset(), frozenset())


async def custom_roles(session: AsyncSession, org_id: uuid.UUID) -> dict[str, CustomRole]:
    rows = await session.execute(select(CustomRole).where(CustomRole.org_id == org_id))
    return {role.name: role for role in rows.scalars()}


async def scopes_of_roles(
    session: AsyncSession, *, org_id: uuid.UUID, roles: Iterable[str]
) -> frozenset[str]:
    roles = set(roles)
    scopes: set[str] = set()
    for role in roles & ORG_SYSTEM_ROLES:
        scopes |= SYSTEM_ROLES[role]
    scopes |= await custom_scopes_of_roles(session, org_id=org_id, roles=roles)
    return frozenset(scopes & ORG_SCOPES)


async def custom_scopes_of_roles(
    session: AsyncSession, *, org_id: uuid.UUID, roles: Iterable[str]
) -> frozenset[str]:
    """The scopes the org's custom roles among ``roles`` grant (as defined now)."""
    custom_names = set(roles) - ORG_SYSTEM_ROLES
    scopes: set[str] = set()
    if custom_names:
        rows = await session.execute(
            select(CustomRole.scopes).where(
                CustomRole.org_id == org_id, CustomRole.name.in_(custom_names)
            )
        )
        for (role_scopes,) in rows:
            scopes |= set(role_scopes)
    return frozenset(scopes & ORG_SCOPES)


async def roles_of(
    session: AsyncSession, *, org_id: uuid.UUID, principal_type: str, principal_id: uuid.UUID
) -> list[str]:
    rows = await session.execute(
        select(RoleAssignment.role_name)
        .where(
            RoleAssignment.org_id == org_id,
            RoleAssignment.principal_type == principal_type,
            RoleAssignment.principal_id == principal_id,
        )
        .order_by(RoleAssignment.role_name)
    )
    return list(rows.scalars())


async def roles_by_principal(
    session: AsyncSession, *, org_id: uuid.UUID, principal_type: str, principal_ids: list[uuid.UUID]
) -> dict[uuid.UUID, list[str]]:
    result: dict[uuid.UUID, list[str]] = {pid: [] for pid in principal_ids}
    if not principal_ids:
        return result
    rows = await session.execute(
        select(RoleAssignment.principal_id, RoleAssignment.role_name)
        .where(
            RoleAssignment.org_id == org_id,
            RoleAssignment.principal_type == principal_type,
            RoleAssignment.principal_id.in_(principal_ids),
        )
        .order_by(RoleAssignment.role_name)
    )
    for principal_id, role_name in rows:
        result[principal_id].append(role_name)
    return result


async def load_grants(
    session: AsyncSession, *, principal: Principal, org: Organization | None
) -> Grants:
    if org is None:
        return NO_GRANTS
    if principal.home_org_id is not None and principal.home_org_id != org.id:
        # Service accounts and API keys (even a user's personal key) act in one org only.
        return NO_GRANTS
    if principal.type == "user":
        membership_status = (
            await session.execute(
                select(Membership.status).where(
                    Membership.org_id == org.id, Membership.user_id == principal.id
                )
            )
        ).scalar_one_or_none()
        if membership_status is None or membership_status == "removed":
            return NO_GRANTS
    elif principal.type == "service_account":
        if principal.home_org_id is None:
            return NO_GRANTS
        membership_status = principal.status
    else:
        return NO_GRANTS
    roles = await roles_of(
        session, org_id=org.id, principal_type=principal.type, principal_id=principal.id
    )
    if principal.type == "user" and principal.mfa_verified_at is None:
        # Roles that require MFA are in force only in sessions signed in with a second factor.
        required = mfa.mfa_required_roles(org)
        roles = [role for role in roles if role not in required]
    custom = await custom_scopes_of_roles(session, org_id=org.id, roles=roles)
    scopes = frozenset(
        {scope for role in set(roles) & ORG_SYSTEM_ROLES for scope in SYSTEM_ROLES[role]} | custom
    )
    return Grants(membership_status, frozenset(roles), scopes & ORG_SCOPES, custom)


async def unknown_roles(
    session: AsyncSession, *, org_id: uuid.UUID | None, roles: Iterable[str]
) -> set[str]:
    wanted = set(roles) - ORG_SYSTEM_ROLES
    if not wanted:
        return set()
    if org_id is None:
        return wanted
    known = await custom_roles(session, org_id)
    return wanted - set(known)


async def check_assignable(
    session: AsyncSession,
    *,
    org: Organization,
    actor_scopes: frozenset[str],
    actor_is_platform_admin: bool,
    roles: Iterable[str],
) -> list[str]:
    """Roles must exist in the org, and nobody grants scopes they do not hold themselves."""
    role_list = sorted(set(roles))
    missing = await unknown_roles(session, org_id=org.id, roles=role_list)
    if "PlatformAdmin" in role_list:
        missing.add("PlatformAdmin")
    if missing:
        raise ValidationFailed(
            "Unknown roles", code="unknown_role", details={"roles": sorted(missing)}
        )
    if not actor_is_platform_admin:
        granted = await scopes_of_roles(session, org_id=org.id, roles=role_list)
        beyond = granted - actor_scopes
        if beyond:
            raise Forbidden(
                "A role cannot grant scopes that its granter does not hold",
                code="privilege_escalation",
                details={"scopes": sorted(beyond)},
            )
    return role_list


async def replace_roles(
    uow: UnitOfWork,
    *,
    actor: Actor,
    org: Organization,
    principal_type: str,
    principal_id: uuid.UUID,
    roles: list[str],
    justification: str | None = None,
    source: str = "api",
    metadata: dict[str, object] | None = None,
    check_managed: bool = True,
    enforce_mfa: bool = True,
) -> list[str]:
    """Set a principal's roles in an org (roles already validated by ``check_assignable``).

    A user without a second factor cannot be granted a role that requires MFA (409); invite
    acceptance passes ``enforce_mfa=False``: such roles are then held but stay out of force
    until the user signs in with a second factor (see ``load_grants``).

    ``source`` is the audit tag's first part (``declarative`` when the reconciler applies Git);
    ``metadata`` is added to the audit event. API changes are checked against declarative
    management (``check_managed``) before anything is written."""
    session = uow.session
    current = set(
        await roles_of(
            session, org_id=org.id, principal_type=principal_type, principal_id=principal_id
        )
    )
    target = set(roles)
    if current == target:
        return sorted(target)
    if source == "api" and check_managed:
        from userorg.declarative.managed import check_principal_roles_change

        await check_principal_roles_change(
            uow, org=org, actor=actor, principal_type=principal_type, principal_id=principal_id
        )
    if principal_type == "user" and OWNER_ROLE in current and OWNER_ROLE not in target:
        await ensure_other_owner(session, org_id=org.id, excluding_user=principal_id)
    removed = current - target
    added = target - current
    if principal_type == "user" and enforce_mfa and added:
        await mfa.check_role_grant(session, org=org, user_id=principal_id, added=added)
    if removed:
        await session.execute(
            delete(RoleAssignment).where(
                RoleAssignment.org_id == org.id,
                RoleAssignment.principal_type == principal_type,
                RoleAssignment.principal_id == principal_id,
                RoleAssignment.role_name.in_(removed),
            )
        )
    for role in sorted(added):
        session.add(
            RoleAssignment(
                org_id=org.id,
                principal_type=principal_type,
                principal_id=principal_id,
                role_name=role,
                granted_by=uuid.UUID(actor.id)
                if actor.type in {"user", "service_account"} and actor.id
                else None,
            )
        )
    await session.flush()
    await audit.record(
        session,
        action=f"{source}:{principal_type}:roles_update",
        actor=actor,
        org_id=org.id,
        target_type=principal_type,
        target_id=principal_id,
        metadata={
            **(metadata or {}),
            "added": sorted(added),
            "removed": sorted(removed),
            "roles": sorted(target),
            "justification": justification,
        },
    )
    return sorted(target)


async def ensure_other_owner(
    session: AsyncSession, *, org_id: uuid.UUID, excluding_user: uuid.UUID
) -> None:
    """An org never loses its last active OrgOwner."""
    count = (
        await session.execute(
            select(func.count())
            .select_from(RoleAssignment)
            .join(
                Membership,
                (Membership.user_id == RoleAssignment.principal_id)
                & (Membership.org_id == RoleAssignment.org_id),
            )
            .where(
                RoleAssignment.org_id == org_id,
                RoleAssignment.principal_type == "user",
                RoleAssignment.role_name == OWNER_ROLE,
                RoleAssignment.principal_id != excluding_user,
                Membership.status == "active",
            )
        )
    ).scalar_one()
    if count == 0:
        raise Conflict(
            "The organization must keep at least one active OrgOwner",
            code="last_owner",
            details={"role": OWNER_ROLE},
        )


async def remove_all_roles(
    session: AsyncSession, *, org_id: uuid.UUID, principal_type: str, principal_id: uuid.UUID
) -> None:
    await session.execute(
        delete(RoleAssignment).where(
            RoleAssignment.org_id == org_id,
            RoleAssignment.principal_type == principal_type,
            RoleAssignment.principal_id == principal_id,
        )
    )


# -- custom roles -------------------------------------------------------------------------
def _check_scopes(scopes: Iterable[str]) -> list[str]:
    scope_list = sorted(set(scopes))
    unknown = [s for s in scope_list if s not in ORG_SCOPES]
    if unknown:
        raise ValidationFailed(
            "Unknown or non-org scopes", code="unknown_scope", details={"scopes": unknown}
        )
    return scope_list


async def get_custom_role(session: AsyncSession, *, org_id: uuid.UUID, name: str) -> CustomRole:
    role = (
        await session.execute(
            select(CustomRole).where(CustomRole.org_id == org_id, CustomRole.name == name)
        )
    ).scalar_one_or_none()
    if role is None:
        if name in SYSTEM_ROLES:
            raise Conflict(
                "System roles are read-only", code="system_role_read_only", details={"role": name}
            )
        raise NotFound("role", name)
    return role


async def create_custom_role(
    uow: UnitOfWork,
    *,
    actor: Actor,
    org: Organization,
    actor_scopes: frozenset[str],
    actor_is_platform_admin: bool,
    data: RoleCreate,
) -> CustomRole:
    await check_api_change(
        uow, org=org, actor=actor, subject="role", key=data.name, action="create"
    )
    if data.name in SYSTEM_ROLES:
        raise Conflict(
            "The name belongs to a system role", code="role_exists", details={"role": data.name}
        )
    if data.name in await custom_roles(uow.session, org.id):
        raise Conflict(
            "A role with this name exists", code="role_exists", details={"role": data.name}
        )
    scopes = _check_scopes(data.scopes)
    _check_not_beyond(scopes, actor_scopes, actor_is_platform_admin)
    role = CustomRole(org_id=org.id, name=data.name, description=data.description, scopes=scopes)
    uow.session.add(role)
    await uow.session.flush()
    await audit.record(
        uow.session,
        action="api:role:create",
        actor=actor,
        org_id=org.id,
        target_type="role",
        target_id=role.name,
        metadata={"scopes": scopes},
    )
    return role


def _check_not_beyond(
    scopes: list[str], actor_scopes: frozenset[str], is_platform_admin: bool
) -> None:
    beyond = set(scopes) - actor_scopes
    if beyond and not is_platform_admin:
        raise Forbidden(
            "A role cannot grant scopes that its author does not hold",
            code="privilege_escalation",
            details={"scopes": sorted(beyond)},
        )


async def update_custom_role(
    uow: UnitOfWork,
    *,
    actor: Actor,
    org: Organization,
    role: CustomRole,
    actor_scopes: frozenset[str],
    actor_is_platform_admin: bool,
    data: RoleUpdate,
) -> CustomRole:
    touched = set()
    if "description" in data.model_fields_set and data.description != role.description:
        touched.add("description")
    if (
        "scopes" in data.model_fields_set
        and data.scopes is not None
        and sorted(set(data.scopes)) != sorted(role.scopes or [])
    ):
        touched.add("scopes")
    if touched:
        await check_api_change(
            uow, org=org, actor=actor, subject="role", key=role.name, fields=touched
        )
    changes: dict[str, object] = {}
    if "description" in data.model_fields_set and data.description != role.description:
        changes["description"] = data.description
        role.description = data.description
    if "scopes" in data.model_fields_set and data.scopes is not None:
        scopes = _check_scopes(data.scopes)
        if scopes != role.scopes:
            _check_not_beyond(scopes, actor_scopes, actor_is_platform_admin)
            changes["scopes"] = {"from": role.scopes, "to": scopes}
            role.scopes = scopes
    if changes:
        role.updated_at = utcnow()
        await uow.session.flush()
        await audit.record(
            uow.session,
            action="api:role:update",
            actor=actor,
            org_id=org.id,
            target_type="role",
            target_id=role.name,
            metadata={"changes": changes},
        )
    return role


async def delete_custom_role(
    uow: UnitOfWork, *, actor: Actor, org: Organization, role: CustomRole
) -> None:
    await check_api_change(
        uow, org=org, actor=actor, subject="role", key=role.name, action="delete"
    )
    session = uow.session
    holders = (
        await session.execute(
            select(func.count())
            .select_from(RoleAssignment)
            .where(RoleAssignment.org_id == org.id, RoleAssignment.role_name == role.name)
        )
    ).scalar_one()
    pending_invites = [
        invite
        for invite in (
            await session.execute(
                select(Invite).where(Invite.org_id == org.id, Invite.status == "pending")
            )
        ).scalars()
        if role.name in invite.roles
    ]
    in_mfa_policy = role.name in (org.mfa_required_roles or [])
    if holders or pending_invites or in_mfa_policy:
        raise Conflict(
            "The role is in use",
            code="role_in_use",
            details={
                "role": role.name,
                "assignments": holders,
                "pendingInvites": len(pending_invites),
                "inMfaRequiredRoles": in_mfa_policy,
            },
        )
    await session.delete(role)
    await session.flush()
    await audit.record(
        session,
        action="api:role:delete",
        actor=actor,
        org_id=org.id,
        target_type="role",
        target_id=role.name,
    )
