"""Second factors driven the way a user's devices would: a TOTP app (pyotp) and a WebAuthn
authenticator (soft-webauthn on fido2 0.9), speaking the browser's JSON serialisation."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import pyotp
from soft_webauthn import SoftWebauthnDevice

ORIGIN = "http://localhost:8081"


class TotpApp:
    """An authenticator app. Each code is for a step not used before (the server accepts a
    step once): the previous, current and next step are valid, so three codes are available
    at any moment; a fourth waits for the clock."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.totp = pyotp.TOTP(secret)
        self.last_step = 0
        self.recovery_codes: list[str] = []

    def code_now(self) -> str | None:
        """A fresh code if one is available without waiting for the clock."""
        current = int(time.time() // 30)
        step = max(current - 1, self.last_step + 1)
        if step > current + 1:
            return None
        self.last_step = step
        return self.totp.generate_otp(step)

    async def code(self) -> str:
        deadline = time.monotonic() + 40
        while True:
            current = int(time.time() // 30)
            step = max(current - 1, self.last_step + 1)
            if step <= current + 1:
                self.last_step = step
                return self.totp.generate_otp(step)
            assert time.monotonic() < deadline, "clock did not advance"
            await asyncio.sleep(0.25)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Passkey:
    """A software WebAuthn authenticator (one credential)."""

    def __init__(self, origin: str = ORIGIN) -> None:
        self.device = SoftWebauthnDevice()
        self.origin = origin

    def register(self, options: dict[str, Any], *, origin: str | None = None) -> dict[str, Any]:
        public_key = {
            **options,
            "challenge": unb64url(options["challenge"]),
            "user": {**options["user"], "id": unb64url(options["user"]["id"])},
        }
        created = self.device.create({"publicKey": public_key}, origin or self.origin)
        return {
            "id": b64url(created["rawId"]),
            "rawId": b64url(created["rawId"]),
            "type": "public-key",
            "response": {
                "clientDataJSON": b64url(created["response"]["clientDataJSON"]),
                "attestationObject": b64url(created["response"]["attestationObject"]),
                "transports": ["usb"],
            },
            "clientExtensionResults": {},
        }

    def sign(self, options: dict[str, Any], *, origin: str | None = None) -> dict[str, Any]:
        public_key = {**options, "challenge": unb64url(options["challenge"])}
        got = self.device.get({"publicKey": public_key}, origin or self.origin)
        return {
            "id": b64url(got["rawId"]),
            "rawId": b64url(got["rawId"]),
            "type": "public-key",
            "response": {
                "authenticatorData": b64url(got["response"]["authenticatorData"]),
                "clientDataJSON": b64url(got["response"]["clientDataJSON"]),
                "signature": b64url(got["response"]["signature"]),
                "userHandle": b64url(got["response"]["userHandle"]),
            },
            "clientExtensionResults": {},
        }
