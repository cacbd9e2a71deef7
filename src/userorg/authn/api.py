"""Routes: sign-in, refresh, logout, own sessions, and the OIDC discovery documents."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Request, Response
from sqlalchemy import select

from userorg.authn import service
from userorg.authn.models import Session
from userorg.authn.schemas import (
    LoginRequest,
    MembershipSummary,
    MeRead,
    RefreshRequest,
    SessionList,
    SessionRead,
    TokenResponse,
)
from userorg.deps import ContainerDep, CurrentPrincipal, UoW, bearer_token
from userorg.errors import Unauthenticated
from userorg.orgs.models import Organization
from userorg.roles.service import roles_of
from userorg.users.models import Membership, User

router = APIRouter(tags=["authentication"])
discovery_router = APIRouter(tags=["discovery"])


def _tokens(issued: service.IssuedTokens) -> TokenResponse:
    return TokenResponse(
        access_token=issued.access_token,
        refresh_token=issued.refresh_token,
        session_id=issued.session_id,
        expires_at=issued.expires_at,
        mfa_verified=issued.mfa_verified,
        token_type=issued.token_type,
    )


@router.post("/v1/auth/login", response_model=TokenResponse, summary="Sign in (public)")
async def login(
    body: LoginRequest, uow: UoW, container: ContainerDep, response: Response
) -> TokenResponse:
    response.headers["Cache-Control"] = "no-store"
    issued = await service.login(
        uow,
        passwords=container.passwords,
        tokens=container.tokens,
        email=body.email,
        password=body.password,
        refresh_ttl_seconds=container.settings.refresh_token_ttl_seconds,
    )
    return _tokens(issued)


@router.post(
    "/v1/auth/refresh",
    response_model=TokenResponse,
    summary="Rotate tokens with a refresh token (body or bearer; public)",
)
async def refresh(
    request: Request,
    uow: UoW,
    container: ContainerDep,
    response: Response,
    body: RefreshRequest | None = None,
) -> TokenResponse:
    response.headers["Cache-Control"] = "no-store"
    token = (body.refresh_token if body else None) or bearer_token(request)
    if not token:
        raise Unauthenticated("A refresh token is required", code="invalid_refresh_token")
    issued = await service.refresh(
        uow,
        tokens=container.tokens,
        refresh_token=token,
        refresh_ttl_seconds=container.settings.refresh_token_ttl_seconds,
        idle_timeout_seconds=container.settings.session_idle_timeout_seconds,
    )
    return _tokens(issued)


@router.post("/v1/auth/logout", status_code=204, summary="End the current session")
async def logout(uow: UoW, principal: CurrentPrincipal) -> Response:
    if principal.session_id is not None:
        await service.revoke_own_session(uow, principal=principal, session_id=principal.session_id)
    return Response(status_code=204)


@router.get("/v1/auth/sessions", response_model=SessionList, summary="Your active sessions")
async def list_sessions(uow: UoW, principal: CurrentPrincipal) -> SessionList:
    sessions = await service.list_sessions(uow.session, user_id=principal.id)
    return SessionList(items=[_session(s, principal.session_id) for s in sessions])


def _session(s: Session, current: uuid.UUID | None) -> SessionRead:
    return SessionRead(
        session_id=s.id,
        created_at=s.created_at,
        last_used_at=s.last_used_at,
        expires_at=s.expires_at,
        ip=s.ip,
        user_agent=s.user_agent,
        mfa_verified=s.mfa_verified,
        amr=list(s.amr),
        current=s.id == current,
    )


@router.delete(
    "/v1/auth/sessions/{sessionId}", status_code=204, summary="Revoke one of your sessions"
)
async def revoke_session(sessionId: uuid.UUID, uow: UoW, principal: CurrentPrincipal) -> Response:
    await service.revoke_own_session(
        uow, principal=principal, session_id=sessionId, reason="revoked_by_user"
    )
    return Response(status_code=204)


@router.get("/v1/auth/me", response_model=MeRead, summary="Who you are and where you belong")
async def me(uow: UoW, principal: CurrentPrincipal) -> MeRead:
    user = await uow.session.get(User, principal.id)
    assert user is not None
    rows = await uow.session.execute(
        select(Membership, Organization)
        .join(Organization, Organization.id == Membership.org_id)
        .where(Membership.user_id == user.id, Membership.status != "removed")
        .order_by(Organization.slug)
    )
    memberships = []
    for membership, org in rows:
        roles = await roles_of(
            uow.session, org_id=org.id, principal_type="user", principal_id=user.id
        )
        memberships.append(
            MembershipSummary(
                org_id=org.id,
                slug=org.slug,
                name=org.name,
                status=membership.status,
                org_status=org.status,
                roles=roles,
            )
        )
    return MeRead(
        user_id=user.id,
        email=user.email,
        display_name=user.display_name,
        is_platform_admin=user.is_platform_admin,
        session_id=principal.session_id,
        amr=list(principal.amr),
        memberships=memberships,
    )


@discovery_router.get("/.well-known/jwks.json", summary="Public keys that verify access tokens")
async def jwks(container: ContainerDep, response: Response) -> dict[str, Any]:
    response.headers["Cache-Control"] = "public, max-age=300"
    return container.tokens.jwks()


@discovery_router.get("/.well-known/openid-configuration", summary="OIDC discovery document")
async def openid_configuration(container: ContainerDep) -> dict[str, Any]:
    issuer = container.settings.issuer.rstrip("/")
    return {
        "issuer": issuer,
        "jwks_uri": f"{issuer}/.well-known/jwks.json",
        "token_endpoint": f"{issuer}/oauth2/token",
        "introspection_endpoint": f"{issuer}/oauth2/introspect",
        "revocation_endpoint": f"{issuer}/oauth2/revoke",
        "grant_types_supported": ["client_credentials", "refresh_token"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "id_token_signing_alg_values_supported": ["EdDSA"],
        "subject_types_supported": ["public"],
        "response_types_supported": ["token"],
        "scopes_supported": [],
    }
