"""API key lifecycle: issue (service accounts and personal user keys), list, get, revoke,
rotate with a grace period, cascades, and authentication of the admin API with a key."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from userorg.apikeys import secrets
from userorg.apikeys.models import ApiKey
from userorg.apikeys.schemas import ApiKeyCreate
from userorg.audit import recorder as audit
from userorg.authn import mfa
from userorg.authn.principal import Principal
from userorg.authz.catalogue import ORG_SCOPES, SCOPES
from userorg.context import Actor
from userorg.crypto import constant_time_equals
from userorg.db import UnitOfWork, utcnow
from userorg.errors import Conflict, Forbidden, NotFound, Unauthenticated, ValidationFailed
from userorg.orgs.models import Organization
from userorg.platform.ratelimit import RateLimiter, enforce
from userorg.roles import service as roles_service
from userorg.schemas import decode_cursor, encode_cursor
from userorg.serviceaccounts.models import ServiceAccount
from userorg.users.models import Membership, User

SERVICE_ACCOUNT = "service_account"
USER = "user"


@dataclass(frozen=True, slots=True)
class IssuePolicy:
    """The deployment's rules for new secrets (from the settings)."""

    environment: str
    max_expiry_days: int
    default_grace_seconds: int
    max_grace_seconds: int
    limit_per_principal: int
    limit_per_org: int


@dataclass(frozen=True, slots=True)
class IssuedKey:
    key: ApiKey
    secret: str


def effective_status(key: ApiKey, now: dt.datetime | None = None) -> str:
    if key.status != "active":
        return key.status
    if key.expires_at is not None and key.expires_at <= (now or utcnow()):
        return "expired"
    return "active"


def _actor_uuid(actor: Actor) -> uuid.UUID | None:
    if actor.type in {USER, SERVICE_ACCOUNT} and actor.id:
        return uuid.UUID(actor.id)
    return None


async def principal_scopes(
    session: AsyncSession, *, org: Organization, principal_type: str, principal_id: uuid.UUID
) -> frozenset[str]:
    """What a key of the principal may do in the org right now (through its roles). A user's
    roles that require a second factor do not count: a key never carries them."""
    roles = await roles_service.roles_of(
        session, org_id=org.id, principal_type=principal_type, principal_id=principal_id
    )
    if principal_type == USER:
        required = mfa.mfa_required_roles(org)
        roles = [role for role in roles if role not in required]
    return await roles_service.scopes_of_roles(session, org_id=org.id, roles=roles)


async def _check_principal(
    session: AsyncSession, *, org: Organization, principal_type: str, principal_id: uuid.UUID
) -> None:
    if principal_type == SERVICE_ACCOUNT:
        account = await session.get(ServiceAccount, principal_id)
        if account is None or account.org_id != org.id or account.deleted_at is not None:
            raise NotFound("service_account", principal_id)
        status = account.status
    else:
        membership = (
            await session.execute(
                select(Membership).where(
                    Membership.org_id == org.id, Membership.user_id == principal_id
                )
            )
        ).scalar_one_or_none()
        if membership is None or membership.status == "removed":
            raise NotFound("user", principal_id)
        user = await session.get(User, principal_id)
        status = membership.status if user is None or user.status == "active" else user.status
    if status != "active":
        raise Conflict(
            "Keys can only be issued for an active principal",
            code="principal_not_active",
            details={"status": status},
        )


