"""Sign-in (password, second factor, lockout, rate limits), token refresh with rotation and
reuse detection, sessions, global suspension of identities, and bearer authentication."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from webauthn.helpers import bytes_to_base64url

from userorg.apikeys import secrets as apikeys_secrets
from userorg.audit import recorder as audit
from userorg.authn import lockout, mfa, oauth2, totp
from userorg.authn.models import RefreshToken, Session, TotpFactor, WebAuthnCredential
from userorg.authn.passwords import PasswordService
from userorg.authn.principal import Principal
from userorg.authn.tokens import InvalidToken, TokenService
from userorg.context import ANONYMOUS, Actor, current_request
from userorg.crypto import random_token, sha256_hex
from userorg.db import UnitOfWork, utcnow
from userorg.errors import (
    Conflict,
    DomainError,
    Forbidden,
    NotFound,
    Unauthenticated,
    ValidationFailed,
)
from userorg.platform import ratelimit
from userorg.platform.keystore import Keystore
from userorg.telemetry.metrics import LOGIN_ATTEMPTS
from userorg.users.models import User

REFRESH_TOKEN_PREFIX = "uort"


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """The authentication settings the services need (built once from ``Settings``)."""

    refresh_ttl_seconds: int
    idle_timeout_seconds: int
    lockout: lockout.LockoutPolicy
    relying_party: mfa.RelyingParty
    mfa_challenge_ttl_seconds: int
    totp_issuer: str
    login_rate_per_ip: int
    login_rate_per_account: int
    password_reset_rate_per_ip: int  # per hour
    password_reset_rate_per_account: int  # per hour
    password_reset_ttl_seconds: int
    public_base_url: str


@dataclass(frozen=True)
class IssuedTokens:
    access_token: str
    refresh_token: str
    session_id: uuid.UUID
    expires_at: dt.datetime
    mfa_verified: bool
    token_type: str = "Bearer"


# -- bearer authentication ------------------------------------------------------------------
def _invalid_token(reason: str | None = None) -> Unauthenticated:
    return Unauthenticated(
        "The access token is not valid",
        code="invalid_token",
        details={"reason": reason} if reason else None,
    )


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and token.startswith("ey")


async def authenticate_bearer(
    session: AsyncSession,
    *,
    tokens: TokenService,
    token: str,
    api_key_environment: str = "live",
    on_api_key_use: Callable[[uuid.UUID], None] | None = None,
) -> Principal:
    """Turn a bearer credential into the request's principal. Dispatch on its shape:

    * an API key (``uok_…``): format and checksum offline, then the key, its principal and
      expiry; the key's scopes become the principal's ``credential_scopes``;
    * a JWT access token (signature, expiry and issuer checked first), by its ``ptype``:
      - ``user``: an interactive session token; the session must still be alive;
      - ``service_account``: an OAuth2 client-credentials token; the account, its org and
        the token must still be valid.
    Every branch re-checks revocation on every request, so revoking a session or a key,
    suspending a principal or an org, or revoking a token refuses the credential at once.
    """
    if apikeys_secrets.looks_like_api_key(token):
        from userorg.apikeys.service import authenticate_api_key

        return await authenticate_api_key(
            session, secret=token, environment=api_key_environment, on_use=on_api_key_use
        )
    if looks_like_jwt(token):
        try:
            claims = await tokens.verify_access_token(token)
        except InvalidToken as error:
            raise _invalid_token(error.reason) from None
        principal_type = claims.get("ptype")
        if principal_type == "user":
            return await _user_session_principal(session, claims)
        if principal_type == "service_account":
            return await oauth2.client_token_principal(session, claims)
        raise _invalid_token("unsupported_token")
    raise _invalid_token()


async def _user_session_principal(session: AsyncSession, claims: dict[str, Any]) -> Principal:
    try:
        subject = uuid.UUID(claims["sub"])
        session_id = uuid.UUID(claims["sid"])
    except (ValueError, KeyError, TypeError):
        raise _invalid_token() from None
    row = (
        await session.execute(
            select(Session, User)
            .join(User, User.id == Session.user_id)
            .where(Session.id == session_id)
        )
    ).first()
    if row is None:
        raise Unauthenticated("The session has ended", code="session_revoked")
    sess, user = row
    if user.id != subject or sess.status != "active" or sess.expires_at <= utcnow():
        raise Unauthenticated("The session has ended", code="session_revoked")
    if user.status != "active":
        raise Unauthenticated("The account is suspended", code="principal_suspended")
    return Principal(
        id=user.id,
        type="user",
        status=user.status,
        is_platform_admin=user.is_platform_admin,
        email=user.email,
        session_id=sess.id,
        amr=tuple(claims.get("amr") or ()),
        mfa_verified_at=sess.mfa_verified_at,
    )


# -- sign-in --------------------------------------------------------------------------------
def _invalid_credentials() -> Unauthenticated:
    return Unauthenticated("Invalid email or password", code="invalid_credentials", commit=True)


@dataclass(frozen=True, slots=True)
class SecondFactor:
    totp: str | None = None
    recovery_code: str | None = None
    webauthn_assertion: dict[str, Any] | None = None

    @property
    def given(self) -> bool:
        return bool(self.totp or self.recovery_code or self.webauthn_assertion)


async def login(
    uow: UnitOfWork,
    *,
    passwords: PasswordService,
    tokens: TokenService,
    keystore: Keystore,
    limiter: ratelimit.RateLimiter,
    config: AuthConfig,
    email: str,
    password: str,
    second_factor: SecondFactor | None = None,
) -> IssuedTokens:
    """Password, then (when the user has one) a second factor.

    Order matters: rate limits (per IP, per address) first; then a failure is reserved
    atomically (423 when locked); then the password is checked (unknown addresses against a
    dummy hash, so they cost the same); then the second factor.
    """
    session = uow.session
    second_factor = second_factor or SecondFactor()
    request = current_request()
    email = email.strip().lower()
    key = lockout.throttle_key(email)
    await ratelimit.enforce(
        limiter,
        scope="login_ip",
        key=request.ip or "unknown",
        limit=config.login_rate_per_ip,
        period_seconds=60,
    )
    await ratelimit.enforce(
        limiter,
        scope="login_account",
        key=key,
        limit=config.login_rate_per_account,
        period_seconds=60,
    )
    try:
        reservation = await lockout.reserve_attempt(session, email=email)
    except DomainError:
        await audit.record(
            session,
            action="auth:session:login",
            actor=ANONYMOUS,
            org_id=None,
            outcome="denied",
            reason="account_locked",
            target_type="login",
            target_id=key[:16],
        )
        LOGIN_ATTEMPTS.labels("locked").inc()
        raise
    user = (await session.execute(select(User).where(User.email == email))).scalar_one_or_none()
    valid = await passwords.verify(user.password_hash if user else None, password)
    if user is None or not valid:
        await _fail(
            uow,
            reservation=reservation,
            config=config,
            keystore=keystore,
            user=user,
            reason="invalid_credentials",
        )
        LOGIN_ATTEMPTS.labels("failure").inc()
        raise _invalid_credentials()
    if user.status != "active":
        await lockout.release(session, reservation)
        await audit.record(
            session,
            action="auth:session:login",
            actor=Actor(type="user", id=str(user.id)),
            org_id=None,
            outcome="denied",
            reason="principal_suspended",
            target_type="user",
            target_id=user.id,
        )
        LOGIN_ATTEMPTS.labels("denied").inc()
        raise _invalid_credentials()
    factors = await mfa.factor_status(session, user.id)
    amr = ["pwd"]
    if factors.enrolled:
        if not second_factor.given:
            await lockout.release(session, reservation)
            LOGIN_ATTEMPTS.labels("mfa_required").inc()
            raise await _mfa_challenge(uow, config=config, user=user, factors=factors)
        method = await _check_second_factor(
            uow, config=config, keystore=keystore, user=user, second_factor=second_factor
        )
        if method is None:
            await _fail(
                uow,
                reservation=reservation,
                config=config,
                keystore=keystore,
                user=user,
                reason="invalid_second_factor",
            )
            LOGIN_ATTEMPTS.labels("failure").inc()
            raise Unauthenticated(
                "The second factor is not valid", code="invalid_second_factor", commit=True
            )
        amr = ["pwd", method, "mfa"]
    await lockout.reset(session, email=email)
    if user.password_hash and passwords.needs_rehash(user.password_hash):
        user.password_hash = await passwords.hash(password)
    user.last_login_at = utcnow()
    issued = await _start_session(
        uow, tokens=tokens, user=user, amr=amr, refresh_ttl_seconds=config.refresh_ttl_seconds
    )
    await audit.record(
        session,
        action="auth:session:login",
        actor=Actor(type="user", id=str(user.id)),
        org_id=None,
        target_type="session",
        target_id=issued.session_id,
        metadata={"amr": amr},
    )
    LOGIN_ATTEMPTS.labels("success").inc()
    return issued


async def _fail(
    uow: UnitOfWork,
    *,
    reservation: lockout.Reservation,
    config: AuthConfig,
    keystore: Keystore,
    user: User | None,
    reason: str,
) -> None:
    """The reserved failure stands; audit it, and the lockout when this failure locks."""
    session = uow.session
    actor = Actor(type="user", id=str(user.id)) if user else ANONYMOUS
    await audit.record(
        session,
        action="auth:session:login",
        actor=actor,
        org_id=None,
        outcome="failure",
        reason=reason,
        target_type="user" if user else "login",
        target_id=user.id if user else reservation.key[:16],
    )
    locked_until = await lockout.record_failure(session, reservation, config.lockout)
    if locked_until is not None:
        await audit.record(
            session,
            action="auth:account:lock",
            actor=Actor.system("lockout"),
            org_id=None,
            outcome="success",
            reason="too_many_failures",
            target_type="user" if user else "login",
            target_id=user.id if user else reservation.key[:16],
            metadata={"lockedUntil": locked_until.isoformat(), "failures": reservation.failures},
        )


async def _mfa_challenge(
    uow: UnitOfWork, *, config: AuthConfig, user: User, factors: mfa.FactorStatus
) -> Unauthenticated:
    """401 mfa_required with the methods and a single-use challenge (WebAuthn signs it)."""
    challenge = await mfa.new_challenge(
        uow.session,
        user_id=user.id,
        purpose="login",
        ttl_seconds=config.mfa_challenge_ttl_seconds,
    )
    webauthn_options = None
    if factors.webauthn:
        credentials = await mfa.credentials_of(uow.session, user.id)
        webauthn_options = mfa.authentication_options(
            config.relying_party, challenge=challenge, credentials=credentials
        )
    await audit.record(
        uow.session,
        action="auth:session:mfa_challenge",
        actor=Actor(type="user", id=str(user.id)),
        org_id=None,
        outcome="pending",
        target_type="user",
        target_id=user.id,
        metadata={"methods": factors.methods},
    )
    expires = utcnow() + dt.timedelta(seconds=config.mfa_challenge_ttl_seconds)
    return Unauthenticated(
        "A second factor is required",
        code="mfa_required",
        details={
            "methods": factors.methods,
            "challenge": bytes_to_base64url(challenge),
            "challengeExpiresAt": expires.isoformat(),
            "webauthn": webauthn_options,
        },
        commit=True,
    )


async def _check_second_factor(
    uow: UnitOfWork,
    *,
    config: AuthConfig,
    keystore: Keystore,
    user: User,
    second_factor: SecondFactor,
) -> str | None:
    """The RFC 8176 ``amr`` value of the verified factor, or None."""
    session = uow.session
    if second_factor.webauthn_assertion is not None:
        return await _check_webauthn(
            uow, config=config, user=user, assertion=second_factor.webauthn_assertion
        )
    if second_factor.totp is not None:
        factor = await session.get(TotpFactor, user.id)
        if factor is None or factor.status != "active":
            return None
        ok = await totp.consume(session, keystore=keystore, factor=factor, code=second_factor.totp)
        return "otp" if ok else None
    if second_factor.recovery_code is not None:
        if not await mfa.consume_recovery_code(
            session, user_id=user.id, code=second_factor.recovery_code
        ):
            return None
        remaining = (await mfa.factor_status(session, user.id)).recovery_codes
        await audit.record(
            session,
            action="auth:mfa:recovery_code_use",
            actor=Actor(type="user", id=str(user.id)),
            org_id=None,
            target_type="user",
            target_id=user.id,
            metadata={"remaining": remaining},
        )
        return "rec"
    return None


async def _check_webauthn(
    uow: UnitOfWork, *, config: AuthConfig, user: User, assertion: dict[str, Any]
) -> str | None:
    session = uow.session
    try:
        credential_id = mfa.credential_id_of(assertion)
        challenge_text = mfa.client_data_challenge(assertion)
    except mfa.WebAuthnError:
        raise ValidationFailed(
            "The WebAuthn assertion is malformed",
            code="invalid_webauthn_assertion",
            details={"field": "webauthnAssertion"},
        ) from None
    stored = (
        await session.execute(
            select(WebAuthnCredential).where(
                WebAuthnCredential.credential_id == credential_id,
                WebAuthnCredential.user_id == user.id,
            )
        )
    ).scalar_one_or_none()
    challenge = await mfa.take_challenge(
        session, user_id=user.id, purpose="login", challenge=challenge_text
    )
    if stored is None or challenge is None:
        return None
    try:
        new_count = mfa.verify_assertion(
            config.relying_party, credential=assertion, challenge=challenge, stored=stored
        )
    except mfa.WebAuthnError as error:
        if error.reason == "sign_count_regression":
            await audit.record(
                session,
                action="auth:mfa:webauthn_clone_suspected",
                actor=Actor(type="user", id=str(user.id)),
                org_id=None,
                outcome="denied",
                reason="sign_count_regression",
                target_type="webauthn_credential",
                target_id=stored.id,
                metadata={"suspicious": True, "storedSignCount": stored.sign_count},
            )
        return None
    result = await session.execute(
        update(WebAuthnCredential)
        .where(
            WebAuthnCredential.id == stored.id,
            WebAuthnCredential.sign_count == stored.sign_count,
        )
        .values(sign_count=new_count, last_used_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return None
    return "hwk"


async def _start_session(
    uow: UnitOfWork, *, tokens: TokenService, user: User, amr: list[str], refresh_ttl_seconds: int
) -> IssuedTokens:
    request = current_request()
    now = utcnow()
    mfa_verified = any(method != "pwd" for method in amr)
    sess = Session(
        user_id=user.id,
        ip=request.ip,
        user_agent=(request.user_agent or "")[:500] or None,
        amr=amr,
        mfa_verified=mfa_verified,
        mfa_verified_at=now if mfa_verified else None,
        expires_at=now + dt.timedelta(seconds=refresh_ttl_seconds),
        created_at=now,
        last_used_at=now,
    )
    uow.session.add(sess)
    await uow.session.flush()
    return await _issue_pair(uow, tokens=tokens, sess=sess, refresh_ttl_seconds=refresh_ttl_seconds)


async def _issue_pair(
    uow: UnitOfWork, *, tokens: TokenService, sess: Session, refresh_ttl_seconds: int
) -> IssuedTokens:
    refresh_token = random_token(REFRESH_TOKEN_PREFIX)
    now = utcnow()
    uow.session.add(
        RefreshToken(
            session_id=sess.id,
            token_hash=sha256_hex(refresh_token),
            expires_at=min(sess.expires_at, now + dt.timedelta(seconds=refresh_ttl_seconds)),
        )
    )
    extra: dict[str, Any] = {"auth_time": int(sess.created_at.timestamp())}
    if sess.mfa_verified_at is not None:
        extra["mfa_time"] = int(sess.mfa_verified_at.timestamp())
    access_token, expires_at = await tokens.issue_access_token(
        subject=sess.user_id,
        principal_type="user",
        session_id=sess.id,
        amr=list(sess.amr),
        extra=extra,
    )
    return IssuedTokens(access_token, refresh_token, sess.id, expires_at, sess.mfa_verified)


async def refresh(
    uow: UnitOfWork,
    *,
    tokens: TokenService,
    refresh_token: str,
    config: AuthConfig,
) -> IssuedTokens:
    """Rotate: the presented token is spent; presenting a spent one ends the whole session."""
    session = uow.session
    invalid = Unauthenticated("The refresh token is not valid", code="invalid_refresh_token")
    if not refresh_token.startswith(REFRESH_TOKEN_PREFIX + "_") or len(refresh_token) > 200:
        raise invalid
    row = (
        await session.execute(
            select(RefreshToken, Session, User)
            .join(Session, Session.id == RefreshToken.session_id)
            .join(User, User.id == Session.user_id)
            .where(RefreshToken.token_hash == sha256_hex(refresh_token))
            .with_for_update(of=RefreshToken)
        )
    ).first()
    if row is None:
        raise invalid
    token, sess, user = row
    now = utcnow()
    if token.status == "used":
        await _revoke_session(uow, sess, reason="refresh_token_reuse")
        await audit.record(
            session,
            action="auth:session:refresh_reuse",
            actor=Actor(type="user", id=str(user.id)),
            org_id=None,
            outcome="denied",
            reason="refresh_token_reuse",
            target_type="session",
            target_id=sess.id,
            metadata={"suspicious": True},
        )
        invalid.commit = True
        raise invalid
    if (
        token.status != "active"
        or token.expires_at <= now
        or sess.status != "active"
        or sess.expires_at <= now
        or sess.last_used_at + dt.timedelta(seconds=config.idle_timeout_seconds) <= now
        or user.status != "active"
    ):
        raise invalid
    token.status = "used"
    token.used_at = now
    sess.last_used_at = now
    return await _issue_pair(
        uow, tokens=tokens, sess=sess, refresh_ttl_seconds=config.refresh_ttl_seconds
    )


async def _revoke_session(uow: UnitOfWork, sess: Session, *, reason: str) -> None:
    now = utcnow()
    if sess.status == "active":
        sess.status = "revoked"
        sess.revoked_at = now
        sess.revoked_reason = reason
    await uow.session.execute(
        update(RefreshToken)
        .where(RefreshToken.session_id == sess.id, RefreshToken.status == "active")
        .values(status="revoked")
    )


async def revoke_own_session(
    uow: UnitOfWork, *, principal: Principal, session_id: uuid.UUID, reason: str = "logout"
) -> None:
    sess = await uow.session.get(Session, session_id)
    if sess is None or sess.user_id != principal.id:
        raise NotFound("session", session_id)
    already = sess.status != "active"
    await _revoke_session(uow, sess, reason=reason)
    if not already:
        await audit.record(
            uow.session,
            action="auth:session:revoke",
            actor=principal.actor,
            org_id=None,
            target_type="session",
            target_id=sess.id,
            metadata={"reason": reason},
        )


async def revoke_user_sessions(
    uow: UnitOfWork, *, user_id: uuid.UUID, reason: str, except_session: uuid.UUID | None = None
) -> int:
    """End every active session of a user (suspension, password reset, admin action)."""
    sessions = (
        (
            await uow.session.execute(
                select(Session).where(Session.user_id == user_id, Session.status == "active")
            )
        )
        .scalars()
        .all()
    )
    count = 0
    for sess in sessions:
        if sess.id == except_session:
            continue
        await _revoke_session(uow, sess, reason=reason)
        count += 1
    return count


async def list_sessions(session: AsyncSession, *, user_id: uuid.UUID) -> list[Session]:
    rows = await session.execute(
        select(Session)
        .where(
            Session.user_id == user_id, Session.status == "active", Session.expires_at > utcnow()
        )
        .order_by(Session.created_at.desc())
        .limit(200)
    )
    return list(rows.scalars())


async def revoke_other_sessions(uow: UnitOfWork, *, principal: Principal) -> int:
    """Sign out everywhere else: every session of the caller but the current one ends."""
    count = await revoke_user_sessions(
        uow, user_id=principal.id, reason="revoked_by_user", except_session=principal.session_id
    )
    await audit.record(
        uow.session,
        action="auth:session:revoke_others",
        actor=principal.actor,
        org_id=None,
        target_type="user",
        target_id=principal.id,
        metadata={"revoked": count},
    )
    return count


async def list_user_sessions(session: AsyncSession, *, user_id: uuid.UUID) -> list[Session]:
    return await list_sessions(session, user_id=user_id)


def ensure_may_act_on(actor: Principal, target: User) -> None:
    """Org admins act on their members, but never on a platform admin's identity."""
    if target.is_platform_admin and not actor.is_platform_admin:
        raise Forbidden(
            "The member is a platform admin; only a platform admin can do this",
            code="target_is_platform_admin",
            details={"userId": str(target.id)},
        )


