"""Routes: sign-in, refresh, sessions, second factors, passwords, admin session control,
identity suspension, OAuth2 for machines and the OIDC discovery documents."""

from __future__ import annotations

import uuid
from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import select

from userorg.authn import factors, mfa, oauth2, password_reset, service
from userorg.authn.models import Session, WebAuthnCredential
from userorg.authn.schemas import (
    Accepted,
    ClientSecretIssued,
    ClientSecretRequest,
    IdentityRead,
    IdentitySuspend,
    LoginRequest,
    MembershipSummary,
    MeRead,
    MfaState,
    PasswordChange,
    PasswordChanged,
    PasswordForgot,
    PasswordReset,
    RecoveryCodes,
    RefreshRequest,
    RevokedCount,
    SessionList,
    SessionRead,
    TokenResponse,
    TotpConfirm,
    TotpDisable,
    TotpEnrollment,
    UnlockResult,
    WebAuthnCredentialList,
    WebAuthnCredentialRead,
    WebAuthnRegister,
    WebAuthnRegistered,
    WebAuthnRename,
)
from userorg.authz.catalogue import ORG_SCOPES
from userorg.deps import AuthContext, ContainerDep, CurrentPrincipal, UoW, bearer_token, require
from userorg.errors import Unauthenticated
from userorg.http import JSONBody
from userorg.orgs.models import Organization
from userorg.roles.service import roles_of
from userorg.serviceaccounts import service as service_accounts
from userorg.users import service as users_service
from userorg.users.models import Membership, User

router = APIRouter(tags=["authentication"])
mfa_router = APIRouter(tags=["multi-factor authentication"])
admin_router = APIRouter(tags=["sessions and identities"])
oauth2_router = APIRouter(tags=["oauth2"])
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