def _check_scopes(
    requested: list[str],
    *,
    principal_scopes: frozenset[str],
    actor_scopes: frozenset[str],
    actor_is_platform_admin: bool,
) -> list[str]:
    scopes = sorted(set(requested))
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown:
        raise ValidationFailed("Unknown scopes", code="unknown_scope", details={"scopes": unknown})
    platform = [s for s in scopes if s not in ORG_SCOPES]
    if platform:
        raise ValidationFailed(
            "Platform scopes cannot be given to API keys",
            code="platform_scope_not_allowed",
            details={"scopes": platform},
        )
    beyond_principal = [s for s in scopes if s not in principal_scopes]
    if beyond_principal:
        raise Forbidden(
            "A key cannot hold scopes that its principal does not hold",
            code="scope_exceeds_principal",
            details={"scopes": beyond_principal},
        )
    beyond_actor = [s for s in scopes if s not in actor_scopes]
    if beyond_actor and not actor_is_platform_admin:
        raise Forbidden(
            "A key cannot grant scopes that its issuer does not hold",
            code="privilege_escalation",
            details={"scopes": beyond_actor},
        )
    return scopes


def _check_expiry(days: int | None, policy: IssuePolicy) -> dt.datetime | None:
    if days is None:
        return None
    if days < 1 or days > policy.max_expiry_days:
        raise ValidationFailed(
            f"expiresInDays must be between 1 and {policy.max_expiry_days}",
            code="invalid_expiry",
            details={"field": "expiresInDays", "max": policy.max_expiry_days},
        )
    return utcnow() + dt.timedelta(days=days)


async def _spend_issuance(
    limiter: RateLimiter, policy: IssuePolicy, *, org_id: uuid.UUID, principal_id: uuid.UUID
) -> None:
    await enforce(
        limiter,
        scope="api_key_issue_principal",
        key=str(principal_id),
        limit=policy.limit_per_principal,
        period_seconds=60,
    )
    await enforce(
        limiter,
        scope="api_key_issue_org",
        key=str(org_id),
        limit=policy.limit_per_org,
        period_seconds=60,
    )


async def issue_key(
    uow: UnitOfWork,
    *,
    actor: Actor,
    actor_scopes: frozenset[str],
    actor_is_platform_admin: bool,
    org: Organization,
    principal_type: str,
    principal_id: uuid.UUID,
    data: ApiKeyCreate,
    policy: IssuePolicy,
    limiter: RateLimiter,
) -> IssuedKey:
    session = uow.session
    if principal_type == USER and actor.id != str(principal_id):
        raise Forbidden(
            "Personal keys can only be issued by their owner",
            code="personal_key_owner_only",
            details={"userId": str(principal_id)},
        )
    await _check_principal(
        session, org=org, principal_type=principal_type, principal_id=principal_id
    )
    held = await principal_scopes(
        session, org=org, principal_type=principal_type, principal_id=principal_id
    )
    scopes = _check_scopes(
        data.scopes,
        principal_scopes=held,
        actor_scopes=actor_scopes,
        actor_is_platform_admin=actor_is_platform_admin,
    )
    expires_at = _check_expiry(data.expires_in_days, policy)
    await _spend_issuance(limiter, policy, org_id=org.id, principal_id=principal_id)
    new = secrets.generate(policy.environment)
    now = utcnow()
    key = ApiKey(
        org_id=org.id,
        principal_type=principal_type,
        principal_id=principal_id,
        name=data.name,
        prefix=new.prefix,
        fingerprint=new.fingerprint,
        secret_hash=new.hash,
        scopes=scopes,
        annotations=dict(data.annotations),
        expires_at=expires_at,
        created_by=_actor_uuid(actor),
        created_at=now,
        updated_at=now,
    )
    session.add(key)
    await session.flush()
    await audit.record(
        session,
        action="api:api_key:create",
        actor=actor,
        org_id=org.id,
        target_type="api_key",
        target_id=key.id,
        metadata={
            "name": data.name,
            "scopes": scopes,
            "principalType": principal_type,
            "principalId": str(principal_id),
            "expiresAt": expires_at.isoformat() if expires_at else None,
            "prefix": new.prefix,
            "fingerprint": new.fingerprint,
        },
    )
    return IssuedKey(key, new.secret)


