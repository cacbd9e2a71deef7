"""Managing one's own second factors: TOTP enrolment and removal, WebAuthn credentials,
recovery codes. Changes are audited and announced to the user through the notifier."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import delete, select

from userorg.audit import recorder as audit
from userorg.authn import mfa, totp
from userorg.authn.models import RecoveryCode, TotpFactor, WebAuthnCredential
from userorg.authn.principal import Principal
from userorg.db import UnitOfWork, utcnow
from userorg.errors import BadRequest, Conflict, Forbidden, NotFound, ValidationFailed
from userorg.notifications import service as notifications
from userorg.platform.keystore import Keystore
from userorg.users.models import User


async def _user(uow: UnitOfWork, principal: Principal) -> User:
    if principal.type != "user":
        raise Forbidden("Only users have second factors", code="not_a_user")
    user = await uow.session.get(User, principal.id)
    if user is None:
        raise NotFound("user", principal.id)
    return user


def _require_mfa_session(principal: Principal, status: mfa.FactorStatus) -> None:
    """Once a user has a factor, changing factors needs a session signed in with one."""
    if status.enrolled and principal.mfa_verified_at is None:
        raise Forbidden(
            "Sign in with your second factor to change your factors",
            code="mfa_step_up_required",
            details={"methods": status.methods},
        )


async def security_notice(
    uow: UnitOfWork, *, keystore: Keystore, user: User, event: str, wake: Any = None
) -> None:
    """Tell the account holder about a security-relevant change (out of band)."""
    await notifications.enqueue(
        uow,
        keystore=keystore,
        kind="security_notice",
        org_id=None,
        payload={"to": user.email, "event": event, "userId": str(user.id)},
        wake=wake,
    )


async def _first_factor_codes(uow: UnitOfWork, user: User, status: mfa.FactorStatus) -> list[str]:
    """The first factor comes with 10 recovery codes (shown once)."""
    if status.enrolled:
        return []
    return await mfa.regenerate_recovery_codes(uow.session, user_id=user.id)


# -- TOTP -----------------------------------------------------------------------------------
async def totp_enroll(
    uow: UnitOfWork, *, keystore: Keystore, principal: Principal, issuer: str
) -> tuple[str, str]:
    """Start enrolment: a new secret, shown once (stored encrypted, pending until confirmed)."""
    user = await _user(uow, principal)
    status = await mfa.factor_status(uow.session, user.id)
    _require_mfa_session(principal, status)
    factor = await uow.session.get(TotpFactor, user.id)
    if factor is not None and factor.status == "active":
        raise Conflict("TOTP is already enrolled", code="totp_already_enrolled")
    secret = totp.new_secret()
    encrypted = await totp.encrypt_secret(keystore, secret, user.id)
    if factor is None:
        uow.session.add(TotpFactor(user_id=user.id, secret_encrypted=encrypted, status="pending"))
    else:
        factor.secret_encrypted = encrypted
        factor.last_step = 0
        factor.created_at = utcnow()
    await uow.session.flush()
    await audit.record(
        uow.session,
        action="auth:mfa:totp_enroll",
        actor=principal.actor,
        org_id=None,
        target_type="user",
        target_id=user.id,
    )
    return secret, totp.provisioning_uri(secret, account=user.email, issuer=issuer)


async def totp_confirm(
    uow: UnitOfWork, *, keystore: Keystore, principal: Principal, code: str, wake: Any = None
) -> list[str]:
    """Activate the pending secret with a first code. Returns recovery codes when this is the
    user's first factor."""
    user = await _user(uow, principal)
    factor = await uow.session.get(TotpFactor, user.id)
    if factor is None or factor.status != "pending":
        raise Conflict("There is no pending TOTP enrolment", code="no_pending_totp")
    status = await mfa.factor_status(uow.session, user.id)
    _require_mfa_session(principal, status)
    if not await totp.consume(uow.session, keystore=keystore, factor=factor, code=code):
        raise BadRequest(
            "The code is not valid", code="invalid_mfa_code", details={"field": "code"}
        )
    codes = await _first_factor_codes(uow, user, status)
    factor.status = "active"
    factor.confirmed_at = utcnow()
    await uow.session.flush()
    await audit.record(
        uow.session,
        action="auth:mfa:totp_confirm",
        actor=principal.actor,
        org_id=None,
        target_type="user",
        target_id=user.id,
        metadata={"firstFactor": bool(codes)},
    )
    await security_notice(uow, keystore=keystore, user=user, event="totp_enrolled", wake=wake)
    return codes