async def admin_revoke_sessions(
    uow: UnitOfWork,
    *,
    actor: Principal,
    org_id: uuid.UUID,
    user: User,
    session_id: uuid.UUID | None = None,
) -> int:
    """An org admin ends a member's sessions (all, or the one named)."""
    ensure_may_act_on(actor, user)
    if session_id is not None:
        sess = await uow.session.get(Session, session_id)
        if sess is None or sess.user_id != user.id:
            raise NotFound("session", session_id)
        count = 1 if sess.status == "active" else 0
        await _revoke_session(uow, sess, reason="revoked_by_admin")
    else:
        count = await revoke_user_sessions(uow, user_id=user.id, reason="revoked_by_admin")
    await audit.record(
        uow.session,
        action="api:session:revoke",
        actor=actor.actor,
        org_id=org_id,
        target_type="user",
        target_id=user.id,
        metadata={"revoked": count, "sessionId": str(session_id) if session_id else None},
    )
    return count


async def unlock(uow: UnitOfWork, *, actor: Principal, org_id: uuid.UUID, user: User) -> bool:
    """Clear a member's sign-in lockout (admins); returns whether it was locked."""
    ensure_may_act_on(actor, user)
    was_locked = await lockout.reset(uow.session, email=user.email)
    await audit.record(
        uow.session,
        action="api:user:unlock",
        actor=actor.actor,
        org_id=org_id,
        target_type="user",
        target_id=user.id,
        metadata={"wasLocked": was_locked},
    )
    return was_locked


