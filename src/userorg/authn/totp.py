"""TOTP (RFC 6238): 30-second steps, 6 digits, SHA-1 (what authenticator apps support),
a drift window of one step either side, and each step accepted at most once per user."""

from __future__ import annotations

import hmac
import time
import uuid

import pyotp
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from userorg.authn.models import TotpFactor
from userorg.platform.keystore import Keystore

STEP_SECONDS = 30
DIGITS = 6
DRIFT_STEPS = 1


def new_secret() -> str:
    return pyotp.random_base32(32)  # 160 bits, as RFC 4226 recommends


def provisioning_uri(secret: str, *, account: str, issuer: str) -> str:
    uri: str = pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS).provisioning_uri(
        name=account, issuer_name=issuer
    )
    return uri


def secret_context(user_id: uuid.UUID) -> str:
    return f"totp:{user_id}"


async def encrypt_secret(keystore: Keystore, secret: str, user_id: uuid.UUID) -> str:
    return await keystore.encrypt(secret.encode(), context=secret_context(user_id))


async def decrypt_secret(keystore: Keystore, factor: TotpFactor) -> str:
    return (
        await keystore.decrypt(factor.secret_encrypted, context=secret_context(factor.user_id))
    ).decode()


def matching_step(secret: str, code: str, *, now: float | None = None) -> int | None:
    """The time step whose code equals ``code`` within the drift window, or None."""
    code = code.strip().replace(" ", "")
    if len(code) != DIGITS or not code.isdigit():
        return None
    totp = pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS)
    current = int((now if now is not None else time.time()) // STEP_SECONDS)
    found = None
    for step in range(current - DRIFT_STEPS, current + DRIFT_STEPS + 1):
        # Compare every candidate (constant effort), remember the match.
        if hmac.compare_digest(totp.generate_otp(step), code):
            found = step
    return found


async def consume(
    session: AsyncSession, *, keystore: Keystore, factor: TotpFactor, code: str
) -> bool:
    """Accept ``code`` once: the step must be newer than the last accepted one. The
    conditional update makes two parallel uses of one code yield one success."""
    step = matching_step(await decrypt_secret(keystore, factor), code)
    if step is None or step <= factor.last_step:
        return False
    result = await session.execute(
        update(TotpFactor)
        .where(TotpFactor.user_id == factor.user_id, TotpFactor.last_step < step)
        .values(last_step=step)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return False
    factor.last_step = step
    return True
