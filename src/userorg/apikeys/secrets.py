"""The API key secret format: ``uok_<environment>_<34 random base62><6 base62 CRC32>``.

- ``uok_`` is fixed, so secret scanners recognise a leaked key with the pattern
  ``uok_[a-z0-9]{1,12}_[0-9A-Za-z]{40}``;
- the environment part (``live`` by default, ``USER_ORG_API_KEY_ENVIRONMENT``) keeps keys of a
  test deployment from being tried against production;
- 34 base62 characters carry about 202 bits of entropy;
- the last 6 characters are the CRC32 of everything before them, base62-encoded, so a typo or
  a truncated key is rejected offline, without a database read (GitHub's token format does
  the same).

Stored: only ``sha256(secret)`` (see docs/api-keys.md for why not an HMAC with a pepper).
"""

from __future__ import annotations

import hashlib
import secrets as _random
import zlib
from dataclasses import dataclass
from typing import Final

KEY_PREFIX: Final = "uok_"
_ALPHABET: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_INDEX: Final = {c: i for i, c in enumerate(_ALPHABET)}
RANDOM_LENGTH: Final = 34
CHECKSUM_LENGTH: Final = 6
BODY_LENGTH: Final = RANDOM_LENGTH + CHECKSUM_LENGTH
MAX_SECRET_LENGTH: Final = len(KEY_PREFIX) + 12 + 1 + BODY_LENGTH
DISPLAY_RANDOM_CHARS: Final = 6


def _base62(value: int, width: int) -> str:
    out = []
    for _ in range(width):
        value, digit = divmod(value, 62)
        out.append(_ALPHABET[digit])
    return "".join(reversed(out))


def checksum(text: str) -> str:
    return _base62(zlib.crc32(text.encode()), CHECKSUM_LENGTH)


@dataclass(frozen=True, slots=True)
class NewSecret:
    secret: str
    hash: str
    prefix: str  # safe to display: identifies the key in lists
    fingerprint: str


def generate(environment: str) -> NewSecret:
    random_part = "".join(_random.choice(_ALPHABET) for _ in range(RANDOM_LENGTH))
    head = f"{KEY_PREFIX}{environment}_{random_part}"
    secret = head + checksum(head)
    digest = hash_secret(secret)
    return NewSecret(
        secret=secret,
        hash=digest,
        prefix=f"{KEY_PREFIX}{environment}_{random_part[:DISPLAY_RANDOM_CHARS]}",
        fingerprint=fingerprint_of(digest),
    )


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def fingerprint_of(digest: str) -> str:
    """A short, public identifier of a secret: whoever holds a leaked key can match it."""
    return f"sha256:{digest[:16]}"


def looks_like_api_key(value: str) -> bool:
    """Cheap dispatch test: the value claims to be an API key (it may still be malformed)."""
    return value.startswith(KEY_PREFIX)


class SecretProblem(ValueError):
    """Why a presented string is not a usable key of this deployment (no database involved)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


MALFORMED = SecretProblem("credential_malformed", "The API key is malformed")
BAD_CHECKSUM = SecretProblem("credential_malformed", "The API key checksum does not match")


def check_format(secret: str, environment: str) -> None:
    """Raise :class:`SecretProblem` unless ``secret`` is well formed for ``environment``."""
    if len(secret) > MAX_SECRET_LENGTH or not secret.startswith(KEY_PREFIX):
        raise MALFORMED
    env, sep, body = secret[len(KEY_PREFIX) :].partition("_")
    if not sep or len(body) != BODY_LENGTH or not env:
        raise MALFORMED
    if env != environment:
        raise SecretProblem("key_wrong_environment", "The API key belongs to another environment")
    head = secret[: len(secret) - CHECKSUM_LENGTH]
    expected = checksum(head)
    if not _random.compare_digest(expected, secret[-CHECKSUM_LENGTH:]):
        for char in body:
            if char not in _INDEX:
                raise MALFORMED
        raise BAD_CHECKSUM
