"""Organizations: create, read, update, suspend, restore, safe delete and purge."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from userorg.audit import recorder as audit
from userorg.authn.principal import Principal
from userorg.context import Actor
from userorg.db import UnitOfWork, utcnow
from userorg.declarative import managed
from userorg.errors import Conflict, ValidationFailed
from userorg.orgs.models import Organization
from userorg.orgs.schemas import OrgCreate, OrgUpdate
from userorg.schemas import decode_cursor, encode_cursor
from userorg.users.models import Membership


def parse_uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        return None


async def find_org(session: AsyncSession, ref: str) -> Organization | None:
    """Look an org up by its UUID or its slug."""
    org_id = parse_uuid(ref)
    if org_id is not None:
        return await session.get(Organization, org_id)
    if len(ref) > 63:
        return None
    return (
        await session.execute(select(Organization).where(Organization.slug == ref.lower()))
    ).scalar_one_or_none()


async def _validate_roles_exist(
    session: AsyncSession, org_id: uuid.UUID | None, roles: list[str]
) -> None:
    from userorg.roles.service import unknown_roles

    missing = await unknown_roles(session, org_id=org_id, roles=roles)
    if missing:
        raise ValidationFailed(
            "Unknown roles", code="unknown_role", details={"roles": sorted(missing)}
        )


async def create_org(uow: UnitOfWork, *, actor: Actor, data: OrgCreate) -> Organization:
    session = uow.session
    taken = (
        await session.execute(select(Organization.id).where(Organization.slug == data.slug))
    ).first()
    if taken is not None:
        raise Conflict("The slug is already taken", code="slug_taken", details={"slug": data.slug})
    await _validate_roles_exist(session, None, data.mfa_required_roles)
    org = Organization(
        name=data.name,
        slug=data.slug,
        billing_owner_email=data.billing_owner_email,
        mfa_required_roles=sorted(set(data.mfa_required_roles)),
        declarative=data.declarative.model_dump(by_alias=True) if data.declarative else None,
    )
    session.add(org)
    await session.flush()
    await managed.config_changed(uow, org=org, actor=actor)
    await audit.record(
        session,
        action="api:organization:create",
        actor=actor,
        org_id=org.id,
        target_type="organization",
        target_id=org.id,
        metadata={"slug": org.slug, "name": org.name},
    )
    return org


async def list_orgs(
    session: AsyncSession,
    *,
    principal: Principal,
    limit: int,
    cursor: str | None,
    status: str | None = None,
    slug_prefix: str | None = None,
) -> tuple[list[Organization], str | None]:
    query = select(Organization).order_by(Organization.id).limit(limit + 1)
    position = decode_cursor(cursor)
    if position is not None:
        after = parse_uuid(str(position.get("id")))
        if after is None:
            from userorg.errors import BadRequest

            raise BadRequest("The cursor is not valid", code="invalid_cursor")
        query = query.where(Organization.id > after)
    if status is not None:
        query = query.where(Organization.status == status)
    if slug_prefix:
        escaped = slug_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(Organization.slug.like(f"{escaped}%", escape="\\"))
    if not principal.is_platform_admin:
        if principal.type == "service_account":
            query = query.where(Organization.id == principal.home_org_id)
        else:
            query = query.join(Membership, Membership.org_id == Organization.id).where(
                Membership.user_id == principal.id, Membership.status == "active"
            )
    rows = list((await session.execute(query)).scalars())
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor({"id": str(rows[-1].id)})
    return rows, next_cursor


async def update_org(
    uow: UnitOfWork, *, actor: Actor, org: Organization, data: OrgUpdate
) -> Organization:
    fields = data.model_fields_set
    touched = set()
    if "name" in fields and data.name is not None and data.name != org.name:
        touched.add("name")
    if (
        "billing_owner_email" in fields
        and data.billing_owner_email is not None
        and data.billing_owner_email != org.billing_owner_email
    ):
        touched.add("billingOwnerEmail")
    if (
        "mfa_required_roles" in fields
        and data.mfa_required_roles is not None
        and sorted(set(data.mfa_required_roles)) != sorted(org.mfa_required_roles or [])
    ):
        touched.add("mfaRequiredRoles")
    if touched:
        await managed.check_api_change(
            uow, org=org, actor=actor, subject="organization", fields=touched
        )
    changes: dict[str, Any] = {}
    if "name" in fields and data.name is not None and data.name != org.name:
        changes["name"] = data.name
        org.name = data.name
    if (
        "billing_owner_email" in fields
        and data.billing_owner_email is not None
        and data.billing_owner_email != org.billing_owner_email
    ):
        changes["billingOwnerEmail"] = data.billing_owner_email
        org.billing_owner_email = data.billing_owner_email
    if "mfa_required_roles" in fields and data.mfa_required_roles is not None:
        await _validate_roles_exist(uow.session, org.id, data.mfa_required_roles)
        roles = sorted(set(data.mfa_required_roles))
        if roles != org.mfa_required_roles:
            changes["mfaRequiredRoles"] = roles
            org.mfa_required_roles = roles
    if "declarative" in fields:
        value = data.declarative.model_dump(by_alias=True) if data.declarative else None
        if value != org.declarative:
            changes["declarative"] = value
            org.declarative = value
            await managed.config_changed(uow, org=org, actor=actor)
    if changes:
        org.updated_at = utcnow()
        await uow.session.flush()
        await audit.record(
            uow.session,
            action="api:organization:update",
            actor=actor,
            org_id=org.id,
            target_type="organization",
            target_id=org.id,
            metadata={"changes": changes},
        )
    return org


async def _set_status(
    uow: UnitOfWork,
    *,
    actor: Actor,
    org: Organization,
    allowed_from: set[str],
    status: str,
    action: str,
    reason: str | None = None,
    purge_after: dt.datetime | None = None,
) -> Organization:
    if org.status not in allowed_from:
        raise Conflict(
            f"The organization is {org.status.replace('_', ' ')}",
            code="invalid_org_status",
            details={"status": org.status, "allowedFrom": sorted(allowed_from)},
        )
    previous = org.status
    org.status = status
    org.status_reason = reason
    org.purge_after = purge_after
    org.updated_at = utcnow()
    await uow.session.flush()
    await audit.record(
        uow.session,
        action=action,
        actor=actor,
        org_id=org.id,
        target_type="organization",
        target_id=org.id,
        reason=reason,
        metadata={"from": previous, "to": status},
    )
    return org


async def suspend_org(
    uow: UnitOfWork, *, actor: Actor, org: Organization, reason: str
) -> Organization:
    from userorg.authn.oauth2 import revoke_client_tokens

    # Client-credentials tokens of the org's service accounts end for good.
    await revoke_client_tokens(uow.session, org_id=org.id)
    return await _set_status(
        uow,
        actor=actor,
        org=org,
        allowed_from={"active"},
        status="suspended",
        action="api:organization:suspend",
        reason=reason,
    )


async def restore_org(uow: UnitOfWork, *, actor: Actor, org: Organization) -> Organization:
    return await _set_status(
        uow,
        actor=actor,
        org=org,
        allowed_from={"suspended", "pending_delete"},
        status="active",
        action="api:organization:restore",
    )


async def delete_org(
    uow: UnitOfWork, *, actor: Actor, org: Organization, retention_hours: int
) -> Organization:
    await managed.ensure_not_reconciling(uow.session, org=org)
    return await _set_status(
        uow,
        actor=actor,
        org=org,
        allowed_from={"active", "suspended"},
        status="pending_delete",
        action="api:organization:delete",
        reason="deletion requested",
        purge_after=utcnow() + dt.timedelta(hours=retention_hours),
    )


async def purge_due_orgs(uow: UnitOfWork, *, now: dt.datetime | None = None) -> list[uuid.UUID]:
    """Remove orgs whose retention window has passed. Their audit chain is kept."""
    now = now or utcnow()
    due = (
        (
            await uow.session.execute(
                select(Organization).where(
                    Organization.status == "pending_delete", Organization.purge_after <= now
                )
            )
        )
        .scalars()
        .all()
    )
    purged = []
    for org in due:
        await audit.record(
            uow.session,
            action="system:organization:purge",
            actor=Actor.system("maintenance"),
            org_id=org.id,
            target_type="organization",
            target_id=org.id,
            metadata={"slug": org.slug},
        )
        await uow.session.execute(delete(Organization).where(Organization.id == org.id))
        purged.append(org.id)
    return purged
