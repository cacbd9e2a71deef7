"""Routes: organizations."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from userorg.deps import AuthContext, ContainerDep, CurrentPrincipal, UoW, authorize, require
from userorg.errors import NotFound
from userorg.http import Cursor, IfMatch, Limit, check_if_match, set_etag
from userorg.orgs import service
from userorg.orgs.schemas import OrgCreate, OrgRead, OrgStatus, OrgSuspend, OrgUpdate
from userorg.schemas import Page

router = APIRouter(tags=["organizations"])


def _read(org: object, response: Response | None = None) -> OrgRead:
    result = OrgRead.model_validate(org)
    if response is not None:
        set_etag(response, result.version)
    return result


@router.post("/v1/orgs", status_code=201, response_model=OrgRead, summary="Create an organization")
async def create_org(
    body: OrgCreate, uow: UoW, response: Response, ctx: AuthContext = require("orgs:create")
) -> OrgRead:
    org = await service.create_org(uow, actor=ctx.actor, data=body)
    response.headers["Location"] = f"/v1/orgs/{org.id}"
    return _read(org, response)


@router.get(
    "/v1/orgs",
    response_model=Page[OrgRead],
    summary="Organizations visible to the caller (platform admins see all)",
)
async def list_orgs(
    uow: UoW,
    principal: CurrentPrincipal,
    limit: Limit = 50,
    cursor: Cursor = None,
    status: OrgStatus | None = None,
    slug_prefix: Annotated[str | None, Query(alias="slugPrefix", max_length=63)] = None,
) -> Page[OrgRead]:
    rows, next_cursor = await service.list_orgs(
        uow.session,
        principal=principal,
        limit=limit,
        cursor=cursor,
        status=status,
        slug_prefix=slug_prefix,
    )
    return Page[OrgRead](items=[_read(o) for o in rows], next_cursor=next_cursor)


@router.get("/v1/orgs/{orgId}", response_model=OrgRead, summary="Get an organization by id or slug")
async def get_org(response: Response, ctx: AuthContext = require("orgs:read")) -> OrgRead:
    return _read(ctx.org_required, response)


@router.patch("/v1/orgs/{orgId}", response_model=OrgRead, summary="Change an organization")
async def update_org(
    body: OrgUpdate,
    uow: UoW,
    response: Response,
    if_match: IfMatch = None,
    ctx: AuthContext = require("orgs:write"),
) -> OrgRead:
    check_if_match(if_match, ctx.org_required.version)
    org = await service.update_org(uow, actor=ctx.actor, org=ctx.org_required, data=body)
    return _read(org, response)


@router.post(
    "/v1/orgs/{orgId}/suspend",
    response_model=OrgRead,
    summary="Suspend an organization: every credential of it stops working",
)
async def suspend_org(
    body: OrgSuspend, uow: UoW, response: Response, ctx: AuthContext = require("orgs:suspend")
) -> OrgRead:
    org = await service.suspend_org(uow, actor=ctx.actor, org=ctx.org_required, reason=body.reason)
    return _read(org, response)


@router.post(
    "/v1/orgs/{orgId}/restore",
    response_model=OrgRead,
    summary="Restore a suspended organization or cancel its pending deletion",
)
async def restore_org(
    orgId: str,
    request: Request,
    uow: UoW,
    response: Response,
    container: ContainerDep,
    principal: CurrentPrincipal,
) -> OrgRead:
    org = await service.find_org(uow.session, orgId)
    if org is None:
        raise NotFound("organization", orgId)
    # Cancelling a deletion is the owners' call; lifting a suspension is the platform's.
    permission = "orgs:delete" if org.status == "pending_delete" else "orgs:suspend"
    ctx = await authorize(
        uow,
        container,
        principal=principal,
        permission=permission,
        org=org,
        org_ref=orgId,
        route=f"{request.method} /v1/orgs/{{orgId}}/restore",
    )
    org = await service.restore_org(uow, actor=ctx.actor, org=org)
    return _read(org, response)


@router.delete(
    "/v1/orgs/{orgId}",
    status_code=202,
    response_model=OrgRead,
    summary="Safe delete: pending_delete until the retention window passes",
)
async def delete_org(
    uow: UoW,
    response: Response,
    container: ContainerDep,
    if_match: IfMatch = None,
    ctx: AuthContext = require("orgs:delete"),
) -> OrgRead:
    check_if_match(if_match, ctx.org_required.version)
    org = await service.delete_org(
        uow,
        actor=ctx.actor,
        org=ctx.org_required,
        retention_hours=container.settings.org_purge_retention_hours,
    )
    return _read(org, response)
