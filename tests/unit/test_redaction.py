from __future__ import annotations

from userorg.audit.redaction import REDACTED, redact


def test_sensitive_keys_are_masked_recursively() -> None:
    value = {
        "password": "p",
        "newPassword": "p",
        "refreshToken": "t",
        "client_secret": "s",
        "totpSecret": "x",
        "apiKey": "k",
        "code": "123456",
        "recoveryCodes": ["a"],
        "nested": {"webauthnAssertion": {"a": 1}},
        "items": [{"token": "t"}, {"ok": 1}],
        "reasonCode": "policy",
        "tokenType": "Bearer",
        "email": "a@b.c",
    }
    out = redact(value)
    for key in (
        "password",
        "newPassword",
        "refreshToken",
        "client_secret",
        "totpSecret",
        "apiKey",
        "code",
        "recoveryCodes",
    ):
        assert out[key] == REDACTED, key
    assert out["nested"]["webauthnAssertion"] == REDACTED
    assert out["items"] == [{"token": REDACTED}, {"ok": 1}]
    assert out["reasonCode"] == "policy"
    assert out["tokenType"] == "Bearer"
    assert out["email"] == "a@b.c"
