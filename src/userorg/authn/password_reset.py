"""Account recovery and password changes.

* forgot: the same answer whether or not the address exists; a single-use token valid for
  ``USER_ORG_PASSWORD_RESET_TTL_SECONDS`` reaches the address through the notifier;
* reset: spends the token, sets the password, ends every session, clears the lockout;
* change: needs the current password (failures count towards the lockout); other sessions end.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select, update

from userorg.audit import recorder as audit
from userorg.authn import lockout
from userorg.authn.factors import security_notice
from userorg.authn.models import PasswordResetToken
from userorg.authn.passwords import PasswordService
from userorg.authn.principal import Principal
from userorg.authn.service import AuthConfig, revoke_user_sessions
from userorg.context import ANONYMOUS, Actor, current_request
from userorg.crypto import random_token, sha256_hex
from userorg.db import UnitOfWork, utcnow
from userorg.errors import BadRequest, Forbidden
from userorg.notifications import service as notifications
from userorg.platform import ratelimit
from userorg.platform.keystore import Keystore
from userorg.users.models import User

RESET_TOKEN_PREFIX = "uopr"


async def forgot(
    uow: UnitOfWork,
    *,
    keystore: Keystore,
    limiter: ratelimit.RateLimiter,
    config: AuthConfig,
    email: str,
    wake: Any = None,
) -> None:
    email = email.strip().lower()
    request = current_request()
    await ratelimit.enforce(
        limiter,
        scope="password_forgot_ip",
        key=request.ip or "unknown",
        limit=config.password_reset_rate_per_ip,
        period_seconds=3600,
    )
    await ratelimit.enforce(
        limiter,
        scope="password_forgot_account",
        key=lockout.throttle_key(email),
        limit=config.password_reset_rate_per_account,
        period_seconds=3600,
    )
    user = (await uow.session.execute(select(User).where(User.email == email))).scalar_one_or_none()
    if user is None or user.status != "active":
        # Same answer, nothing to deliver. Recorded for the security team.
        await audit.record(
            uow.session,
            action="auth:password:reset_request",
            actor=ANONYMOUS,
            org_id=None,
            outcome="ignored",
            reason="no_active_account",
            target_type="login",
            target_id=lockout.throttle_key(email)[:16],
        )
        return
    await uow.session.execute(
        update(PasswordResetToken)
        .where(PasswordResetToken.user_id == user.id, PasswordResetToken.status == "pending")
        .values(status="revoked")
    )
    token = random_token(RESET_TOKEN_PREFIX)
    expires = utcnow() + dt.timedelta(seconds=config.password_reset_ttl_seconds)
    record = PasswordResetToken(user_id=user.id, token_hash=sha256_hex(token), expires_at=expires)
    uow.session.add(record)
    await uow.session.flush()
    await notifications.enqueue(
        uow,
        keystore=keystore,
        kind="password_reset",
        org_id=None,
        payload={
            "to": user.email,
            "token": token,
            "link": f"{config.public_base_url.rstrip('/')}/password/reset?token={token}",
            "expiresAt": expires.isoformat(),
            "userId": str(user.id),
        },
        wake=wake,
    )
    await audit.record(
        uow.session,
        action="auth:password:reset_request",
        actor=ANONYMOUS,
        org_id=None,
        target_type="user",
        target_id=user.id,
        metadata={"tokenId": str(record.id)},
    )


async def reset(
    uow: UnitOfWork,
    *,
    passwords: PasswordService,
    keystore: Keystore,
    token: str,
    new_password: str,
    wake: Any = None,
    limiter: ratelimit.RateLimiter | None = None,
    config: AuthConfig | None = None,
) -> User:
    if limiter is not None and config is not None:
        # Guessing tokens is hopeless (256 bits), but each try costs a hash and a query.
        await ratelimit.enforce(
            limiter,
            scope="password_reset_ip",
            key=current_request().ip or "unknown",
            limit=config.password_reset_rate_per_ip,
            period_seconds=3600,
        )
    invalid = BadRequest("The reset token is invalid or has expired", code="invalid_reset_token")
    if not token.startswith(RESET_TOKEN_PREFIX + "_") or len(token) > 200:
        raise invalid
    session = uow.session
    row = (
        await session.execute(
            select(PasswordResetToken, User)
            .join(User, User.id == PasswordResetToken.user_id)
            .where(PasswordResetToken.token_hash == sha256_hex(token))
        )
    ).first()
    if row is None:
        raise invalid
    record, user = row
    if record.status != "pending" or record.expires_at <= utcnow() or user.status != "active":
        raise invalid
    passwords.check_rules(new_password, email=user.email)
    spent = await session.execute(
        update(PasswordResetToken)
        .where(PasswordResetToken.id == record.id, PasswordResetToken.status == "pending")
        .values(status="used", used_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if spent.rowcount != 1:  # type: ignore[attr-defined]
        raise invalid
    user.password_hash = await passwords.hash(new_password)
    user.password_changed_at = utcnow()
    ended = await revoke_user_sessions(uow, user_id=user.id, reason="password_reset")
    await lockout.reset(session, email=user.email)
    await session.flush()
    await audit.record(
        session,
        action="auth:password:reset",
        actor=Actor(type="user", id=str(user.id)),
        org_id=None,
        target_type="user",
        target_id=user.id,
        metadata={"sessionsRevoked": ended},
    )
    await security_notice(uow, keystore=keystore, user=user, event="password_reset", wake=wake)
    return user


async def change(
    uow: UnitOfWork,
    *,
    passwords: PasswordService,
    keystore: Keystore,
    config: AuthConfig,
    principal: Principal,
    current_password: str,
    new_password: str,
    wake: Any = None,
) -> int:
    """Returns how many other sessions were ended."""
    if principal.type != "user":
        raise Forbidden("Only users have passwords", code="not_a_user")
    session = uow.session
    user = await session.get(User, principal.id)
    assert user is not None
    reservation = await lockout.reserve_attempt(session, email=user.email)
    if not await passwords.verify(user.password_hash, current_password):
        await audit.record(
            session,
            action="auth:password:change",
            actor=principal.actor,
            org_id=None,
            outcome="failure",
            reason="invalid_current_password",
            target_type="user",
            target_id=user.id,
        )
        await lockout.record_failure(session, reservation, config.lockout)
        raise Forbidden(
            "The current password is not correct", code="invalid_current_password", commit=True
        )
    await lockout.release(session, reservation)
    passwords.check_rules(new_password, email=user.email)
    user.password_hash = await passwords.hash(new_password)
    user.password_changed_at = utcnow()
    ended = await revoke_user_sessions(
        uow, user_id=user.id, reason="password_changed", except_session=principal.session_id
    )
    await session.flush()
    await audit.record(
        session,
        action="auth:password:change",
        actor=principal.actor,
        org_id=None,
        target_type="user",
        target_id=user.id,
        metadata={"otherSessionsRevoked": ended},
    )
    await security_notice(uow, keystore=keystore, user=user, event="password_changed", wake=wake)
    return ended
