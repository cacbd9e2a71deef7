"""Second factors: factor status, the MFA policy, recovery codes, single-use challenges and
the WebAuthn ceremonies (through the ``webauthn`` library)."""

from __future__ import annotations

import binascii
import datetime as dt
import secrets
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import base64url_to_bytes, bytes_to_base64url
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AttestationConveyancePreference,
    AuthenticatorSelectionCriteria,
    AuthenticatorTransport,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from userorg.authn.models import MfaChallenge, RecoveryCode, TotpFactor, WebAuthnCredential
from userorg.authz.catalogue import ALWAYS_MFA_ROLES
from userorg.crypto import sha256_hex
from userorg.db import utcnow
from userorg.errors import Conflict
from userorg.orgs.models import Organization
from userorg.roles.models import RoleAssignment
from userorg.users.models import Membership

RECOVERY_CODE_COUNT = 10
_RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i


@dataclass(frozen=True, slots=True)
class FactorStatus:
    totp: bool
    webauthn: int
    recovery_codes: int

    @property
    def enrolled(self) -> bool:
        return self.totp or self.webauthn > 0

    @property
    def methods(self) -> list[str]:
        methods = []
        if self.totp:
            methods.append("totp")
        if self.webauthn:
            methods.append("webauthn")
        if self.enrolled and self.recovery_codes:
            methods.append("recovery_code")
        return methods


async def factor_status(session: AsyncSession, user_id: uuid.UUID) -> FactorStatus:
    totp = (
        await session.execute(
            select(TotpFactor.user_id).where(
                TotpFactor.user_id == user_id, TotpFactor.status == "active"
            )
        )
    ).first() is not None
    webauthn_count = (
        await session.execute(
            select(func.count())
            .select_from(WebAuthnCredential)
            .where(WebAuthnCredential.user_id == user_id)
        )
    ).scalar_one()
    codes = (
        await session.execute(
            select(func.count())
            .select_from(RecoveryCode)
            .where(RecoveryCode.user_id == user_id, RecoveryCode.used_at.is_(None))
        )
    ).scalar_one()
    return FactorStatus(totp, int(webauthn_count), int(codes))


# -- policy -------------------------------------------------------------------------------
def mfa_required_roles(org: Organization) -> frozenset[str]:
    """``OrgOwner`` always; plus the org's ``mfaRequiredRoles``."""
    return ALWAYS_MFA_ROLES | frozenset(org.mfa_required_roles or ())


async def check_role_grant(
    session: AsyncSession, *, org: Organization, user_id: uuid.UUID, added: set[str]
) -> None:
    """A user without a second factor cannot be given a role that requires one (409)."""
    needing = sorted(added & mfa_required_roles(org))
    if not needing:
        return
    if (await factor_status(session, user_id)).enrolled:
        return
    raise Conflict(
        "The user has no second factor; these roles require MFA",
        code="mfa_required_for_role",
        details={"roles": needing, "userId": str(user_id)},
    )


async def roles_requiring_mfa(session: AsyncSession, *, user_id: uuid.UUID) -> list[str]:
    """The MFA-requiring roles a user holds in orgs where the membership is not removed."""
    rows = await session.execute(
        select(RoleAssignment.role_name, Organization)
        .join(Organization, Organization.id == RoleAssignment.org_id)
        .join(
            Membership,
            (Membership.org_id == RoleAssignment.org_id)
            & (Membership.user_id == RoleAssignment.principal_id),
        )
        .where(
            RoleAssignment.principal_type == "user",
            RoleAssignment.principal_id == user_id,
            Membership.status != "removed",
        )
    )
    return sorted({role for role, org in rows if role in mfa_required_roles(org)})


async def ensure_can_remove_factor(
    session: AsyncSession, *, user_id: uuid.UUID, removing_totp: bool, removing_webauthn: int
) -> bool:
    """Refuse to remove the last factor of a user who holds a role that requires MFA.
    Returns whether the user will have no factor left."""
    status = await factor_status(session, user_id)
    left_totp = status.totp and not removing_totp
    left_webauthn = status.webauthn - removing_webauthn
    if left_totp or left_webauthn > 0:
        return False
    roles = await roles_requiring_mfa(session, user_id=user_id)
    if roles:
        raise Conflict(
            "You hold roles that require MFA; enrol another factor before removing this one",
            code="mfa_required_by_role",
            details={"roles": roles},
        )
    return True


