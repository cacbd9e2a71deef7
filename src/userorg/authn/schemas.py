"""Sign-in and session I/O models."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any, Literal

from pydantic import Field, StrictInt, StringConstraints

from userorg.schemas import Email, InputModel, OutputModel, ReasonCode

LoginEmail = Annotated[str, StringConstraints(min_length=1, max_length=320)]
LoginPassword = Annotated[str, StringConstraints(min_length=1, max_length=256)]
OpaqueToken = Annotated[str, StringConstraints(min_length=1, max_length=512)]


TotpCode = Annotated[str, StringConstraints(min_length=6, max_length=10, pattern=r"^[0-9 ]+$")]
RecoveryCodeText = Annotated[str, StringConstraints(min_length=8, max_length=64)]
NewPassword = Annotated[str, StringConstraints(min_length=1, max_length=256)]
CredentialName = Annotated[
    str, StringConstraints(min_length=1, max_length=100, strip_whitespace=True)
]
# A PublicKeyCredential as the browser serialises it (PublicKeyCredential.toJSON()).
WebAuthnPayload = Annotated[dict[str, Any], Field(max_length=20)]


class LoginRequest(InputModel):
    email: LoginEmail
    password: LoginPassword
    totp: TotpCode | None = None
    recovery_code: RecoveryCodeText | None = None
    webauthn_assertion: WebAuthnPayload | None = None


class TokenResponse(OutputModel):
    access_token: str
    refresh_token: str
    session_id: uuid.UUID
    expires_at: dt.datetime
    mfa_verified: bool
    token_type: str = "Bearer"


class RefreshRequest(InputModel):
    refresh_token: OpaqueToken | None = None


class SessionRead(OutputModel):
    session_id: uuid.UUID
    created_at: dt.datetime
    last_used_at: dt.datetime
    expires_at: dt.datetime
    ip: str | None = None
    user_agent: str | None = None
    mfa_verified: bool
    amr: list[str]
    current: bool


class SessionList(OutputModel):
    items: list[SessionRead]


class MembershipSummary(OutputModel):
    org_id: uuid.UUID
    slug: str
    name: str
    status: str
    org_status: str
    roles: list[str]
    # Held, but not in force for this session: they require MFA and the session has none.
    roles_awaiting_mfa: list[str] = Field(default_factory=list)


class MfaState(OutputModel):
    enrolled: bool
    totp: bool
    webauthn_credentials: int
    recovery_codes_remaining: int
    methods: list[str]
    # True when the user holds a role that requires MFA but has no factor yet.
    enrollment_required: bool


class MeRead(OutputModel):
    principal_type: Literal["user", "service_account"] = "user"
    principal_id: uuid.UUID
    user_id: uuid.UUID | None = None
    email: str | None = None
    display_name: str | None = None
    is_platform_admin: bool
    session_id: uuid.UUID | None = None
    amr: list[str]
    mfa_verified: bool = False
    mfa_verified_at: dt.datetime | None = None
    mfa: MfaState | None = None
    memberships: list[MembershipSummary] = Field(default_factory=list)
    org_id: uuid.UUID | None = None  # service accounts: their org
    scopes: list[str] | None = None  # service-account tokens: the token's scopes


class RevokedCount(OutputModel):
    revoked: int


class TotpEnrollment(OutputModel):
    secret: str
    otpauth_uri: str


class TotpConfirm(InputModel):
    code: TotpCode


class TotpDisable(InputModel):
    code: TotpCode | None = None
    recovery_code: RecoveryCodeText | None = None


class RecoveryCodes(OutputModel):
    recovery_codes: list[str]


class WebAuthnRegister(InputModel):
    credential: WebAuthnPayload
    name: CredentialName | None = None


class WebAuthnRename(InputModel):
    name: CredentialName


class WebAuthnCredentialRead(OutputModel):
    credential_id: uuid.UUID
    name: str
    created_at: dt.datetime
    last_used_at: dt.datetime | None = None
    aaguid: str | None = None
    backed_up: bool
    transports: list[str]


class WebAuthnCredentialList(OutputModel):
    items: list[WebAuthnCredentialRead]


class WebAuthnRegistered(WebAuthnCredentialRead):
    recovery_codes: list[str]


class PasswordForgot(InputModel):
    email: Email


class PasswordReset(InputModel):
    token: OpaqueToken
    new_password: NewPassword


class PasswordChange(InputModel):
    current_password: NewPassword
    new_password: NewPassword


class Accepted(OutputModel):
    status: Literal["accepted"] = "accepted"


class PasswordChanged(OutputModel):
    other_sessions_revoked: int


class IdentitySuspend(InputModel):
    reason_code: ReasonCode
    comment: Annotated[str, StringConstraints(max_length=1000)] | None = None


class IdentityRead(OutputModel):
    user_id: uuid.UUID
    email: str
    display_name: str | None = None
    status: str
    status_reason: str | None = None


class UnlockResult(OutputModel):
    user_id: uuid.UUID
    was_locked: bool


class ClientSecretRequest(InputModel):
    grace_period_seconds: Annotated[StrictInt, Field(ge=0, le=7 * 86_400)] = 0


class ClientSecretIssued(OutputModel):
    client_id: str
    client_secret: str
    rotated_at: dt.datetime
    previous_secret_expires_at: dt.datetime | None = None
    token_endpoint: str
