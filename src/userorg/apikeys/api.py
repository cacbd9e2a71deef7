"""Routes: API keys of service accounts and personal keys of users."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response

from userorg.apikeys import service
from userorg.apikeys.models import ApiKey
from userorg.apikeys.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyRead,
    ApiKeyRotate,
    ApiKeyRotated,
    ApiKeyStatus,
    PrincipalType,
)
from userorg.deps import AuthContext, ContainerDep, UoW, require
from userorg.http import Cursor, IfMatch, Limit, check_if_match, set_etag
from userorg.schemas import Page
from userorg.settings import Settings

router = APIRouter(tags=["api keys"])
KEYS = "/v1/orgs/{orgId}/api-keys"


def issue_policy(settings: Settings) -> service.IssuePolicy:
    return service.IssuePolicy(
        environment=settings.api_key_environment,
        max_expiry_days=settings.api_key_max_expiry_days,
        default_grace_seconds=settings.api_key_default_grace_seconds,
        max_grace_seconds=settings.api_key_max_grace_seconds,
        limit_per_principal=settings.api_key_issue_limit_per_principal,
        limit_per_org=settings.api_key_issue_limit_per_org,
    )


def _read(key: ApiKey, response: Response | None = None) -> ApiKeyRead:
    result = ApiKeyRead(
        api_key_id=key.id,
        org_id=key.org_id,
        name=key.name,
        prefix=key.prefix,
        fingerprint=key.fingerprint,
        status=service.effective_status(key),
        scopes=list(key.scopes),
        annotations=dict(key.annotations or {}),
        principal_type=key.principal_type,
        principal_id=key.principal_id,
        expires_at=key.expires_at,
        created_at=key.created_at,
        created_by=key.created_by,
        rotated_at=key.rotated_at,
        previous_secret_expires_at=key.previous_expires_at,
        revoked_at=key.revoked_at,
        revoked_reason=key.revoked_reason,
        last_used_at=key.last_used_at,
        usage_count=key.usage_count,
        version=key.version,
    )
    if response is not None:
        set_etag(response, result.version)
    return result


def _created(issued: service.IssuedKey, response: Response) -> ApiKeyCreated:
    key = issued.key
    response.headers["Location"] = f"/v1/orgs/{key.org_id}/api-keys/{key.id}"
    response.headers["Cache-Control"] = "no-store"
    set_etag(response, key.version)
    return ApiKeyCreated(
        api_key_id=key.id,
        secret=issued.secret,
        prefix=key.prefix,
        fingerprint=key.fingerprint,
        status="active",
        scopes=list(key.scopes),
        expires_at=key.expires_at,
        name=key.name,
        org_id=key.org_id,
        principal_type=key.principal_type,
        principal_id=key.principal_id,
        created_at=key.created_at,
    )


async def _issue(
    uow: UoW,
    container: ContainerDep,
    ctx: AuthContext,
    response: Response,
    body: ApiKeyCreate,
    principal_type: str,
    principal_id: uuid.UUID,
) -> ApiKeyCreated:
    issued = await service.issue_key(
        uow,
        actor=ctx.actor,
        actor_scopes=ctx.scopes,
        actor_is_platform_admin=ctx.principal.is_platform_admin,
        org=ctx.org_required,
        principal_type=principal_type,
        principal_id=principal_id,
        data=body,
        policy=issue_policy(container.settings),
        limiter=container.rate_limiter,
    )
    return _created(issued, response)


@router.post(
    "/v1/orgs/{orgId}/service-accounts/{serviceAccountId}/api-keys",
    status_code=201,
    response_model=ApiKeyCreated,
    summary="Issue an API key for a service account (the secret is shown once)",
)
async def create_service_account_key(
    serviceAccountId: uuid.UUID,
    body: ApiKeyCreate,
    uow: UoW,
    container: ContainerDep,
    response: Response,
    ctx: AuthContext = require("api_keys:write"),
) -> ApiKeyCreated:
    return await _issue(
        uow, container, ctx, response, body, service.SERVICE_ACCOUNT, serviceAccountId
    )


@router.post(
    "/v1/orgs/{orgId}/users/{userId}/api-keys",
    status_code=201,
    response_model=ApiKeyCreated,
    summary="Issue a personal API key (only for yourself; the secret is shown once)",
)
async def create_user_key(
    userId: uuid.UUID,
    body: ApiKeyCreate,
    uow: UoW,
    container: ContainerDep,
    response: Response,
    ctx: AuthContext = require("api_keys:write"),
) -> ApiKeyCreated:
    return await _issue(uow, container, ctx, response, body, service.USER, userId)


@router.get(KEYS, response_model=Page[ApiKeyRead], summary="List API keys (never the secrets)")
async def list_keys(
    uow: UoW,
    ctx: AuthContext = require("api_keys:read"),
    limit: Limit = 50,
    cursor: Cursor = None,
    status: ApiKeyStatus | None = None,
    principalType: PrincipalType | None = None,
    principalId: uuid.UUID | None = None,
) -> Page[ApiKeyRead]:
    keys, next_cursor = await service.list_keys(
        uow.session,
        org=ctx.org_required,
        limit=limit,
        cursor=cursor,
        status=status,
        principal_type=principalType,
        principal_id=principalId,
    )
    return Page[ApiKeyRead](items=[_read(k) for k in keys], next_cursor=next_cursor)


@router.get(KEYS + "/{apiKeyId}", response_model=ApiKeyRead, summary="Get an API key")
async def get_key(
    apiKeyId: uuid.UUID, uow: UoW, response: Response, ctx: AuthContext = require("api_keys:read")
) -> ApiKeyRead:
    key = await service.get_key(uow.session, org=ctx.org_required, key_id=apiKeyId)
    return _read(key, response)


@router.delete(
    KEYS + "/{apiKeyId}",
    status_code=204,
    summary="Revoke an API key (idempotent: revoking a revoked key is 204 too)",
)
async def revoke_key(
    apiKeyId: uuid.UUID,
    uow: UoW,
    if_match: IfMatch = None,
    ctx: AuthContext = require("api_keys:write"),
) -> Response:
    key = await service.get_key(uow.session, org=ctx.org_required, key_id=apiKeyId)
    check_if_match(if_match, key.version)
    await service.revoke_key(uow, actor=ctx.actor, org=ctx.org_required, key=key)
    return Response(status_code=204)


@router.post(
    KEYS + "/{apiKeyId}/rotate",
    response_model=ApiKeyRotated,
    summary="Rotate: a new secret; the previous one works for the grace period, then stops",
)
async def rotate_key(
    apiKeyId: uuid.UUID,
    uow: UoW,
    container: ContainerDep,
    response: Response,
    body: ApiKeyRotate | None = None,
    if_match: IfMatch = None,
    ctx: AuthContext = require("api_keys:write"),
) -> ApiKeyRotated:
    key = await service.get_key(uow.session, org=ctx.org_required, key_id=apiKeyId)
    check_if_match(if_match, key.version)
    issued = await service.rotate_key(
        uow,
        actor=ctx.actor,
        org=ctx.org_required,
        key=key,
        grace_seconds=body.grace_period_seconds if body else None,
        policy=issue_policy(container.settings),
        limiter=container.rate_limiter,
    )
    created = _created(issued, response)
    return ApiKeyRotated(
        **created.model_dump(), previous_secret_expires_at=issued.key.previous_expires_at
    )
