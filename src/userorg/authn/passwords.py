"""Argon2id password hashing and the password rules.

Hashing runs in a worker thread (it is deliberately slow). Unknown accounts are verified
against a dummy hash so that they cost the same time as a wrong password.
"""

from __future__ import annotations

import asyncio
import functools
from importlib import resources

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from userorg.errors import ValidationFailed

MAX_PASSWORD_LENGTH = 256


@functools.cache
def common_passwords() -> frozenset[str]:
    text = resources.files("userorg").joinpath("data/common-passwords.txt").read_text("utf-8")
    return frozenset(line.strip().lower() for line in text.splitlines() if line.strip())


class PasswordService:
    def __init__(
        self, *, time_cost: int, memory_kib: int, parallelism: int, min_length: int
    ) -> None:
        self._hasher = PasswordHasher(
            time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism
        )
        self.min_length = min_length
        self._dummy_hash = self._hasher.hash("userorg-timing-equaliser")

    def check_rules(self, password: str, *, email: str | None = None) -> None:
        problems: list[str] = []
        if len(password) < self.min_length:
            problems.append(f"must be at least {self.min_length} characters")
        if len(password) > MAX_PASSWORD_LENGTH:
            problems.append(f"must be at most {MAX_PASSWORD_LENGTH} characters")
        lowered = password.lower()
        if lowered in common_passwords() or lowered.rstrip("0123456789!") in common_passwords():
            problems.append("is too common")
        if email:
            local = email.split("@", 1)[0].lower()
            if len(local) >= 4 and local in lowered:
                problems.append("must not contain the email address")
        if len(set(password)) < 4:
            problems.append("must use more distinct characters")
        if problems:
            raise ValidationFailed(
                "The password does not meet the password rules",
                code="weak_password",
                details={"field": "password", "problems": problems},
            )

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """Constant-effort check; ``None`` (no account, no password) still costs one verify."""
        target = password_hash or self._dummy_hash
        ok = await asyncio.to_thread(self._verify_sync, target, password)
        return ok and password_hash is not None

    def _verify_sync(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, password_hash: str) -> bool:
        return self._hasher.check_needs_rehash(password_hash)
