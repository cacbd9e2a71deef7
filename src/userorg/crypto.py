"""Small primitives for opaque secrets: generation, hashing at rest, constant-time comparison."""

from __future__ import annotations

import hashlib
import hmac
import secrets


def random_token(prefix: str, *, nbytes: int = 32) -> str:
    """A high-entropy opaque secret with a recognisable prefix, e.g. ``uort_…``."""
    return f"{prefix}_{secrets.token_urlsafe(nbytes)}"


def sha256_hex(value: str) -> str:
    """How high-entropy secrets are stored: no salt needed, the secret itself is random."""
    return hashlib.sha256(value.encode()).hexdigest()


def constant_time_equals(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