@router.post(
    "/v1/auth/login",
    response_model=TokenResponse,
    summary="Sign in (public); 401 mfa_required asks for a second factor, 423 when locked",
)
async def login(
    body: LoginRequest, uow: UoW, container: ContainerDep, response: Response
) -> TokenResponse:
    response.headers["Cache-Control"] = "no-store"
    issued = await service.login(
        uow,
        passwords=container.passwords,
        tokens=container.tokens,
        keystore=container.keystore,
        limiter=container.rate_limiter,
        config=container.auth,
        email=body.email,
        password=body.password,
        second_factor=service.SecondFactor(
            totp=body.totp,
            recovery_code=body.recovery_code,
            webauthn_assertion=body.webauthn_assertion,
        ),
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
        uow, tokens=container.tokens, refresh_token=token, config=container.auth
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


@router.post(
    "/v1/auth/sessions/revoke-others",
    response_model=RevokedCount,
    summary="Sign out everywhere else (every session but this one ends)",
)
async def revoke_other_sessions(uow: UoW, principal: CurrentPrincipal) -> RevokedCount:
    return RevokedCount(revoked=await service.revoke_other_sessions(uow, principal=principal))


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
    if principal.type == "service_account":
        return MeRead(
            principal_type="service_account",
            principal_id=principal.id,
            is_platform_admin=False,
            amr=[],
            org_id=principal.home_org_id,
            scopes=sorted(principal.credential_scopes or ()),
        )
    user = await uow.session.get(User, principal.id)
    assert user is not None
    rows = await uow.session.execute(
        select(Membership, Organization)
        .join(Organization, Organization.id == Membership.org_id)
        .where(Membership.user_id == user.id, Membership.status != "removed")
        .order_by(Organization.slug)
    )
    memberships = []
    awaiting_any = False
    for membership, org in rows:
        roles = await roles_of(
            uow.session, org_id=org.id, principal_type="user", principal_id=user.id
        )
        needing = sorted(set(roles) & mfa.mfa_required_roles(org))
        awaiting = needing if principal.mfa_verified_at is None else []
        awaiting_any = awaiting_any or bool(needing)
        memberships.append(
            MembershipSummary(
                org_id=org.id,
                slug=org.slug,
                name=org.name,
                status=membership.status,
                org_status=org.status,
                roles=roles,
                roles_awaiting_mfa=awaiting,
            )
        )
    status = await mfa.factor_status(uow.session, user.id)
    return MeRead(
        principal_id=user.id,
        user_id=user.id,
        email=user.email,
        display_name=user.display_name,
        is_platform_admin=user.is_platform_admin,
        session_id=principal.session_id,
        amr=list(principal.amr),
        mfa_verified=principal.mfa_verified_at is not None,
        mfa_verified_at=principal.mfa_verified_at,
        mfa=MfaState(
            enrolled=status.enrolled,
            totp=status.totp,
            webauthn_credentials=status.webauthn,
            recovery_codes_remaining=status.recovery_codes,
            methods=status.methods,
            enrollment_required=awaiting_any and not status.enrolled,
        ),
        memberships=memberships,
    )


# -- passwords ------------------------------------------------------------------------------
@router.post(
    "/v1/auth/password/change",
    response_model=PasswordChanged,
    summary="Change your password (needs the current one); your other sessions end",
)
async def change_password(
    body: PasswordChange, uow: UoW, container: ContainerDep, principal: CurrentPrincipal
) -> PasswordChanged:
    ended = await password_reset.change(
        uow,
        passwords=container.passwords,
        keystore=container.keystore,
        config=container.auth,
        principal=principal,
        current_password=body.current_password,
        new_password=body.new_password,
        wake=container.notifier.wake,
    )
    return PasswordChanged(other_sessions_revoked=ended)


@router.post(
    "/v1/auth/password/forgot",
    status_code=202,
    response_model=Accepted,
    summary="Ask for a password reset link (public; the same answer for any address)",
)
async def forgot_password(body: PasswordForgot, uow: UoW, container: ContainerDep) -> Accepted:
    await password_reset.forgot(
        uow,
        keystore=container.keystore,
        limiter=container.rate_limiter,
        config=container.auth,
        email=body.email,
        wake=container.notifier.wake,
    )
    return Accepted()


@router.post(
    "/v1/auth/password/reset",
    status_code=204,
    summary="Set a new password with a reset token (public); every session ends",
)
async def reset_password(body: PasswordReset, uow: UoW, container: ContainerDep) -> Response:
    await password_reset.reset(
        uow,
        passwords=container.passwords,
        keystore=container.keystore,
        token=body.token,
        new_password=body.new_password,
        wake=container.notifier.wake,
        limiter=container.rate_limiter,
        config=container.auth,
    )
    return Response(status_code=204)


# -- second factors -------------------------------------------------------------------------
@mfa_router.post(
    "/v1/auth/mfa/totp/enroll",
    response_model=TotpEnrollment,
    summary="Start TOTP enrolment: the secret and otpauth:// URI are shown once",
)
async def totp_enroll(
    uow: UoW, container: ContainerDep, principal: CurrentPrincipal, response: Response
) -> TotpEnrollment:
    response.headers["Cache-Control"] = "no-store"
    secret, uri = await factors.totp_enroll(
        uow,
        keystore=container.keystore,
        principal=principal,
        issuer=container.settings.totp_issuer,
    )
    return TotpEnrollment(secret=secret, otpauth_uri=uri)


@mfa_router.post(
    "/v1/auth/mfa/totp/confirm",
    response_model=RecoveryCodes,
    summary="Confirm TOTP with a first code; the first factor comes with 10 recovery codes",
)
async def totp_confirm(
    body: TotpConfirm,
    uow: UoW,
    container: ContainerDep,
    principal: CurrentPrincipal,
    response: Response,
) -> RecoveryCodes:
    response.headers["Cache-Control"] = "no-store"
    codes = await factors.totp_confirm(
        uow,
        keystore=container.keystore,
        principal=principal,
        code=body.code,
        wake=container.notifier.wake,
    )
    return RecoveryCodes(recovery_codes=codes)


@mfa_router.delete(
    "/v1/auth/mfa/totp",
    status_code=204,
    summary="Remove TOTP (needs a current code or a recovery code)",
)
async def totp_disable(
    body: TotpDisable, uow: UoW, container: ContainerDep, principal: CurrentPrincipal
) -> Response:
    await factors.totp_disable(
        uow,
        keystore=container.keystore,
        principal=principal,
        code=body.code,
        recovery_code=body.recovery_code,
        wake=container.notifier.wake,
    )
    return Response(status_code=204)


@mfa_router.post(
    "/v1/auth/mfa/webauthn/register/options",
    summary="WebAuthn registration options (PublicKeyCredentialCreationOptions JSON)",
)
async def webauthn_register_options(
    uow: UoW, container: ContainerDep, principal: CurrentPrincipal
) -> dict[str, Any]:
    return await factors.webauthn_register_options(
        uow,
        principal=principal,
        rp=container.auth.relying_party,
        ttl_seconds=container.auth.mfa_challenge_ttl_seconds,
    )


def _credential(record: WebAuthnCredential) -> WebAuthnCredentialRead:
    return WebAuthnCredentialRead(
        credential_id=record.id,
        name=record.name,
        created_at=record.created_at,
        last_used_at=record.last_used_at,
        aaguid=record.aaguid,
        backed_up=record.backed_up,
        transports=list(record.transports or []),
    )


@mfa_router.post(
    "/v1/auth/mfa/webauthn/register",
    status_code=201,
    response_model=WebAuthnRegistered,
    summary="Register a WebAuthn credential (the browser's attestation response)",
)
async def webauthn_register(
    body: WebAuthnRegister, uow: UoW, container: ContainerDep, principal: CurrentPrincipal
) -> WebAuthnRegistered:
    record, codes = await factors.webauthn_register(
        uow,
        keystore=container.keystore,
        principal=principal,
        rp=container.auth.relying_party,
        credential=body.credential,
        name=body.name,
        wake=container.notifier.wake,
    )
    return WebAuthnRegistered(**_credential(record).model_dump(), recovery_codes=codes)


@mfa_router.get(
    "/v1/auth/mfa/webauthn/credentials",
    response_model=WebAuthnCredentialList,
    summary="Your WebAuthn credentials",
)
async def webauthn_credentials(uow: UoW, principal: CurrentPrincipal) -> WebAuthnCredentialList:
    records = await factors.list_credentials(uow, principal=principal)
    return WebAuthnCredentialList(items=[_credential(r) for r in records])


@mfa_router.patch(
    "/v1/auth/mfa/webauthn/credentials/{credentialId}",
    response_model=WebAuthnCredentialRead,
    summary="Rename a WebAuthn credential",
)
async def webauthn_rename(
    credentialId: uuid.UUID, body: WebAuthnRename, uow: UoW, principal: CurrentPrincipal
) -> WebAuthnCredentialRead:
    record = await factors.rename_credential(
        uow, principal=principal, credential_id=credentialId, name=body.name
    )
    return _credential(record)


@mfa_router.delete(
    "/v1/auth/mfa/webauthn/credentials/{credentialId}",
    status_code=204,
    summary="Delete a WebAuthn credential",
)
async def webauthn_delete(
    credentialId: uuid.UUID, uow: UoW, container: ContainerDep, principal: CurrentPrincipal
) -> Response:
    await factors.delete_credential(
        uow,
        keystore=container.keystore,
        principal=principal,
        credential_id=credentialId,
        wake=container.notifier.wake,
    )
    return Response(status_code=204)


@mfa_router.post(
    "/v1/auth/mfa/recovery-codes",
    response_model=RecoveryCodes,
    summary="Replace your recovery codes with 10 new ones (shown once)",
)
async def regenerate_recovery_codes(
    uow: UoW, container: ContainerDep, principal: CurrentPrincipal, response: Response
) -> RecoveryCodes:
    response.headers["Cache-Control"] = "no-store"
    codes = await factors.regenerate_recovery_codes(
        uow, keystore=container.keystore, principal=principal, wake=container.notifier.wake
    )
    return RecoveryCodes(recovery_codes=codes)


# -- org admins: members' sessions and lockouts -------------------------------------------
MEMBER = "/v1/orgs/{orgId}/users/{userId}"


@admin_router.get(
    MEMBER + "/sessions", response_model=SessionList, summary="A member's active sessions"
)
async def member_sessions(
    userId: uuid.UUID, uow: UoW, ctx: AuthContext = require("sessions:read")
) -> SessionList:
    member = await users_service.get_member(uow.session, org=ctx.org_required, user_id=userId)
    sessions = await service.list_user_sessions(uow.session, user_id=member.user.id)
    return SessionList(items=[_session(s, None) for s in sessions])


@admin_router.delete(
    MEMBER + "/sessions",
    response_model=RevokedCount,
    summary="End a member's sessions (all, or the one named by sessionId)",
)
async def revoke_member_sessions(
    userId: uuid.UUID,
    uow: UoW,
    session_id: Annotated[uuid.UUID | None, Query(alias="sessionId")] = None,
    ctx: AuthContext = require("sessions:revoke"),
) -> RevokedCount:
    member = await users_service.get_member(uow.session, org=ctx.org_required, user_id=userId)
    count = await service.admin_revoke_sessions(
        uow,
        actor=ctx.principal,
        org_id=ctx.org_required.id,
        user=member.user,
        session_id=session_id,
    )
    return RevokedCount(revoked=count)


@admin_router.post(
    MEMBER + "/unlock",
    response_model=UnlockResult,
    summary="Clear a member's sign-in lockout",
)
async def unlock_member(
    userId: uuid.UUID, uow: UoW, ctx: AuthContext = require("users:write")
) -> UnlockResult:
    member = await users_service.get_member(uow.session, org=ctx.org_required, user_id=userId)
    was_locked = await service.unlock(
        uow, actor=ctx.principal, org_id=ctx.org_required.id, user=member.user
    )
    return UnlockResult(user_id=member.user.id, was_locked=was_locked)


def _identity(user: User) -> IdentityRead:
    return IdentityRead(
        user_id=user.id,
        email=user.email,
        display_name=user.display_name,
        status=user.status,
        status_reason=user.status_reason,
    )


@admin_router.post(
    "/v1/users/{userId}/suspend",
    response_model=IdentityRead,
    summary="Suspend an identity everywhere (platform admins): sessions and tokens end at once",
)
async def suspend_identity(
    userId: uuid.UUID,
    body: IdentitySuspend,
    uow: UoW,
    ctx: AuthContext = require("identities:suspend"),
) -> IdentityRead:
    user = await service.suspend_identity(
        uow, actor=ctx.principal, user_id=userId, reason_code=body.reason_code
    )
    return _identity(user)


@admin_router.post(
    "/v1/users/{userId}/restore",
    response_model=IdentityRead,
    summary="Restore a suspended identity (platform admins)",
)
async def restore_identity(
    userId: uuid.UUID, uow: UoW, ctx: AuthContext = require("identities:suspend")
) -> IdentityRead:
    return _identity(await service.restore_identity(uow, actor=ctx.principal, user_id=userId))


@admin_router.post(
    "/v1/orgs/{orgId}/service-accounts/{serviceAccountId}/client-secret",
    response_model=ClientSecretIssued,
    summary="Issue or rotate the service account's OAuth2 client secret (shown once)",
)
async def issue_client_secret(
    serviceAccountId: uuid.UUID,
    uow: UoW,
    container: ContainerDep,
    response: Response,
    body: ClientSecretRequest | None = None,
    ctx: AuthContext = require("service_accounts:write"),
) -> ClientSecretIssued:
    response.headers["Cache-Control"] = "no-store"
    org = ctx.org_required
    view = await service_accounts.get_service_account(
        uow.session, org=org, account_id=serviceAccountId
    )
    client, secret = await oauth2.issue_client_secret(
        uow,
        actor=ctx.actor,
        org=org,
        account=view.account,
        grace_period_seconds=body.grace_period_seconds if body else 0,
    )
    return ClientSecretIssued(
        client_id=client.client_id,
        client_secret=secret,
        rotated_at=client.rotated_at,
        previous_secret_expires_at=client.previous_secret_expires_at,
        token_endpoint=container.settings.issuer.rstrip("/") + "/oauth2/token",
    )


# -- OAuth2 (form-encoded, client-authenticated, OAuth2 error bodies) ----------------------
_FORM = "application/x-www-form-urlencoded"
_OAUTH2_DESCRIPTION = (
    "Form-encoded (`application/x-www-form-urlencoded`); the client authenticates with "
    "HTTP Basic (`client_secret_basic`) or `client_id`/`client_secret` form fields. Errors "
    "are OAuth2 error bodies (`{error, error_description}`)."
)


class OAuth2ErrorBody(BaseModel):
    """RFC 6749 §5.2 error body (the OAuth2 endpoints answer these, not ``ErrorBody``)."""

    error: str = Field(examples=["invalid_client"])
    error_description: str | None = None


# The OAuth2 endpoints document their own error shape for the statuses they answer themselves.
_OAUTH2_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": OAuth2ErrorBody, "description": "OAuth2 error (invalid_request, ...)"},
    401: {"model": OAuth2ErrorBody, "description": "OAuth2 error: invalid_client"},
}