async def list_keys(
    session: AsyncSession,
    *,
    org: Organization,
    limit: int,
    cursor: str | None,
    status: str | None = None,
    principal_type: str | None = None,
    principal_id: uuid.UUID | None = None,
) -> tuple[list[ApiKey], str | None]:
    query = select(ApiKey).where(ApiKey.org_id == org.id).order_by(ApiKey.id).limit(limit + 1)
    position = decode_cursor(cursor)
    if position is not None:
        from userorg.errors import BadRequest
        from userorg.orgs.service import parse_uuid

        after = parse_uuid(str(position.get("id")))
        if after is None:
            raise BadRequest("The cursor is not valid", code="invalid_cursor")
        query = query.where(ApiKey.id > after)
    now = utcnow()
    if status == "revoked":
        query = query.where(ApiKey.status == "revoked")
    elif status == "expired":
        query = query.where(ApiKey.status == "active", ApiKey.expires_at <= now)
    elif status == "active":
        query = query.where(
            ApiKey.status == "active", or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > now)
        )
    if principal_type is not None:
        query = query.where(ApiKey.principal_type == principal_type)
    if principal_id is not None:
        query = query.where(ApiKey.principal_id == principal_id)
    rows = list((await session.execute(query)).scalars())
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor({"id": str(rows[-1].id)})
    return rows, next_cursor


async def get_key(session: AsyncSession, *, org: Organization, key_id: uuid.UUID) -> ApiKey:
    key = await session.get(ApiKey, key_id)
    if key is None or key.org_id != org.id:
        raise NotFound("api_key", key_id)
    return key


def _revoke(key: ApiKey, *, reason: str, now: dt.datetime) -> None:
    key.status = "revoked"
    key.revoked_at = now
    key.revoked_reason = reason
    key.previous_secret_hash = None
    key.previous_expires_at = None
    key.updated_at = now


async def revoke_key(
    uow: UnitOfWork, *, actor: Actor, org: Organization, key: ApiKey, reason: str = "revoked"
) -> bool:
    """Revoke; idempotent (revoking a revoked key changes nothing and returns False)."""
    if key.status == "revoked":
        return False
    _revoke(key, reason=reason, now=utcnow())
    await uow.session.flush()
    await audit.record(
        uow.session,
        action="api:api_key:revoke",
        actor=actor,
        org_id=org.id,
        target_type="api_key",
        target_id=key.id,
        reason=reason,
        metadata={"prefix": key.prefix, "principalId": str(key.principal_id)},
    )
    return True


async def rotate_key(
    uow: UnitOfWork,
    *,
    actor: Actor,
    org: Organization,
    key: ApiKey,
    grace_seconds: int | None,
    policy: IssuePolicy,
    limiter: RateLimiter,
) -> IssuedKey:
    """A new secret for the same key; the previous one works for ``grace_seconds`` more.

    A previous secret still in its grace period is dropped at once (only one is kept).
    """
    grace = policy.default_grace_seconds if grace_seconds is None else grace_seconds
    if grace < 0 or grace > policy.max_grace_seconds:
        raise ValidationFailed(
            f"gracePeriodSeconds must be between 0 and {policy.max_grace_seconds}",
            code="invalid_grace_period",
            details={"field": "gracePeriodSeconds", "max": policy.max_grace_seconds},
        )
    status = effective_status(key)
    if status != "active":
        raise Conflict(
            f"Only active keys can be rotated; this one is {status}",
            code="api_key_not_active",
            details={"status": status},
        )
    await _spend_issuance(limiter, policy, org_id=org.id, principal_id=key.principal_id)
    new = secrets.generate(policy.environment)
    now = utcnow()
    previous_until = now + dt.timedelta(seconds=grace)
    if key.expires_at is not None:
        previous_until = min(previous_until, key.expires_at)
    key.previous_secret_hash = key.secret_hash if grace > 0 else None
    key.previous_expires_at = previous_until if grace > 0 else None
    key.secret_hash = new.hash
    key.prefix = new.prefix
    key.fingerprint = new.fingerprint
    key.rotated_at = now
    key.updated_at = now
    await uow.session.flush()
    await audit.record(
        uow.session,
        action="api:api_key:rotate",
        actor=actor,
        org_id=org.id,
        target_type="api_key",
        target_id=key.id,
        metadata={
            "prefix": new.prefix,
            "fingerprint": new.fingerprint,
            "gracePeriodSeconds": grace,
            "previousSecretExpiresAt": key.previous_expires_at.isoformat()
            if key.previous_expires_at
            else None,
        },
    )
    return IssuedKey(key, new.secret)


