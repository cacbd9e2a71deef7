"""Routes: service accounts."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response

from userorg.deps import AuthContext, UoW, require
from userorg.http import Cursor, IfMatch, Limit, check_if_match, set_etag
from userorg.roles import service as roles_service
from userorg.schemas import Page
from userorg.serviceaccounts import service
from userorg.serviceaccounts.schemas import (
    ServiceAccountCreate,
    ServiceAccountRead,
    ServiceAccountRolesReplace,
    ServiceAccountStatus,
    ServiceAccountUpdate,
)

router = APIRouter(tags=["service accounts"])
BASE = "/v1/orgs/{orgId}/service-accounts"


def _read(view: service.ServiceAccountView, response: Response | None = None) -> ServiceAccountRead:
    account = view.account
    result = ServiceAccountRead(
        service_account_id=account.id,
        org_id=account.org_id,
        name=account.name,
        description=account.description,
        status=account.status,
        roles=view.roles,
        created_by=account.created_by,
        version=account.version,
        created_at=account.created_at,
        updated_at=account.updated_at,
    )
    if response is not None:
        set_etag(response, result.version)
    return result


async def _assignable(uow: UoW, ctx: AuthContext, roles: list[str]) -> list[str]:
    return await roles_service.check_assignable(
        uow.session,
        org=ctx.org_required,
        actor_scopes=ctx.scopes,
        actor_is_platform_admin=ctx.principal.is_platform_admin,
        roles=roles,
    )


@router.post(
    BASE,
    status_code=201,
    response_model=ServiceAccountRead,
    summary="Create a service account (at least one role)",
)
async def create_service_account(
    body: ServiceAccountCreate,
    uow: UoW,
    response: Response,
    ctx: AuthContext = require("service_accounts:write"),
) -> ServiceAccountRead:
    roles = await _assignable(uow, ctx, body.roles)
    view = await service.create_service_account(
        uow,
        actor=ctx.actor,
        org=ctx.org_required,
        name=body.name,
        description=body.description,
        roles=roles,
    )
    response.headers["Location"] = (
        f"/v1/orgs/{ctx.org_required.id}/service-accounts/{view.account.id}"
    )
    return _read(view, response)


@router.get(BASE, response_model=Page[ServiceAccountRead], summary="List service accounts")
async def list_service_accounts(
    uow: UoW,
    ctx: AuthContext = require("service_accounts:read"),
    limit: Limit = 50,
    cursor: Cursor = None,
    status: ServiceAccountStatus | None = None,
) -> Page[ServiceAccountRead]:
    views, next_cursor = await service.list_service_accounts(
        uow.session, org=ctx.org_required, limit=limit, cursor=cursor, status=status
    )
    return Page[ServiceAccountRead](items=[_read(v) for v in views], next_cursor=next_cursor)


@router.get(
    BASE + "/{serviceAccountId}", response_model=ServiceAccountRead, summary="Get a service account"
)
async def get_service_account(
    serviceAccountId: uuid.UUID,
    uow: UoW,
    response: Response,
    ctx: AuthContext = require("service_accounts:read"),
) -> ServiceAccountRead:
    view = await service.get_service_account(
        uow.session, org=ctx.org_required, account_id=serviceAccountId
    )
    return _read(view, response)


@router.patch(
    BASE + "/{serviceAccountId}",
    response_model=ServiceAccountRead,
    summary="Change a service account",
)
async def update_service_account(
    serviceAccountId: uuid.UUID,
    body: ServiceAccountUpdate,
    uow: UoW,
    response: Response,
    if_match: IfMatch = None,
    ctx: AuthContext = require("service_accounts:write"),
) -> ServiceAccountRead:
    view = await service.get_service_account(
        uow.session, org=ctx.org_required, account_id=serviceAccountId
    )
    check_if_match(if_match, view.account.version)
    view = await service.update_service_account(
        uow, actor=ctx.actor, org=ctx.org_required, view=view, data=body
    )
    return _read(view, response)


@router.delete(BASE + "/{serviceAccountId}", status_code=204, summary="Delete a service account")
async def delete_service_account(
    serviceAccountId: uuid.UUID,
    uow: UoW,
    if_match: IfMatch = None,
    ctx: AuthContext = require("service_accounts:write"),
) -> Response:
    view = await service.get_service_account(
        uow.session, org=ctx.org_required, account_id=serviceAccountId
    )
    check_if_match(if_match, view.account.version)
    await service.delete_service_account(uow, actor=ctx.actor, org=ctx.org_required, view=view)
    return Response(status_code=204)


@router.post(
    BASE + "/{serviceAccountId}/disable",
    response_model=ServiceAccountRead,
    summary="Disable: its keys and tokens stop working at once",
)
async def disable_service_account(
    serviceAccountId: uuid.UUID,
    uow: UoW,
    response: Response,
    ctx: AuthContext = require("service_accounts:write"),
) -> ServiceAccountRead:
    view = await service.get_service_account(
        uow.session, org=ctx.org_required, account_id=serviceAccountId
    )
    view = await service.set_status(
        uow, actor=ctx.actor, org=ctx.org_required, view=view, status="disabled"
    )
    return _read(view, response)


@router.post(
    BASE + "/{serviceAccountId}/enable",
    response_model=ServiceAccountRead,
    summary="Enable a disabled service account",
)
async def enable_service_account(
    serviceAccountId: uuid.UUID,
    uow: UoW,
    response: Response,
    ctx: AuthContext = require("service_accounts:write"),
) -> ServiceAccountRead:
    view = await service.get_service_account(
        uow.session, org=ctx.org_required, account_id=serviceAccountId
    )
    view = await service.set_status(
        uow, actor=ctx.actor, org=ctx.org_required, view=view, status="active"
    )
    return _read(view, response)


@router.put(
    BASE + "/{serviceAccountId}/roles",
    response_model=ServiceAccountRead,
    summary="Replace a service account's roles",
)
async def replace_service_account_roles(
    serviceAccountId: uuid.UUID,
    body: ServiceAccountRolesReplace,
    uow: UoW,
    response: Response,
    ctx: AuthContext = require("roles:assign"),
) -> ServiceAccountRead:
    org = ctx.org_required
    view = await service.get_service_account(uow.session, org=org, account_id=serviceAccountId)
    roles = await _assignable(uow, ctx, body.roles)
    new_roles = await roles_service.replace_roles(
        uow,
        actor=ctx.actor,
        org=org,
        principal_type=service.PRINCIPAL_TYPE,
        principal_id=view.account.id,
        roles=roles,
        justification=body.justification,
    )
    return _read(service.ServiceAccountView(view.account, new_roles), response)