async def _form(request: Request) -> dict[str, str] | JSONBody:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != _FORM:
        return _oauth2_error(400, "invalid_request", f"The body must be {_FORM}")
    raw = await request.body()
    try:
        pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, max_num_fields=50)
    except (UnicodeDecodeError, ValueError):
        return _oauth2_error(400, "invalid_request", "The body is not valid form data")
    form: dict[str, str] = {}
    for key, value in pairs:
        if key in form:
            return _oauth2_error(400, "invalid_request", f"Parameter {key} is repeated")
        if "\x00" in key or "\x00" in value:
            return _oauth2_error(400, "invalid_request", "A parameter contains a NUL character")
        form[key] = value
    return form


def _uri(request: Request) -> str:
    # TLS ends at the ingress in front of the service; Authlib insists on an https URI.
    return str(request.url.replace(scheme="https"))


def _oauth2_error(status: int, error: str, description: str) -> JSONBody:
    return JSONBody(
        {"error": error, "error_description": description},
        status_code=status,
        headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
    )


def _oauth2_response(result: oauth2.OAuth2Response) -> JSONBody:
    headers = {k: v for k, v in result.headers.items() if k.lower() != "content-type"}
    headers.setdefault("Cache-Control", "no-store")
    headers.setdefault("Pragma", "no-cache")
    return JSONBody(result.body, status_code=result.status, headers=headers)