# -- global suspension of an identity (platform admins) -----------------------------------
async def suspend_identity(
    uow: UnitOfWork, *, actor: Principal, user_id: uuid.UUID, reason_code: str
) -> User:
    """Suspend the identity everywhere: sign-in is refused, every session ends, and its
    still-unexpired access tokens are refused from this commit on (sessions are checked on
    every request)."""
    user = await uow.session.get(User, user_id)
    if user is None:
        raise NotFound("user", user_id)
    if user.id == actor.id:
        raise Conflict("You cannot suspend yourself", code="self_suspension")
    if user.status == "suspended":
        raise Conflict(
            "The identity is already suspended",
            code="invalid_user_status",
            details={"status": user.status},
        )
    user.status = "suspended"
    user.status_reason = reason_code
    count = await revoke_user_sessions(uow, user_id=user.id, reason="principal_suspended")
    await uow.session.flush()
    await audit.record(
        uow.session,
        action="api:user:suspend_identity",
        actor=actor.actor,
        org_id=None,
        target_type="user",
        target_id=user.id,
        reason=reason_code,
        metadata={"sessionsRevoked": count},
    )
    return user


async def restore_identity(uow: UnitOfWork, *, actor: Principal, user_id: uuid.UUID) -> User:
    user = await uow.session.get(User, user_id)
    if user is None:
        raise NotFound("user", user_id)
    if user.status != "suspended":
        raise Conflict(
            "The identity is not suspended",
            code="invalid_user_status",
            details={"status": user.status},
        )
    user.status = "active"
    user.status_reason = None
    await uow.session.flush()
    await audit.record(
        uow.session,
        action="api:user:restore_identity",
        actor=actor.actor,
        org_id=None,
        target_type="user",
        target_id=user.id,
    )
    return user
