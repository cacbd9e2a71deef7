"""Service accounts: non-human principals holding at least one role in their org."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from userorg.apikeys import service as apikeys_service
from userorg.audit import recorder as audit
from userorg.authn.oauth2 import revoke_client_tokens
from userorg.context import Actor
from userorg.db import UnitOfWork, utcnow
from userorg.declarative.managed import check_api_change
from userorg.errors import BadRequest, Conflict, NotFound
from userorg.orgs.models import Organization
from userorg.orgs.service import parse_uuid
from userorg.roles import service as roles_service
from userorg.schemas import decode_cursor, encode_cursor
from userorg.serviceaccounts.models import ServiceAccount
from userorg.serviceaccounts.schemas import ServiceAccountUpdate

PRINCIPAL_TYPE = "service_account"


@dataclass(frozen=True, slots=True)
class ServiceAccountView:
    account: ServiceAccount
    roles: list[str]


async def _name_taken(session: AsyncSession, org_id: uuid.UUID, name: str) -> bool:
    row = (
        await session.execute(
            select(ServiceAccount.id).where(
                ServiceAccount.org_id == org_id,
                ServiceAccount.name == name,
                ServiceAccount.deleted_at.is_(None),
            )
        )
    ).first()
    return row is not None


async def create_service_account(
    uow: UnitOfWork,
    *,
    actor: Actor,
    org: Organization,
    name: str,
    description: str | None,
    roles: list[str],
) -> ServiceAccountView:
    session = uow.session
    await check_api_change(
        uow, org=org, actor=actor, subject="service_account", key=name, action="create"
    )
    if await _name_taken(session, org.id, name):
        raise Conflict(
            "A service account with this name exists", code="name_taken", details={"name": name}
        )
    account = ServiceAccount(
        org_id=org.id,
        name=name,
        description=description,
        created_by=uuid.UUID(actor.id) if actor.id and actor.type == "user" else None,
    )
    session.add(account)
    await session.flush()
    await audit.record(
        session,
        action="api:service_account:create",
        actor=actor,
        org_id=org.id,
        target_type=PRINCIPAL_TYPE,
        target_id=account.id,
        metadata={"name": name, "roles": roles},
    )
    assigned = await roles_service.replace_roles(
        uow,
        actor=actor,
        org=org,
        principal_type=PRINCIPAL_TYPE,
        principal_id=account.id,
        roles=roles,
    )
    return ServiceAccountView(account, assigned)


async def get_service_account(
    session: AsyncSession, *, org: Organization, account_id: uuid.UUID
) -> ServiceAccountView:
    account = await session.get(ServiceAccount, account_id)
    if account is None or account.org_id != org.id or account.deleted_at is not None:
        raise NotFound("service_account", account_id)
    roles = await roles_service.roles_of(
        session, org_id=org.id, principal_type=PRINCIPAL_TYPE, principal_id=account.id
    )
    return ServiceAccountView(account, roles)


async def list_service_accounts(
    session: AsyncSession,
    *,
    org: Organization,
    limit: int,
    cursor: str | None,
    status: str | None = None,
) -> tuple[list[ServiceAccountView], str | None]:
    query = (
        select(ServiceAccount)
        .where(ServiceAccount.org_id == org.id, ServiceAccount.deleted_at.is_(None))
        .order_by(ServiceAccount.id)
        .limit(limit + 1)
    )
    position = decode_cursor(cursor)
    if position is not None:
        after = parse_uuid(str(position.get("id")))
        if after is None:
            raise BadRequest("The cursor is not valid", code="invalid_cursor")
        query = query.where(ServiceAccount.id > after)
    if status is not None:
        query = query.where(ServiceAccount.status == status)
    rows = list((await session.execute(query)).scalars())
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor({"id": str(rows[-1].id)})
    roles = await roles_service.roles_by_principal(
        session, org_id=org.id, principal_type=PRINCIPAL_TYPE, principal_ids=[a.id for a in rows]
    )
    return [ServiceAccountView(a, roles[a.id]) for a in rows], next_cursor


async def update_service_account(
    uow: UnitOfWork,
    *,
    actor: Actor,
    org: Organization,
    view: ServiceAccountView,
    data: ServiceAccountUpdate,
) -> ServiceAccountView:
    account = view.account
    touched = set()
    if data.name is not None and data.name != account.name:
        touched.add("name")
    if "description" in data.model_fields_set and data.description != account.description:
        touched.add("description")
    if touched:
        await check_api_change(
            uow, org=org, actor=actor, subject="service_account", key=account.name, fields=touched
        )
    changes: dict[str, object] = {}
    if data.name is not None and data.name != account.name:
        if await _name_taken(uow.session, org.id, data.name):
            raise Conflict(
                "A service account with this name exists",
                code="name_taken",
                details={"name": data.name},
            )
        changes["name"] = data.name
        account.name = data.name
    if "description" in data.model_fields_set and data.description != account.description:
        changes["description"] = data.description
        account.description = data.description
    if changes:
        account.updated_at = utcnow()
        await uow.session.flush()
        await audit.record(
            uow.session,
            action="api:service_account:update",
            actor=actor,
            org_id=org.id,
            target_type=PRINCIPAL_TYPE,
            target_id=account.id,
            metadata={"changes": changes},
        )
    return view


async def set_status(
    uow: UnitOfWork,
    *,
    actor: Actor,
    org: Organization,
    view: ServiceAccountView,
    status: str,
    source: str = "api",
    metadata: dict[str, object] | None = None,
) -> ServiceAccountView:
    account = view.account
    if account.status == status:
        return view  # idempotent
    if source == "api":
        await check_api_change(
            uow,
            org=org,
            actor=actor,
            subject="service_account",
            key=account.name,
            fields={"status"},
        )
    account.status = status
    account.updated_at = utcnow()
    if status == "disabled":
        await revoke_client_tokens(uow.session, service_account_id=account.id)
    await uow.session.flush()
    await audit.record(
        uow.session,
        action=f"{source}:service_account:{'disable' if status == 'disabled' else 'enable'}",
        actor=actor,
        org_id=org.id,
        target_type=PRINCIPAL_TYPE,
        target_id=account.id,
        metadata=metadata,
    )
    return view


async def delete_service_account(
    uow: UnitOfWork,
    *,
    actor: Actor,
    org: Organization,
    view: ServiceAccountView,
    source: str = "api",
    metadata: dict[str, object] | None = None,
) -> None:
    account = view.account
    if source == "api":
        await check_api_change(
            uow, org=org, actor=actor, subject="service_account", key=account.name, action="delete"
        )
    await roles_service.remove_all_roles(
        uow.session, org_id=org.id, principal_type=PRINCIPAL_TYPE, principal_id=account.id
    )
    await apikeys_service.revoke_keys_of_principal(
        uow,
        actor=actor,
        org_id=org.id,
        principal_type=PRINCIPAL_TYPE,
        principal_id=account.id,
        reason="service_account_deleted",
    )
    await revoke_client_tokens(uow.session, service_account_id=account.id)
    account.status = "disabled"
    account.deleted_at = utcnow()
    account.updated_at = utcnow()
    await uow.session.flush()
    await audit.record(
        uow.session,
        action=f"{source}:service_account:delete",
        actor=actor,
        org_id=org.id,
        target_type=PRINCIPAL_TYPE,
        target_id=account.id,
        metadata={**(metadata or {}), "name": account.name},
    )
