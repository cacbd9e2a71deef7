"""Members of an org (global identities with memberships) and invites."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from userorg.apikeys import service as apikeys_service
from userorg.audit import recorder as audit
from userorg.authn.passwords import PasswordService
from userorg.authz.catalogue import OWNER_ROLE
from userorg.context import Actor
from userorg.crypto import random_token, sha256_hex
from userorg.db import UnitOfWork, utcnow
from userorg.declarative.managed import check_api_change
from userorg.errors import BadRequest, Conflict, NotFound, ValidationFailed
from userorg.notifications import service as notifications
from userorg.orgs.models import Organization
from userorg.orgs.service import parse_uuid
from userorg.platform import ratelimit
from userorg.platform.keystore import Keystore
from userorg.platform.ratelimit import RateLimiter
from userorg.roles import service as roles_service
from userorg.schemas import decode_cursor, encode_cursor
from userorg.users.models import Invite, Membership, User
from userorg.users.schemas import InviteCreate, MemberUpdate

INVITE_TOKEN_PREFIX = "uoinv"


@dataclass(frozen=True, slots=True)
class Member:
    membership: Membership
    user: User
    roles: list[str]


def _cursor_id(cursor: str | None) -> uuid.UUID | None:
    position = decode_cursor(cursor)
    if position is None:
        return None
    value = parse_uuid(str(position.get("id")))
    if value is None:
        raise BadRequest("The cursor is not valid", code="invalid_cursor")
    return value


async def list_members(
    session: AsyncSession,
    *,
    org: Organization,
    limit: int,
    cursor: str | None,
    status: str | None = None,
    email_prefix: str | None = None,
    role: str | None = None,
) -> tuple[list[Member], str | None]:
    query = (
        select(Membership, User)
        .join(User, User.id == Membership.user_id)
        .where(Membership.org_id == org.id)
        .order_by(Membership.id)
        .limit(limit + 1)
    )
    after = _cursor_id(cursor)
    if after is not None:
        query = query.where(Membership.id > after)
    if status is not None:
        query = query.where(Membership.status == status)
    else:
        query = query.where(Membership.status != "removed")
    if email_prefix:
        escaped = email_prefix.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(User.email.like(f"{escaped}%", escape="\\"))
    if role:
        from userorg.roles.models import RoleAssignment

        query = query.join(
            RoleAssignment,
            (RoleAssignment.org_id == Membership.org_id)
            & (RoleAssignment.principal_type == "user")
            & (RoleAssignment.principal_id == Membership.user_id)
            & (RoleAssignment.role_name == role),
        )
    rows = [(m, u) for m, u in (await session.execute(query))]
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor({"id": str(rows[-1][0].id)})
    roles = await roles_service.roles_by_principal(
        session, org_id=org.id, principal_type="user", principal_ids=[u.id for _, u in rows]
    )
    return [Member(m, u, roles[u.id]) for m, u in rows], next_cursor


async def get_member(session: AsyncSession, *, org: Organization, user_id: uuid.UUID) -> Member:
    row = (
        await session.execute(
            select(Membership, User)
            .join(User, User.id == Membership.user_id)
            .where(Membership.org_id == org.id, Membership.user_id == user_id)
        )
    ).first()
    if row is None or row[0].status == "removed":
        raise NotFound("user", user_id)
    membership, user = row
    roles = await roles_service.roles_of(
        session, org_id=org.id, principal_type="user", principal_id=user.id
    )
    return Member(membership, user, roles)


async def update_member(
    uow: UnitOfWork,
    *,
    actor: Actor,
    actor_is_platform_admin: bool,
    org: Organization,
    member: Member,
    data: MemberUpdate,
) -> Member:
    changes: dict[str, Any] = {}
    fields = data.model_fields_set
    if "display_name" in fields and data.display_name != member.user.display_name:
        # The display name belongs to the global identity: an org admin may change it only
        # for identities that belong to their org alone.
        if not actor_is_platform_admin and actor.id != str(member.user.id):
            others = (
                await uow.session.execute(
                    select(Membership.id)
                    .where(
                        Membership.user_id == member.user.id,
                        Membership.org_id != org.id,
                        Membership.status != "removed",
                    )
                    .limit(1)
                )
            ).first()
            if others is not None:
                raise Conflict(
                    "The identity belongs to other organizations too; only the user or a "
                    "platform admin can change its display name",
                    code="identity_shared",
                )
        changes["displayName"] = data.display_name
        member.user.display_name = data.display_name
    if (
        "attributes" in fields
        and data.attributes is not None
        and data.attributes != member.membership.attributes
    ):
        changes["attributes"] = data.attributes
        member.membership.attributes = dict(data.attributes)
        member.membership.updated_at = utcnow()
    if changes:
        await uow.session.flush()
        await audit.record(
            uow.session,
            action="api:user:update",
            actor=actor,
            org_id=org.id,
            target_type="user",
            target_id=member.user.id,
            metadata={"changes": changes},
        )
    return member


async def suspend_member(
    uow: UnitOfWork,
    *,
    actor: Actor,
    org: Organization,
    member: Member,
    reason_code: str,
    comment: str | None,
) -> Member:
    if member.membership.status != "active":
        raise Conflict(
            "The member is not active",
            code="invalid_member_status",
            details={"status": member.membership.status},
        )
    if actor.id == str(member.user.id):
        raise Conflict("You cannot suspend yourself", code="self_suspension")
    if OWNER_ROLE in member.roles:
        await roles_service.ensure_other_owner(
            uow.session, org_id=org.id, excluding_user=member.user.id
        )
    member.membership.status = "suspended"
    member.membership.status_reason = reason_code
    member.membership.updated_at = utcnow()
    await uow.session.flush()
    await audit.record(
        uow.session,
        action="api:user:suspend",
        actor=actor,
        org_id=org.id,
        target_type="user",
        target_id=member.user.id,
        reason=reason_code,
        metadata={"comment": comment},
    )
    return member


async def restore_member(
    uow: UnitOfWork, *, actor: Actor, org: Organization, member: Member
) -> Member:
    if member.membership.status != "suspended":
        raise Conflict(
            "The member is not suspended",
            code="invalid_member_status",
            details={"status": member.membership.status},
        )
    member.membership.status = "active"
    member.membership.status_reason = None
    member.membership.updated_at = utcnow()
    await uow.session.flush()
    await audit.record(
        uow.session,
        action="api:user:restore",
        actor=actor,
        org_id=org.id,
        target_type="user",
        target_id=member.user.id,
    )
    return member


async def remove_member(
    uow: UnitOfWork, *, actor: Actor, org: Organization, member: Member
) -> None:
    await check_api_change(
        uow, org=org, actor=actor, subject="member", key=member.user.email, action="delete"
    )
    if OWNER_ROLE in member.roles:
        await roles_service.ensure_other_owner(
            uow.session, org_id=org.id, excluding_user=member.user.id
        )
    await roles_service.remove_all_roles(
        uow.session, org_id=org.id, principal_type="user", principal_id=member.user.id
    )
    await apikeys_service.revoke_keys_of_principal(
        uow,
        actor=actor,
        org_id=org.id,
        principal_type="user",
        principal_id=member.user.id,
        reason="member_removed",
    )
    member.membership.status = "removed"
    member.membership.status_reason = "removed"
    member.membership.updated_at = utcnow()
    await uow.session.flush()
    await audit.record(
        uow.session,
        action="api:user:remove",
        actor=actor,
        org_id=org.id,
        target_type="user",
        target_id=member.user.id,
        metadata={"roles": member.roles},
    )


# -- invites ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class InviteLimits:
    """Invitations send mail: how many a principal, and an org, may send per hour."""

    per_principal_per_hour: int
    per_org_per_hour: int


async def spend_invite(
    limiter: RateLimiter, limits: InviteLimits, *, actor: Actor, org: Organization
) -> None:
    await ratelimit.enforce(
        limiter,
        scope="invite_principal",
        key=str(actor.id),
        limit=limits.per_principal_per_hour,
        period_seconds=3600,
    )
    await ratelimit.enforce(
        limiter,
        scope="invite_org",
        key=str(org.id),
        limit=limits.per_org_per_hour,
        period_seconds=3600,
    )


async def create_invite(
    uow: UnitOfWork,
    *,
    actor: Actor,
    org: Organization,
    roles: list[str],
    data: InviteCreate,
    keystore: Keystore,
    public_base_url: str,
    wake_notifier: Any = None,
    limiter: RateLimiter | None = None,
    limits: InviteLimits | None = None,
) -> Invite:
    session = uow.session
    if limiter is not None and limits is not None:
        await spend_invite(limiter, limits, actor=actor, org=org)
    await check_api_change(
        uow, org=org, actor=actor, subject="member", key=data.email, action="create"
    )
    existing_user = (
        await session.execute(select(User).where(User.email == data.email))
    ).scalar_one_or_none()
    if existing_user is not None:
        membership = (
            await session.execute(
                select(Membership).where(
                    Membership.org_id == org.id, Membership.user_id == existing_user.id
                )
            )
        ).scalar_one_or_none()
        if membership is not None and membership.status != "removed":
            raise Conflict(
                "The address already belongs to a member",
                code="already_member",
                details={"email": data.email},
            )
    superseded = (
        (
            await session.execute(
                select(Invite).where(
                    Invite.org_id == org.id, Invite.email == data.email, Invite.status == "pending"
                )
            )
        )
        .scalars()
        .all()
    )
    for old in superseded:
        old.status = "revoked"
    token = random_token(INVITE_TOKEN_PREFIX)
    expires_at = utcnow() + dt.timedelta(hours=data.expires_in_hours)
    invite = Invite(
        org_id=org.id,
        email=data.email,
        roles=roles,
        token_hash=sha256_hex(token),
        invited_by=uuid.UUID(actor.id) if actor.id and actor.type == "user" else None,
        expires_at=expires_at,
    )
    session.add(invite)
    await session.flush()
    await notifications.enqueue(
        uow,
        keystore=keystore,
        kind="invite",
        org_id=org.id,
        payload={
            "to": data.email,
            "token": token,
            "link": f"{public_base_url.rstrip('/')}/invites/accept?token={token}",
            "inviteId": str(invite.id),
            "orgId": str(org.id),
            "orgSlug": org.slug,
            "orgName": org.name,
            "roles": roles,
            "expiresAt": expires_at.isoformat(),
        },
        wake=wake_notifier,
    )
    await audit.record(
        session,
        action="api:invite:create",
        actor=actor,
        org_id=org.id,
        target_type="invite",
        target_id=invite.id,
        metadata={
            "email": data.email,
            "roles": roles,
            "superseded": [str(i.id) for i in superseded],
        },
    )
    return invite


async def list_invites(
    session: AsyncSession,
    *,
    org: Organization,
    limit: int,
    cursor: str | None,
    status: str | None = None,
) -> tuple[list[Invite], str | None]:
    query = select(Invite).where(Invite.org_id == org.id).order_by(Invite.id).limit(limit + 1)
    after = _cursor_id(cursor)
    if after is not None:
        query = query.where(Invite.id > after)
    now = utcnow()
    if status == "expired":
        query = query.where(Invite.status == "pending", Invite.expires_at <= now)
    elif status == "pending":
        query = query.where(Invite.status == "pending", Invite.expires_at > now)
    elif status is not None:
        query = query.where(Invite.status == status)
    rows = list((await session.execute(query)).scalars())
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor({"id": str(rows[-1].id)})
    return rows, next_cursor


def effective_invite_status(invite: Invite) -> str:
    if invite.status == "pending" and invite.expires_at <= utcnow():
        return "expired"
    return invite.status


async def revoke_invite(
    uow: UnitOfWork, *, actor: Actor, org: Organization, invite_id: uuid.UUID
) -> None:
    invite = await uow.session.get(Invite, invite_id)
    if invite is None or invite.org_id != org.id:
        raise NotFound("invite", invite_id)
    if invite.status == "revoked":
        return  # idempotent
    if invite.status != "pending":
        raise Conflict(
            "Only pending invites can be revoked",
            code="invite_not_pending",
            details={"status": invite.status},
        )
    invite.status = "revoked"
    await uow.session.flush()
    await audit.record(
        uow.session,
        action="api:invite:revoke",
        actor=actor,
        org_id=org.id,
        target_type="invite",
        target_id=invite.id,
    )


async def accept_invite(
    uow: UnitOfWork,
    *,
    passwords: PasswordService,
    token: str,
    password: str | None,
    display_name: str | None,
) -> tuple[User, Organization, bool]:
    session = uow.session
    invalid = BadRequest("The invite token is invalid or has expired", code="invalid_invite")
    if not token.startswith(INVITE_TOKEN_PREFIX + "_"):
        raise invalid
    invite = (
        await session.execute(
            select(Invite).where(Invite.token_hash == sha256_hex(token)).with_for_update()
        )
    ).scalar_one_or_none()
    if invite is None or effective_invite_status(invite) != "pending":
        raise invalid
    org = await session.get(Organization, invite.org_id)
    if org is None or org.status != "active":
        raise invalid
    user = (
        await session.execute(select(User).where(User.email == invite.email))
    ).scalar_one_or_none()
    new_identity = user is None
    if user is None:
        if password is None:
            raise ValidationFailed(
                "A password is required to create the account",
                code="password_required",
                details={"field": "password"},
            )
        passwords.check_rules(password, email=invite.email)
        user = User(
            email=invite.email,
            display_name=display_name,
            password_hash=await passwords.hash(password),
            password_changed_at=utcnow(),
        )
        session.add(user)
        await session.flush()
    membership = (
        await session.execute(
            select(Membership).where(Membership.org_id == org.id, Membership.user_id == user.id)
        )
    ).scalar_one_or_none()
    if membership is None:
        membership = Membership(org_id=org.id, user_id=user.id)
        session.add(membership)
    elif membership.status == "removed":
        membership.status = "active"
        membership.status_reason = None
        membership.updated_at = utcnow()
    else:
        raise Conflict("The account is already a member", code="already_member")
    await session.flush()
    actor = Actor(type="user", id=str(user.id))
    await roles_service.replace_roles(
        uow,
        actor=actor,
        org=org,
        principal_type="user",
        principal_id=user.id,
        roles=list(invite.roles),
        justification=f"invite {invite.id}",
        check_managed=False,  # checked when the invite was created
        # Roles that require MFA are held but not in force until the invitee has enrolled
        # a second factor and signed in with it (docs/authentication.md).
        enforce_mfa=False,
    )
    invite.status = "accepted"
    invite.accepted_at = utcnow()
    invite.accepted_user_id = user.id
    await audit.record(
        session,
        action="api:invite:accept",
        actor=actor,
        org_id=org.id,
        target_type="invite",
        target_id=invite.id,
        metadata={"newIdentity": new_identity, "roles": invite.roles},
    )
    return user, org, new_identity
