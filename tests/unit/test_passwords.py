from __future__ import annotations

import pytest

from userorg.authn.passwords import PasswordService
from userorg.errors import ValidationFailed

SERVICE = PasswordService(time_cost=1, memory_kib=8192, parallelism=1, min_length=12)


@pytest.mark.parametrize(
    ("password", "problem"),
    [
        ("short1!", "at least 12"),
        ("password1234", "too common"),
        ("qwertyuiop123", "too common"),
        ("Password2025!", "too common"),
        ("aaaaaaaaaaaaaa", "distinct"),
        ("jane.doe-secure-words", "email"),
        ("x" * 300, "at most"),
    ],
)
def test_rules_reject(password: str, problem: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        SERVICE.check_rules(password, email="jane.doe@example.com")
    assert any(problem in p for p in caught.value.details["problems"])
    assert password not in str(caught.value.details)


def test_rules_accept_a_passphrase() -> None:
    SERVICE.check_rules("Correct-Horse-Battery-Staple-42", email="jane@example.com")


async def test_hash_and_verify() -> None:
    hashed = await SERVICE.hash("Correct-Horse-Battery-Staple-42")
    assert hashed.startswith("$argon2id$")
    assert await SERVICE.verify(hashed, "Correct-Horse-Battery-Staple-42")
    assert not await SERVICE.verify(hashed, "wrong")
    assert not await SERVICE.verify(None, "anything")
    assert not await SERVICE.verify("not-a-hash", "anything")
