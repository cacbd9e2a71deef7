"""Secrets never reach the audit trail: sensitive keys are masked, recursively."""

from __future__ import annotations

from typing import Any

REDACTED = "[REDACTED]"
_SENSITIVE_PARTS = (
    "password",
    "secret",
    "token",
    "totp",
    "otp",
    "recoverycode",
    "credential",
    "apikey",
    "privatekey",
    "authorization",
    "cookie",
    "pepper",
    "assertion",
)
_SENSITIVE_EXACT = {"code", "codes", "key"}
# Identifiers and timestamps whose names contain a sensitive word but carry no secret.
_ALLOWED = {"tokentype", "reasoncode", "apikeyid", "apikeyids", "previoussecretexpiresat"}


def is_sensitive_key(key: str) -> bool:
    normalized = key.replace("_", "").replace("-", "").lower()
    if normalized in _ALLOWED:
        return False
    return normalized in _SENSITIVE_EXACT or any(p in normalized for p in _SENSITIVE_PARTS)


def redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            str(k): (REDACTED if is_sensitive_key(str(k)) else redact(v)) for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)