async def revoke_keys_of_principal(
    uow: UnitOfWork,
    *,
    actor: Actor,
    org_id: uuid.UUID,
    principal_type: str,
    principal_id: uuid.UUID,
    reason: str,
) -> int:
    """Cascade: a deleted service account or a removed member loses its keys for good."""
    keys = (
        (
            await uow.session.execute(
                select(ApiKey).where(
                    ApiKey.org_id == org_id,
                    ApiKey.principal_type == principal_type,
                    ApiKey.principal_id == principal_id,
                    ApiKey.status == "active",
                )
            )
        )
        .scalars()
        .all()
    )
    now = utcnow()
    for key in keys:
        _revoke(key, reason=reason, now=now)
    if keys:
        await uow.session.flush()
        await audit.record(
            uow.session,
            action="api:api_key:revoke",
            actor=actor,
            org_id=org_id,
            target_type=principal_type,
            target_id=principal_id,
            reason=reason,
            metadata={"apiKeyIds": [str(k.id) for k in keys], "cascade": True},
        )
    return len(keys)


# -- the admin API accepts keys as bearer credentials --------------------------------------
def _invalid_key(reason: str, message: str) -> Unauthenticated:
    return Unauthenticated(message, code="invalid_api_key", details={"reason": reason})


async def authenticate_api_key(
    session: AsyncSession,
    *,
    secret: str,
    environment: str,
    on_use: Callable[[uuid.UUID], None] | None = None,
) -> Principal:
    """A key as the caller of the admin API: its scopes become the credential's scopes.

    Keys act only inside their own org (``home_org_id``) and never carry platform-admin power.
    """
    try:
        secrets.check_format(secret, environment)
    except secrets.SecretProblem as problem:
        raise _invalid_key(problem.reason, problem.message) from None
    digest = secrets.hash_secret(secret)
    key = (
        await session.execute(
            select(ApiKey).where(
                or_(ApiKey.secret_hash == digest, ApiKey.previous_secret_hash == digest)
            )
        )
    ).scalar_one_or_none()
    now = utcnow()
    if key is None:
        raise _invalid_key("key_unknown", "The API key is not valid")
    if key.status == "revoked":
        raise _invalid_key("key_revoked", "The API key has been revoked")
    if key.expires_at is not None and key.expires_at <= now:
        raise _invalid_key("key_expired", "The API key has expired")
    if not constant_time_equals(key.secret_hash, digest) and (
        key.previous_expires_at is None or key.previous_expires_at <= now
    ):
        raise _invalid_key("key_rotated", "The API key was rotated and its grace period is over")
    email = None
    if key.principal_type == SERVICE_ACCOUNT:
        account = await session.get(ServiceAccount, key.principal_id)
        if account is None or account.deleted_at is not None:
            raise _invalid_key("principal_deleted", "The key's service account no longer exists")
        status = account.status
    else:
        user = await session.get(User, key.principal_id)
        if user is None:
            raise _invalid_key("principal_deleted", "The key's user no longer exists")
        status, email = user.status, user.email
    if status != "active":
        raise _invalid_key("principal_suspended", "The key's principal is not active")
    if on_use is not None:
        on_use(key.id)
    return Principal(
        id=key.principal_id,
        type=key.principal_type,
        status=status,
        is_platform_admin=False,
        email=email,
        home_org_id=key.org_id,
        credential_scopes=frozenset(key.scopes),
        amr=("api_key",),
    )