async def totp_disable(
    uow: UnitOfWork,
    *,
    keystore: Keystore,
    principal: Principal,
    code: str | None,
    recovery_code: str | None,
    wake: Any = None,
) -> None:
    """Remove TOTP; needs a fresh code or a recovery code, and is refused while the user
    holds a role that requires MFA and has no other factor."""
    user = await _user(uow, principal)
    factor = await uow.session.get(TotpFactor, user.id)
    if factor is None:
        raise NotFound("totp_factor")
    if factor.status == "active":
        if not code and not recovery_code:
            raise ValidationFailed(
                "A current code or a recovery code is required",
                code="mfa_code_required",
                details={"fields": ["code", "recoveryCode"]},
            )
        ok = False
        if code:
            ok = await totp.consume(uow.session, keystore=keystore, factor=factor, code=code)
        elif recovery_code:
            ok = await mfa.consume_recovery_code(uow.session, user_id=user.id, code=recovery_code)
        if not ok:
            await audit.record(
                uow.session,
                action="auth:mfa:totp_disable",
                actor=principal.actor,
                org_id=None,
                outcome="denied",
                reason="invalid_mfa_code",
                target_type="user",
                target_id=user.id,
            )
            raise BadRequest(
                "The code is not valid", code="invalid_mfa_code", details={}, commit=True
            )
        none_left = await mfa.ensure_can_remove_factor(
            uow.session, user_id=user.id, removing_totp=True, removing_webauthn=0
        )
    else:
        none_left = False
    await uow.session.delete(factor)
    if none_left:
        await uow.session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    await uow.session.flush()
    await audit.record(
        uow.session,
        action="auth:mfa:totp_disable",
        actor=principal.actor,
        org_id=None,
        target_type="user",
        target_id=user.id,
        metadata={"factorsLeft": not none_left},
    )
    await security_notice(uow, keystore=keystore, user=user, event="totp_removed", wake=wake)


# -- recovery codes -------------------------------------------------------------------------
async def regenerate_recovery_codes(
    uow: UnitOfWork, *, keystore: Keystore, principal: Principal, wake: Any = None
) -> list[str]:
    user = await _user(uow, principal)
    status = await mfa.factor_status(uow.session, user.id)
    if not status.enrolled:
        raise Conflict("Recovery codes need an enrolled second factor", code="no_second_factor")
    _require_mfa_session(principal, status)
    codes = await mfa.regenerate_recovery_codes(uow.session, user_id=user.id)
    await audit.record(
        uow.session,
        action="auth:mfa:recovery_codes_regenerate",
        actor=principal.actor,
        org_id=None,
        target_type="user",
        target_id=user.id,
        metadata={"count": len(codes)},
    )
    await security_notice(
        uow, keystore=keystore, user=user, event="recovery_codes_regenerated", wake=wake
    )
    return codes


# -- WebAuthn -------------------------------------------------------------------------------
async def webauthn_register_options(
    uow: UnitOfWork, *, principal: Principal, rp: mfa.RelyingParty, ttl_seconds: int
) -> dict[str, Any]:
    user = await _user(uow, principal)
    status = await mfa.factor_status(uow.session, user.id)
    _require_mfa_session(principal, status)
    existing = await mfa.credentials_of(uow.session, user.id)
    if len(existing) >= 20:
        raise Conflict("At most 20 WebAuthn credentials", code="too_many_credentials")
    challenge = await mfa.new_challenge(
        uow.session, user_id=user.id, purpose="webauthn_register", ttl_seconds=ttl_seconds
    )
    return mfa.registration_options(
        rp,
        user_id=user.id,
        email=user.email,
        display_name=user.display_name,
        challenge=challenge,
        existing=existing,
    )