# -- recovery codes -------------------------------------------------------------------------
def _normalise_code(code: str) -> str:
    return code.strip().lower().replace("-", "").replace(" ", "")


def recovery_code_hash(user_id: uuid.UUID, code: str) -> str:
    return sha256_hex(f"recovery:{user_id}:{_normalise_code(code)}")


def _new_code() -> str:
    raw = "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(16))  # ~79 bits
    return "-".join(raw[i : i + 4] for i in range(0, 16, 4))


async def regenerate_recovery_codes(session: AsyncSession, *, user_id: uuid.UUID) -> list[str]:
    """Replace every recovery code of the user with 10 new ones (returned once)."""
    await session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user_id))
    codes = [_new_code() for _ in range(RECOVERY_CODE_COUNT)]
    for code in codes:
        session.add(RecoveryCode(user_id=user_id, code_hash=recovery_code_hash(user_id, code)))
    await session.flush()
    return codes


async def consume_recovery_code(session: AsyncSession, *, user_id: uuid.UUID, code: str) -> bool:
    if not 8 <= len(code) <= 64:
        return False
    code_hash = recovery_code_hash(user_id, code)
    row = (
        await session.execute(
            select(RecoveryCode.id).where(
                RecoveryCode.user_id == user_id,
                RecoveryCode.code_hash == code_hash,
                RecoveryCode.used_at.is_(None),
            )
        )
    ).first()
    if row is None:
        return False
    result = await session.execute(
        update(RecoveryCode)
        .where(RecoveryCode.id == row[0], RecoveryCode.used_at.is_(None))
        .values(used_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


# -- challenges -----------------------------------------------------------------------------
async def new_challenge(
    session: AsyncSession, *, user_id: uuid.UUID, purpose: str, ttl_seconds: int
) -> bytes:
    challenge = secrets.token_bytes(32)
    session.add(
        MfaChallenge(
            user_id=user_id,
            purpose=purpose,
            challenge=bytes_to_base64url(challenge),
            expires_at=utcnow() + dt.timedelta(seconds=ttl_seconds),
        )
    )
    await session.flush()
    return challenge


async def take_challenge(
    session: AsyncSession, *, user_id: uuid.UUID, purpose: str, challenge: str
) -> bytes | None:
    """Spend an outstanding challenge (single use, unexpired, this user's, this purpose)."""
    if not challenge or len(challenge) > 128:
        return None
    result = await session.execute(
        update(MfaChallenge)
        .where(
            MfaChallenge.challenge == challenge,
            MfaChallenge.user_id == user_id,
            MfaChallenge.purpose == purpose,
            MfaChallenge.used_at.is_(None),
            MfaChallenge.expires_at > utcnow(),
        )
        .values(used_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return None
    try:
        return base64url_to_bytes(challenge)
    except (binascii.Error, ValueError):
        return None


# -- WebAuthn -------------------------------------------------------------------------------
class WebAuthnError(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class RelyingParty:
    rp_id: str
    name: str
    origins: list[str]


def _descriptor(credential: WebAuthnCredential) -> PublicKeyCredentialDescriptor:
    transports = []
    for value in credential.transports or []:
        try:
            transports.append(AuthenticatorTransport(value))
        except ValueError:
            continue
    return PublicKeyCredentialDescriptor(
        id=base64url_to_bytes(credential.credential_id), transports=transports or None
    )


async def credentials_of(session: AsyncSession, user_id: uuid.UUID) -> list[WebAuthnCredential]:
    rows = await session.execute(
        select(WebAuthnCredential)
        .where(WebAuthnCredential.user_id == user_id)
        .order_by(WebAuthnCredential.created_at)
    )
    return list(rows.scalars())


def registration_options(
    rp: RelyingParty,
    *,
    user_id: uuid.UUID,
    email: str,
    display_name: str | None,
    challenge: bytes,
    existing: list[WebAuthnCredential],
) -> dict[str, Any]:
    options = generate_registration_options(
        rp_id=rp.rp_id,
        rp_name=rp.name,
        user_name=email,
        user_id=user_id.bytes,
        user_display_name=display_name or email,
        challenge=challenge,
        attestation=AttestationConveyancePreference.NONE,
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.PREFERRED,
            user_verification=UserVerificationRequirement.PREFERRED,
        ),
        exclude_credentials=[_descriptor(c) for c in existing],
        timeout=300_000,
    )
    result: dict[str, Any] = orjson.loads(options_to_json(options))
    return result


def authentication_options(
    rp: RelyingParty, *, challenge: bytes, credentials: list[WebAuthnCredential]
) -> dict[str, Any]:
    options = generate_authentication_options(
        rp_id=rp.rp_id,
        challenge=challenge,
        allow_credentials=[_descriptor(c) for c in credentials],
        user_verification=UserVerificationRequirement.PREFERRED,
        timeout=300_000,
    )
    result: dict[str, Any] = orjson.loads(options_to_json(options))
    return result


def client_data_challenge(credential: dict[str, Any]) -> str:
    """The challenge the browser signed, read from ``response.clientDataJSON``."""
    try:
        response = credential["response"]
        raw = base64url_to_bytes(response["clientDataJSON"])
        data = orjson.loads(raw)
        challenge = data["challenge"]
    except (KeyError, TypeError, ValueError, binascii.Error, orjson.JSONDecodeError):
        raise WebAuthnError("malformed_credential") from None
    if not isinstance(challenge, str):
        raise WebAuthnError("malformed_credential")
    return challenge


def credential_id_of(credential: dict[str, Any]) -> str:
    value = credential.get("rawId") or credential.get("id")
    if not isinstance(value, str) or not value or len(value) > 1400:
        raise WebAuthnError("malformed_credential")
    try:
        return bytes_to_base64url(base64url_to_bytes(value))  # canonical form
    except (binascii.Error, ValueError):
        raise WebAuthnError("malformed_credential") from None


def verify_registration(
    rp: RelyingParty, *, credential: dict[str, Any], challenge: bytes
) -> dict[str, Any]:
    try:
        verified = verify_registration_response(
            credential=credential,
            expected_challenge=challenge,
            expected_rp_id=rp.rp_id,
            expected_origin=rp.origins,
            require_user_verification=False,
        )
    except (WebAuthnException, KeyError, TypeError, ValueError) as error:
        raise WebAuthnError(_reason(error)) from None
    response = credential.get("response")
    transports = response.get("transports") if isinstance(response, dict) else None
    return {
        "credential_id": bytes_to_base64url(verified.credential_id),
        "public_key": bytes_to_base64url(verified.credential_public_key),
        "sign_count": verified.sign_count,
        "aaguid": verified.aaguid,
        "backed_up": bool(verified.credential_backed_up),
        "transports": [t for t in (transports or []) if isinstance(t, str)][:10],
    }


def verify_assertion(
    rp: RelyingParty,
    *,
    credential: dict[str, Any],
    challenge: bytes,
    stored: WebAuthnCredential,
) -> int:
    """Verify a login assertion; returns the new sign count. A count that does not grow
    (a cloned authenticator) is refused as ``sign_count_regression``."""
    try:
        verified = verify_authentication_response(
            credential=credential,
            expected_challenge=challenge,
            expected_rp_id=rp.rp_id,
            expected_origin=rp.origins,
            credential_public_key=base64url_to_bytes(stored.public_key),
            credential_current_sign_count=stored.sign_count,
            require_user_verification=False,
        )
    except (WebAuthnException, KeyError, TypeError, ValueError) as error:
        raise WebAuthnError(_reason(error)) from None
    return int(verified.new_sign_count)


def _reason(error: Exception) -> str:
    text = str(error).lower()
    if "sign count" in text:
        return "sign_count_regression"
    if "origin" in text:
        return "unexpected_origin"
    if "challenge" in text:
        return "unexpected_challenge"
    if "rp id" in text:
        return "unexpected_rp_id"
    if "signature" in text:
        return "bad_signature"
    return "invalid_credential"
