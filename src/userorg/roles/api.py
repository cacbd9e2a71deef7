"""Routes: roles and the scope catalogue."""

from __future__ import annotations

from fastapi import APIRouter, Response

from userorg.authz.catalogue import (
    ORG_SYSTEM_ROLES,
    PLATFORM_SCOPES,
    SCOPES,
    SYSTEM_ROLE_DESCRIPTIONS,
    SYSTEM_ROLES,
)
from userorg.deps import AuthContext, CurrentPrincipal, UoW, require
from userorg.http import IfMatch, check_if_match, set_etag
from userorg.roles import service
from userorg.roles.models import CustomRole
from userorg.roles.schemas import RoleCreate, RoleList, RoleRead, RoleUpdate, ScopeList, ScopeRead
from userorg.schemas import RoleName

router = APIRouter(tags=["roles"])


def _custom(role: CustomRole) -> RoleRead:
    return RoleRead(
        name=role.name,
        description=role.description,
        scopes=role.scopes,
        system=False,
        version=role.version,
        created_at=role.created_at,
        updated_at=role.updated_at,
    )


@router.get("/v1/scopes", response_model=ScopeList, summary="The scope catalogue")
async def list_scopes(_principal: CurrentPrincipal) -> ScopeList:
    return ScopeList(
        items=[
            ScopeRead(scope=s, description=d, level="platform" if s in PLATFORM_SCOPES else "org")
            for s, d in SCOPES.items()
        ]
    )


@router.get("/v1/orgs/{orgId}/roles", response_model=RoleList, summary="System and custom roles")
async def list_roles(uow: UoW, ctx: AuthContext = require("roles:read")) -> RoleList:
    system = [
        RoleRead(
            name=name,
            description=SYSTEM_ROLE_DESCRIPTIONS[name],
            scopes=sorted(SYSTEM_ROLES[name]),
            system=True,
        )
        for name in sorted(ORG_SYSTEM_ROLES)
    ]
    custom = await service.custom_roles(uow.session, ctx.org_required.id)
    return RoleList(
        items=system + [_custom(r) for r in sorted(custom.values(), key=lambda r: r.name)]
    )


@router.post(
    "/v1/orgs/{orgId}/roles",
    status_code=201,
    response_model=RoleRead,
    summary="Create a custom role",
)
async def create_role(
    body: RoleCreate, uow: UoW, response: Response, ctx: AuthContext = require("roles:write")
) -> RoleRead:
    role = await service.create_custom_role(
        uow,
        actor=ctx.actor,
        org=ctx.org_required,
        actor_scopes=ctx.scopes,
        actor_is_platform_admin=ctx.principal.is_platform_admin,
        data=body,
    )
    set_etag(response, role.version)
    return _custom(role)


@router.patch(
    "/v1/orgs/{orgId}/roles/{roleName}", response_model=RoleRead, summary="Change a custom role"
)
async def update_role(
    roleName: RoleName,
    body: RoleUpdate,
    uow: UoW,
    response: Response,
    if_match: IfMatch = None,
    ctx: AuthContext = require("roles:write"),
) -> RoleRead:
    role = await service.get_custom_role(uow.session, org_id=ctx.org_required.id, name=roleName)
    check_if_match(if_match, role.version)
    role = await service.update_custom_role(
        uow,
        actor=ctx.actor,
        org=ctx.org_required,
        role=role,
        actor_scopes=ctx.scopes,
        actor_is_platform_admin=ctx.principal.is_platform_admin,
        data=body,
    )
    set_etag(response, role.version)
    return _custom(role)


@router.delete(
    "/v1/orgs/{orgId}/roles/{roleName}",
    status_code=204,
    summary="Delete a custom role that nobody holds",
)
async def delete_role(
    roleName: RoleName,
    uow: UoW,
    if_match: IfMatch = None,
    ctx: AuthContext = require("roles:write"),
) -> Response:
    role = await service.get_custom_role(uow.session, org_id=ctx.org_required.id, name=roleName)
    check_if_match(if_match, role.version)
    await service.delete_custom_role(uow, actor=ctx.actor, org=ctx.org_required, role=role)
    return Response(status_code=204)