async def webauthn_register(
    uow: UnitOfWork,
    *,
    keystore: Keystore,
    principal: Principal,
    rp: mfa.RelyingParty,
    credential: dict[str, Any],
    name: str | None,
    wake: Any = None,
) -> tuple[WebAuthnCredential, list[str]]:
    user = await _user(uow, principal)
    status = await mfa.factor_status(uow.session, user.id)
    _require_mfa_session(principal, status)
    try:
        challenge_text = mfa.client_data_challenge(credential)
    except mfa.WebAuthnError:
        raise ValidationFailed(
            "The WebAuthn credential is malformed",
            code="invalid_webauthn_response",
            details={"field": "credential", "reason": "malformed_credential"},
        ) from None
    challenge = await mfa.take_challenge(
        uow.session, user_id=user.id, purpose="webauthn_register", challenge=challenge_text
    )
    if challenge is None:
        await _audit_register_denied(uow, principal, "unknown_challenge")
        raise BadRequest(
            "The challenge is unknown, used or expired; ask for new options",
            code="invalid_webauthn_challenge",
            commit=True,
        )
    try:
        verified = mfa.verify_registration(rp, credential=credential, challenge=challenge)
    except mfa.WebAuthnError as error:
        await _audit_register_denied(uow, principal, error.reason)
        raise BadRequest(
            "The WebAuthn registration could not be verified",
            code="invalid_webauthn_response",
            details={"reason": error.reason},
            commit=True,
        ) from None
    taken = (
        await uow.session.execute(
            select(WebAuthnCredential.id).where(
                WebAuthnCredential.credential_id == verified["credential_id"]
            )
        )
    ).first()
    if taken is not None:
        raise Conflict("This credential is already registered", code="credential_exists")
    codes = await _first_factor_codes(uow, user, status)
    count = status.webauthn
    record = WebAuthnCredential(
        user_id=user.id,
        name=name or f"Security key {count + 1}",
        **verified,
    )
    uow.session.add(record)
    await uow.session.flush()
    await audit.record(
        uow.session,
        action="auth:mfa:webauthn_register",
        actor=principal.actor,
        org_id=None,
        target_type="webauthn_credential",
        target_id=record.id,
        metadata={"name": record.name, "aaguid": record.aaguid, "firstFactor": bool(codes)},
    )
    await security_notice(uow, keystore=keystore, user=user, event="webauthn_registered", wake=wake)
    return record, codes


async def _audit_register_denied(uow: UnitOfWork, principal: Principal, reason: str) -> None:
    await audit.record(
        uow.session,
        action="auth:mfa:webauthn_register",
        actor=principal.actor,
        org_id=None,
        outcome="denied",
        reason=reason,
        target_type="user",
        target_id=principal.id,
    )


async def list_credentials(uow: UnitOfWork, *, principal: Principal) -> list[WebAuthnCredential]:
    user = await _user(uow, principal)
    return await mfa.credentials_of(uow.session, user.id)


async def _own_credential(
    uow: UnitOfWork, principal: Principal, credential_id: uuid.UUID
) -> WebAuthnCredential:
    record = await uow.session.get(WebAuthnCredential, credential_id)
    if record is None or record.user_id != principal.id:
        raise NotFound("webauthn_credential", credential_id)
    return record


async def rename_credential(
    uow: UnitOfWork, *, principal: Principal, credential_id: uuid.UUID, name: str
) -> WebAuthnCredential:
    record = await _own_credential(uow, principal, credential_id)
    if record.name != name:
        previous = record.name
        record.name = name
        await uow.session.flush()
        await audit.record(
            uow.session,
            action="auth:mfa:webauthn_rename",
            actor=principal.actor,
            org_id=None,
            target_type="webauthn_credential",
            target_id=record.id,
            metadata={"from": previous, "to": name},
        )
    return record


async def delete_credential(
    uow: UnitOfWork,
    *,
    keystore: Keystore,
    principal: Principal,
    credential_id: uuid.UUID,
    wake: Any = None,
) -> None:
    user = await _user(uow, principal)
    record = await _own_credential(uow, principal, credential_id)
    status = await mfa.factor_status(uow.session, user.id)
    _require_mfa_session(principal, status)
    none_left = await mfa.ensure_can_remove_factor(
        uow.session, user_id=user.id, removing_totp=False, removing_webauthn=1
    )
    await uow.session.delete(record)
    if none_left:
        await uow.session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    await uow.session.flush()
    await audit.record(
        uow.session,
        action="auth:mfa:webauthn_delete",
        actor=principal.actor,
        org_id=None,
        target_type="webauthn_credential",
        target_id=record.id,
        metadata={"name": record.name},
    )
    await security_notice(uow, keystore=keystore, user=user, event="webauthn_removed", wake=wake)