@oauth2_router.post(
    "/oauth2/token",
    responses=_OAUTH2_RESPONSES,
    summary="OAuth2 token endpoint: grant_type=client_credentials (RFC 6749 §4.4)",
    description=_OAUTH2_DESCRIPTION,
)
async def oauth2_token(request: Request, uow: UoW, container: ContainerDep) -> Response:
    form = await _form(request)
    if isinstance(form, JSONBody):
        return form
    result = await container.oauth2.token(
        uow, form=form, headers=request.headers, uri=_uri(request)
    )
    return _oauth2_response(result)


@oauth2_router.post(
    "/oauth2/introspect",
    responses=_OAUTH2_RESPONSES,
    summary="Token introspection (RFC 7662), client-authenticated",
    description=_OAUTH2_DESCRIPTION,
)
async def oauth2_introspect(request: Request, uow: UoW, container: ContainerDep) -> Response:
    form = await _form(request)
    if isinstance(form, JSONBody):
        return form
    result = await container.oauth2.introspect(
        uow, form=form, headers=request.headers, uri=_uri(request)
    )
    return _oauth2_response(result)


@oauth2_router.post(
    "/oauth2/revoke",
    responses=_OAUTH2_RESPONSES,
    summary="Token revocation (RFC 7009), client-authenticated",
    description=_OAUTH2_DESCRIPTION,
)
async def oauth2_revoke(request: Request, uow: UoW, container: ContainerDep) -> Response:
    form = await _form(request)
    if isinstance(form, JSONBody):
        return form
    result = await container.oauth2.revoke(
        uow, form=form, headers=request.headers, uri=_uri(request)
    )
    return _oauth2_response(result)


