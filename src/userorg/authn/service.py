"""Sign-in, token refresh with rotation and reuse detection, sessions, bearer authentication."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from userorg.audit import recorder as audit
from userorg.authn.models import RefreshToken, Session
from userorg.authn.passwords import PasswordService
from userorg.authn.principal import Principal
from userorg.authn.tokens import InvalidToken, TokenService
from userorg.context import ANONYMOUS, Actor, current_request
from userorg.crypto import random_token, sha256_hex
from userorg.db import UnitOfWork, utcnow
from userorg.errors import NotFound, Unauthenticated
from userorg.telemetry.metrics import LOGIN_ATTEMPTS
from userorg.users.models import User

REFRESH_TOKEN_PREFIX = "uort"


@dataclass(frozen=True)
class IssuedTokens:
    access_token: str
    refresh_token: str
    session_id: uuid.UUID
    expires_at: dt.datetime
    mfa_verified: bool
    token_type: str = "Bearer"


async def authenticate_bearer(
    session: AsyncSession, *, tokens: TokenService, token: str
) -> Principal:
    """Verify an access token and check, on every request, that its session is still alive."""
    try:
        claims = await tokens.verify_access_token(token)
    except InvalidToken as error:
        raise Unauthenticated(
            "The access token is not valid", code="invalid_token", details={"reason": error.reason}
        ) from None
    try:
        subject = uuid.UUID(claims["sub"])
        session_id = uuid.UUID(claims["sid"]) if "sid" in claims else None
    except (ValueError, KeyError, TypeError):
        raise Unauthenticated("The access token is not valid", code="invalid_token") from None
    if claims.get("ptype") != "user" or session_id is None:
        raise Unauthenticated("The access token is not valid", code="invalid_token")
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


def _invalid_credentials() -> Unauthenticated:
    return Unauthenticated("Invalid email or password", code="invalid_credentials", commit=True)


async def login(
    uow: UnitOfWork,
    *,
    passwords: PasswordService,
    tokens: TokenService,
    email: str,
    password: str,
    refresh_ttl_seconds: int,
) -> IssuedTokens:
    session = uow.session
    user = (
        await session.execute(select(User).where(User.email == email.lower()))
    ).scalar_one_or_none()
    valid = await passwords.verify(user.password_hash if user else None, password)
    if user is None or not valid:
        await audit.record(
            session,
            action="auth:session:login",
            actor=Actor(type="user", id=str(user.id)) if user else ANONYMOUS,
            org_id=None,
            outcome="failure",
            reason="invalid_credentials",
            target_type="user",
            target_id=user.id if user else None,
        )
        LOGIN_ATTEMPTS.labels("failure").inc()
        raise _invalid_credentials()
    if user.status != "active":
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
    if user.password_hash and passwords.needs_rehash(user.password_hash):
        user.password_hash = await passwords.hash(password)
    user.last_login_at = utcnow()
    issued = await _start_session(
        uow, tokens=tokens, user=user, amr=["pwd"], refresh_ttl_seconds=refresh_ttl_seconds
    )
    await audit.record(
        session,
        action="auth:session:login",
        actor=Actor(type="user", id=str(user.id)),
        org_id=None,
        target_type="session",
        target_id=issued.session_id,
        metadata={"amr": ["pwd"]},
    )
    LOGIN_ATTEMPTS.labels("success").inc()
    return issued


async def _start_session(
    uow: UnitOfWork, *, tokens: TokenService, user: User, amr: list[str], refresh_ttl_seconds: int
) -> IssuedTokens:
    request = current_request()
    now = utcnow()
    sess = Session(
        user_id=user.id,
        ip=request.ip,
        user_agent=(request.user_agent or "")[:500] or None,
        amr=amr,
        mfa_verified=any(method != "pwd" for method in amr),
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
    access_token, expires_at = await tokens.issue_access_token(
        subject=sess.user_id, principal_type="user", session_id=sess.id, amr=list(sess.amr)
    )
    return IssuedTokens(access_token, refresh_token, sess.id, expires_at, sess.mfa_verified)


async def refresh(
    uow: UnitOfWork,
    *,
    tokens: TokenService,
    refresh_token: str,
    refresh_ttl_seconds: int,
    idle_timeout_seconds: int,
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
        or sess.last_used_at + dt.timedelta(seconds=idle_timeout_seconds) <= now
        or user.status != "active"
    ):
        raise invalid
    token.status = "used"
    token.used_at = now
    sess.last_used_at = now
    return await _issue_pair(uow, tokens=tokens, sess=sess, refresh_ttl_seconds=refresh_ttl_seconds)


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
