"""Routes: members of an org, their roles, and invites."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response

from userorg.deps import AuthContext, ContainerDep, UoW, require
from userorg.http import Cursor, IfMatch, Limit, check_if_match, set_etag
from userorg.roles import service as roles_service
from userorg.roles.schemas import RolesReplace
from userorg.schemas import Page, RoleName
from userorg.users import service
from userorg.users.models import Invite
from userorg.users.schemas import (
    InviteAccept,
    InviteAccepted,
    InviteCreate,
    InviteRead,
    InviteStatus,
    MemberRead,
    MembershipStatus,
    MemberSuspend,
    MemberUpdate,
)

router = APIRouter(tags=["users"])
invites_router = APIRouter(tags=["invites"])


def _member(member: service.Member, response: Response | None = None) -> MemberRead:
    result = MemberRead(
        user_id=member.user.id,
        email=member.user.email,
        display_name=member.user.display_name,
        status=member.membership.status,
        status_reason=member.membership.status_reason,
        roles=member.roles,
        attributes=member.membership.attributes or {},
        joined_at=member.membership.created_at,
        last_login_at=member.user.last_login_at,
        version=member.membership.version,
    )
    if response is not None:
        set_etag(response, result.version)
    return result


def _invite(invite: Invite) -> InviteRead:
    result = InviteRead.model_validate(invite)
    return result.model_copy(update={"status": service.effective_invite_status(invite)})


@router.get("/v1/orgs/{orgId}/users", response_model=Page[MemberRead], summary="List members")
async def list_members(
    uow: UoW,
    ctx: AuthContext = require("users:read"),
    limit: Limit = 50,
    cursor: Cursor = None,
    status: MembershipStatus | None = None,
    email_prefix: Annotated[str | None, Query(alias="emailPrefix", max_length=320)] = None,
    role: Annotated[RoleName | None, Query()] = None,
) -> Page[MemberRead]:
    members, next_cursor = await service.list_members(
        uow.session,
        org=ctx.org_required,
        limit=limit,
        cursor=cursor,
        status=status,
        email_prefix=email_prefix,
        role=role,
    )
    return Page[MemberRead](items=[_member(m) for m in members], next_cursor=next_cursor)


@router.get("/v1/orgs/{orgId}/users/{userId}", response_model=MemberRead, summary="Get a member")
async def get_member(
    userId: uuid.UUID, uow: UoW, response: Response, ctx: AuthContext = require("users:read")
) -> MemberRead:
    member = await service.get_member(uow.session, org=ctx.org_required, user_id=userId)
    return _member(member, response)


@router.patch(
    "/v1/orgs/{orgId}/users/{userId}",
    response_model=MemberRead,
    summary="Change a member's profile and attributes",
)
async def update_member(
    userId: uuid.UUID,
    body: MemberUpdate,
    uow: UoW,
    response: Response,
    if_match: IfMatch = None,
    ctx: AuthContext = require("users:write"),
) -> MemberRead:
    member = await service.get_member(uow.session, org=ctx.org_required, user_id=userId)
    check_if_match(if_match, member.membership.version)
    member = await service.update_member(
        uow,
        actor=ctx.actor,
        actor_is_platform_admin=ctx.principal.is_platform_admin,
        org=ctx.org_required,
        member=member,
        data=body,
    )
    return _member(member, response)


@router.post(
    "/v1/orgs/{orgId}/users/{userId}/suspend",
    response_model=MemberRead,
    summary="Suspend a member in this org (reason code required)",
)
async def suspend_member(
    userId: uuid.UUID,
    body: MemberSuspend,
    uow: UoW,
    response: Response,
    ctx: AuthContext = require("users:write"),
) -> MemberRead:
    member = await service.get_member(uow.session, org=ctx.org_required, user_id=userId)
    member = await service.suspend_member(
        uow,
        actor=ctx.actor,
        org=ctx.org_required,
        member=member,
        reason_code=body.reason_code,
        comment=body.comment,
    )
    return _member(member, response)


@router.post(
    "/v1/orgs/{orgId}/users/{userId}/restore",
    response_model=MemberRead,
    summary="Restore a suspended member",
)
async def restore_member(
    userId: uuid.UUID, uow: UoW, response: Response, ctx: AuthContext = require("users:write")
) -> MemberRead:
    member = await service.get_member(uow.session, org=ctx.org_required, user_id=userId)
    member = await service.restore_member(uow, actor=ctx.actor, org=ctx.org_required, member=member)
    return _member(member, response)


@router.delete(
    "/v1/orgs/{orgId}/users/{userId}",
    status_code=204,
    summary="Remove a member from the org (the identity stays)",
)
async def remove_member(
    userId: uuid.UUID, uow: UoW, if_match: IfMatch = None, ctx: AuthContext = require("users:write")
) -> Response:
    member = await service.get_member(uow.session, org=ctx.org_required, user_id=userId)
    check_if_match(if_match, member.membership.version)
    await service.remove_member(uow, actor=ctx.actor, org=ctx.org_required, member=member)
    return Response(status_code=204)


@router.put(
    "/v1/orgs/{orgId}/users/{userId}/roles",
    response_model=MemberRead,
    summary="Replace a member's roles",
)
async def replace_member_roles(
    userId: uuid.UUID,
    body: RolesReplace,
    uow: UoW,
    response: Response,
    ctx: AuthContext = require("roles:assign"),
) -> MemberRead:
    org = ctx.org_required
    member = await service.get_member(uow.session, org=org, user_id=userId)
    roles = await roles_service.check_assignable(
        uow.session,
        org=org,
        actor_scopes=ctx.scopes,
        actor_is_platform_admin=ctx.principal.is_platform_admin,
        roles=body.roles,
    )
    new_roles = await roles_service.replace_roles(
        uow,
        actor=ctx.actor,
        org=org,
        principal_type="user",
        principal_id=member.user.id,
        roles=roles,
        justification=body.justification,
    )
    return _member(service.Member(member.membership, member.user, new_roles), response)


# -- invites ------------------------------------------------------------------------------
@invites_router.post(
    "/v1/orgs/{orgId}/invites",
    status_code=202,
    response_model=InviteRead,
    summary="Invite someone; the token reaches them through the notifier",
)
async def create_invite(
    body: InviteCreate,
    uow: UoW,
    container: ContainerDep,
    ctx: AuthContext = require("users:invite"),
) -> InviteRead:
    org = ctx.org_required
    roles = await roles_service.check_assignable(
        uow.session,
        org=org,
        actor_scopes=ctx.scopes,
        actor_is_platform_admin=ctx.principal.is_platform_admin,
        roles=body.roles,
    )
    invite = await service.create_invite(
        uow,
        actor=ctx.actor,
        org=org,
        roles=roles,
        data=body,
        keystore=container.keystore,
        public_base_url=container.settings.public_base_url,
        wake_notifier=container.notifier.wake,
        limiter=container.rate_limiter,
        limits=service.InviteLimits(
            per_principal_per_hour=container.settings.invite_rate_per_principal_per_hour,
            per_org_per_hour=container.settings.invite_rate_per_org_per_hour,
        ),
    )
    return _invite(invite)


@invites_router.get(
    "/v1/orgs/{orgId}/invites", response_model=Page[InviteRead], summary="List invites"
)
async def list_invites(
    uow: UoW,
    ctx: AuthContext = require("users:read"),
    limit: Limit = 50,
    cursor: Cursor = None,
    status: InviteStatus | None = None,
) -> Page[InviteRead]:
    rows, next_cursor = await service.list_invites(
        uow.session, org=ctx.org_required, limit=limit, cursor=cursor, status=status
    )
    return Page[InviteRead](items=[_invite(i) for i in rows], next_cursor=next_cursor)


@invites_router.delete(
    "/v1/orgs/{orgId}/invites/{inviteId}",
    status_code=204,
    summary="Revoke a pending invite (idempotent)",
)
async def revoke_invite(
    inviteId: uuid.UUID, uow: UoW, ctx: AuthContext = require("users:invite")
) -> Response:
    await service.revoke_invite(uow, actor=ctx.actor, org=ctx.org_required, invite_id=inviteId)
    return Response(status_code=204)


@invites_router.post(
    "/v1/invites/accept",
    response_model=InviteAccepted,
    summary="Accept an invite with its single-use token (public)",
)
async def accept_invite(body: InviteAccept, uow: UoW, container: ContainerDep) -> InviteAccepted:
    user, org, new_identity = await service.accept_invite(
        uow,
        passwords=container.passwords,
        token=body.token,
        password=body.password,
        display_name=body.display_name,
    )
    return InviteAccepted(user_id=user.id, org_id=org.id, new_identity=new_identity)
