"""The API key secret format: prefix, environment, checksum — checked offline."""

from __future__ import annotations

import re

import pytest

from userorg.apikeys import secrets

SCANNER_PATTERN = re.compile(r"\buok_[a-z0-9]{1,12}_[0-9A-Za-z]{40}\b")


def test_generated_secrets_are_recognisable_and_unique() -> None:
    made = [secrets.generate("live") for _ in range(200)]
    assert len({m.secret for m in made}) == 200
    for new in made:
        assert SCANNER_PATTERN.fullmatch(new.secret)
        assert new.secret.startswith(new.prefix)
        assert new.hash == secrets.hash_secret(new.secret)
        assert new.fingerprint == "sha256:" + new.hash[:16]
        secrets.check_format(new.secret, "live")  # does not raise


def test_every_single_character_typo_is_caught() -> None:
    secret = secrets.generate("live").secret
    body_start = len("uok_live_")
    for position in range(body_start, len(secret)):
        for replacement in "0aZ":
            if secret[position] == replacement:
                continue
            typo = secret[:position] + replacement + secret[position + 1 :]
            with pytest.raises(secrets.SecretProblem) as caught:
                secrets.check_format(typo, "live")
            assert caught.value.reason == "credential_malformed"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "credential_malformed"),
        ("uok_", "credential_malformed"),
        ("uok_live_", "credential_malformed"),
        ("uok_live_" + "a" * 39, "credential_malformed"),
        ("uok_live_" + "a" * 41, "credential_malformed"),
        ("uok_live_" + "!" * 40, "credential_malformed"),
        ("ghp_" + "a" * 36, "credential_malformed"),
        ("uok_" + "x" * 5000, "credential_malformed"),
    ],
)
def test_malformed_values(value: str, reason: str) -> None:
    with pytest.raises(secrets.SecretProblem) as caught:
        secrets.check_format(value, "live")
    assert caught.value.reason == reason


def test_other_environment_is_named() -> None:
    secret = secrets.generate("test").secret
    secrets.check_format(secret, "test")
    with pytest.raises(secrets.SecretProblem) as caught:
        secrets.check_format(secret, "live")
    assert caught.value.reason == "key_wrong_environment"