# -- discovery ------------------------------------------------------------------------------
@discovery_router.get("/.well-known/jwks.json", summary="Public keys that verify access tokens")
async def jwks(container: ContainerDep, response: Response) -> dict[str, Any]:
    response.headers["Cache-Control"] = "public, max-age=300"
    return container.tokens.jwks()


@discovery_router.get("/.well-known/openid-configuration", summary="OIDC discovery document")
async def openid_configuration(container: ContainerDep, response: Response) -> dict[str, Any]:
    response.headers["Cache-Control"] = "public, max-age=300"
    issuer = container.settings.issuer.rstrip("/")
    return {
        "issuer": issuer,
        "jwks_uri": f"{issuer}/.well-known/jwks.json",
        "token_endpoint": f"{issuer}/oauth2/token",
        "introspection_endpoint": f"{issuer}/oauth2/introspect",
        "revocation_endpoint": f"{issuer}/oauth2/revoke",
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": oauth2.CLIENT_AUTH_METHODS,
        "introspection_endpoint_auth_methods_supported": oauth2.CLIENT_AUTH_METHODS,
        "revocation_endpoint_auth_methods_supported": oauth2.CLIENT_AUTH_METHODS,
        "id_token_signing_alg_values_supported": ["EdDSA"],
        "token_endpoint_auth_signing_alg_values_supported": ["EdDSA"],
        "subject_types_supported": ["public"],
        "response_types_supported": ["token"],
        "scopes_supported": sorted(ORG_SCOPES),
        "claims_supported": [
            "iss",
            "sub",
            "exp",
            "iat",
            "nbf",
            "jti",
            "sid",
            "amr",
            "auth_time",
            "mfa_time",
            "scope",
            "client_id",
            "org",
        ],
    }
