"""``userorg seed-demo``: load a realistic demo data set into PostgreSQL, fast.

``--scale`` loads the size of the product's scale target (20,000 orgs, 200,000 users,
500,000 API keys) in a few minutes: rows are generated in Python and streamed with
PostgreSQL's binary ``COPY`` (asyncpg ``copy_records_to_table``), one transaction, then
``ANALYZE``. The shape is what a real platform looks like, not a uniform grid:

- org sizes follow a long tail (weight ``1/(rank+5)``): the largest org holds ~2.4% of the
  users and keys (≈ 4,800 members and 12,000 keys at scale), most orgs have a handful;
- every user is a member of one org, ~10% also of a second one (as ``OrgViewer``);
- roles per membership: the first member is ``OrgAdmin``; then ~10% ``OrgAdmin``, ~5%
  ``BillingAdmin``, ~60% ``Developer``, the rest ``OrgViewer``; every tenth org has a custom
  role ``ml-engineer`` held by ~20% of its members. ``OrgOwner`` is not seeded: it always
  requires MFA, and the seed enrolls no second factors;
- service accounts (one per ~20 keys of the org, role ``Developer``) hold ~80% of the keys,
  members with ``Developer``/``OrgAdmin`` hold the rest as personal keys;
- keys: ~2% revoked, ~2% expired, about half with an expiry in the future; every hundredth org
  is suspended.

Key secrets have the service's format (prefix, environment, checksum) and are stored as the
service stores them (SHA-256, see ``apikeys/secrets.py``), so ``/v1/authorize`` works on
seeded keys. The secrets of a sample of keys that must be allowed (active key, active org,
principal holding ``inference:invoke``) are written to ``--secrets-file`` (mode 0600) for
benchmarks and demos; every other secret is discarded. Seeded users share one demo password
(one Argon2id hash computed once).

This is a bulk loader for demos and benchmarks: it writes no audit events and no outbox rows.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import random
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy.engine import make_url

from userorg.apikeys import secrets as key_secrets

SCALE = {"orgs": 20_000, "users": 200_000, "keys": 500_000}
SMALL = {"orgs": 20, "users": 200, "keys": 500}
DEFAULT_PASSWORD = "Demo-Seed-Passphrase-2024"
CUSTOM_ROLE = "ml-engineer"
CUSTOM_ROLE_SCOPES = ["orgs:read", "api_keys:read", "inference:invoke"]
KEY_HOLDING_ROLES = frozenset({"Developer", "OrgAdmin"})


class SeedError(Exception):
    """The seed cannot run (wrong database, data already there)."""


@dataclass
class SeedReport:
    orgs: int = 0
    users: int = 0
    memberships: int = 0
    role_assignments: int = 0
    custom_roles: int = 0
    service_accounts: int = 0
    api_keys: int = 0
    sampled_secrets: int = 0
    largest_org: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def allocate(total: int, count: int, *, minimum: int) -> list[int]:
    """Split ``total`` over ``count`` buckets with a long tail (weight ``1/(rank+5)``)."""
    if count <= 0:
        return []
    weights = [1.0 / (rank + 5) for rank in range(count)]
    scale = total / sum(weights)
    sizes = [max(minimum, int(w * scale)) for w in weights]
    difference = total - sum(sizes)
    rank = 0
    while difference != 0:
        step = 1 if difference > 0 else -1
        if step > 0 or sizes[rank % count] > minimum:
            sizes[rank % count] += step
            difference -= step
        rank += 1
        if rank > count * 1000:  # cannot honour the minimum: total < count * minimum
            break
    return sizes


_ALPHABET = key_secrets._ALPHABET
_SPACE = 62**key_secrets.RANDOM_LENGTH


def fast_secret(environment: str) -> tuple[str, str, str, str]:
    """A key secret of the service's format: (secret, sha256 hex, prefix, fingerprint).

    The same format and hash as ``secrets.generate`` (checksum, ``sha256(secret)``), from 26
    random bytes in one call instead of 34 ``secrets.choice`` calls (500,000 keys in seconds).
    """
    value = int.from_bytes(os.urandom(27)) % _SPACE
    chars = []
    for _ in range(key_secrets.RANDOM_LENGTH):
        value, digit = divmod(value, 62)
        chars.append(_ALPHABET[digit])
    random_part = "".join(chars)
    head = f"{key_secrets.KEY_PREFIX}{environment}_{random_part}"
    crc = zlib.crc32(head.encode())
    check = []
    for _ in range(key_secrets.CHECKSUM_LENGTH):
        crc, digit = divmod(crc, 62)
        check.append(_ALPHABET[digit])
    secret = head + "".join(reversed(check))
    digest = hashlib.sha256(secret.encode()).hexdigest()
    prefix = (
        f"{key_secrets.KEY_PREFIX}{environment}_{random_part[: key_secrets.DISPLAY_RANDOM_CHARS]}"
    )
    return secret, digest, prefix, key_secrets.fingerprint_of(digest)


def asyncpg_dsn(database_url: str) -> str:
    parsed = make_url(database_url)
    if parsed.get_backend_name() not in {"postgresql", "postgres"}:
        raise SeedError(
            "seed-demo loads PostgreSQL (production mode): set USER_ORG_DATABASE_URL to a "
            "postgresql:// URL"
        )
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


_J_EMPTY_LIST = "[]"
_J_EMPTY_DICT = "{}"


@dataclass
class _Org:
    id: uuid.UUID
    slug: str
    active: bool
    custom_role: bool
    members: list[tuple[uuid.UUID, str]] = field(default_factory=list)  # (user id, role)
    accounts: list[uuid.UUID] = field(default_factory=list)


async def seed(
    database_url: str,
    *,
    orgs: int,
    users: int,
    keys: int,
    environment: str = "live",
    prefix: str = "demo",
    password_hash: str,
    secrets_file: Path | None = None,
    sample: int = 10_000,
    random_seed: int = 42,
    progress: Callable[[str], None] = lambda _message: None,
) -> SeedReport:
    import asyncpg

    if orgs < 1 or users < orgs or keys < orgs:
        raise SeedError("need at least 1 org, and at least as many users and keys as orgs")
    started = time.perf_counter()
    rng = random.Random(random_seed)
    now = dt.datetime.now(dt.UTC)
    report = SeedReport()
    connection = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        revision = (
            await connection.fetchval("SELECT version_num FROM alembic_version LIMIT 1")
            if await connection.fetchval("SELECT to_regclass('alembic_version')")
            else None
        )
        if revision is None:
            raise SeedError("the database has no schema: run `userorg migrate` first")
        first_slug = f"{prefix}-{0:05d}"
        if await connection.fetchval("SELECT 1 FROM organizations WHERE slug = $1", first_slug):
            raise SeedError(
                f"demo data with the prefix {prefix!r} is already loaded (org {first_slug}); "
                "use another --prefix"
            )
        user_sizes = allocate(users, orgs, minimum=1)
        key_sizes = allocate(keys, orgs, minimum=1)
        org_list = [
            _Org(
                id=uuid.uuid4(),
                slug=f"{prefix}-{index:05d}",
                active=index % 100 != 99,
                custom_role=index % 10 == 0,
            )
            for index in range(orgs)
        ]
        async with connection.transaction():
            progress(f"organizations: {orgs:,}")
            await connection.copy_records_to_table(
                "organizations",
                columns=[
                    "id", "slug", "name", "billing_owner_email", "status", "status_reason",
                    "mfa_required_roles", "settings", "version", "created_at", "updated_at",
                ],
                records=(
                    (
                        org.id, org.slug, f"Demo Org {index:05d}",
                        f"billing@{org.slug}.example.com",
                        "active" if org.active else "suspended",
                        None if org.active else "demo: suspended org",
                        _J_EMPTY_LIST, _J_EMPTY_DICT, 1, now, now,
                    )
                    for index, org in enumerate(org_list)
                ),
            )  # fmt: skip
            report.orgs = orgs
            await connection.copy_records_to_table(
                "custom_roles",
                columns=[
                    "id", "org_id", "name", "description", "scopes", "version", "created_at",
                    "updated_at",
                ],
                records=[
                    (
                        uuid.uuid4(), org.id, CUSTOM_ROLE, "Runs inference, reads keys",
                        orjson.dumps(CUSTOM_ROLE_SCOPES).decode(), 1, now, now,
                    )
                    for org in org_list
                    if org.custom_role
                ],
            )  # fmt: skip
            report.custom_roles = sum(org.custom_role for org in org_list)

            # Users, their primary memberships and roles.
            progress(f"users: {users:,}")
            user_rows: list[tuple[Any, ...]] = []
            member_rows: list[tuple[Any, ...]] = []
            role_rows: list[tuple[Any, ...]] = []
            number = 0
            for org, size in zip(org_list, user_sizes, strict=True):
                for position in range(size):
                    user_id = uuid.uuid4()
                    user_rows.append(
                        (
                            user_id, f"user{number:06d}@{org.slug}.example.com",
                            f"Demo User {number:06d}", password_hash, "active", False, now, 1,
                            now, now,
                        )
                    )  # fmt: skip
                    number += 1
                    member_rows.append(
                        (uuid.uuid4(), org.id, user_id, "active", _J_EMPTY_DICT, 1, now, now)
                    )
                    if position == 0:
                        role = "OrgAdmin"
                    else:
                        draw = rng.random()
                        role = (
                            "OrgAdmin" if draw < 0.10 else "BillingAdmin" if draw < 0.15
                            else "Developer" if draw < 0.75 else "OrgViewer"
                        )  # fmt: skip
                    role_rows.append((uuid.uuid4(), org.id, "user", user_id, role, now))
                    if org.custom_role and rng.random() < 0.2:
                        role_rows.append((uuid.uuid4(), org.id, "user", user_id, CUSTOM_ROLE, now))
                    org.members.append((user_id, role))
            # ~10% of the users are also members of a second org, as viewers.
            if orgs > 1:
                for org_index, org in enumerate(org_list):
                    for user_id, _role in org.members[:]:
                        if rng.random() < 0.10:
                            other = org_list[(org_index + rng.randrange(1, orgs)) % orgs]
                            member_rows.append(
                                (uuid.uuid4(), other.id, user_id, "active", _J_EMPTY_DICT, 1, now,
                                 now)
                            )  # fmt: skip
                            role_rows.append(
                                (uuid.uuid4(), other.id, "user", user_id, "OrgViewer", now)
                            )
            await connection.copy_records_to_table(
                "users",
                columns=[
                    "id", "email", "display_name", "password_hash", "status",
                    "is_platform_admin", "password_changed_at", "version", "created_at",
                    "updated_at",
                ],
                records=user_rows,
            )  # fmt: skip
            report.users = len(user_rows)
            del user_rows
            progress(f"memberships: {len(member_rows):,}")
            await connection.copy_records_to_table(
                "memberships",
                columns=[
                    "id", "org_id", "user_id", "status", "attributes", "version", "created_at",
                    "updated_at",
                ],
                records=member_rows,
            )  # fmt: skip
            report.memberships = len(member_rows)
            del member_rows

            # Service accounts (Developer), one per ~20 keys of the org.
            account_rows: list[tuple[Any, ...]] = []
            for org, key_count in zip(org_list, key_sizes, strict=True):
                for index in range(max(1, key_count // 20)):
                    account_id = uuid.uuid4()
                    org.accounts.append(account_id)
                    account_rows.append(
                        (account_id, org.id, f"svc-{index:04d}", "Demo workload", "active", 1,
                         now, now)
                    )  # fmt: skip
                    role_rows.append(
                        (uuid.uuid4(), org.id, "service_account", account_id, "Developer", now)
                    )
            progress(f"service accounts: {len(account_rows):,}")
            await connection.copy_records_to_table(
                "service_accounts",
                columns=[
                    "id", "org_id", "name", "description", "status", "version", "created_at",
                    "updated_at",
                ],
                records=account_rows,
            )  # fmt: skip
            report.service_accounts = len(account_rows)
            del account_rows
            progress(f"role assignments: {len(role_rows):,}")
            await connection.copy_records_to_table(
                "role_assignments",
                columns=["id", "org_id", "principal_type", "principal_id", "role_name",
                         "created_at"],
                records=role_rows,
            )  # fmt: skip
            report.role_assignments = len(role_rows)
            del role_rows

            # API keys, streamed.
            progress(f"api keys: {keys:,}")
            stride = max(1, keys // max(1, sample))
            sampled: list[str] = []
            expires_future = now + dt.timedelta(days=90)
            expired = now - dt.timedelta(days=1)
            scopes_json = orjson.dumps(["inference:invoke"]).decode()
            annotations_json = orjson.dumps({"seed": "demo"}).decode()

            def key_records() -> Iterator[tuple[Any, ...]]:
                serial = 0
                for org, key_count in zip(org_list, key_sizes, strict=True):
                    holders = [uid for uid, role in org.members if role in KEY_HOLDING_ROLES]
                    for index in range(key_count):
                        secret, digest, key_prefix, fingerprint = fast_secret(environment)
                        if holders and rng.random() < 0.2:
                            principal_type, principal_id = "user", rng.choice(holders)
                        else:
                            principal_type = "service_account"
                            principal_id = org.accounts[index % len(org.accounts)]
                        draw = rng.random()
                        status, revoked_at, reason, expires_at = "active", None, None, None
                        if draw < 0.02:
                            status, revoked_at, reason = "revoked", now, "demo: revoked"
                        elif draw < 0.04:
                            expires_at = expired
                        elif draw < 0.5:
                            expires_at = expires_future
                        usable = status == "active" and expires_at is not expired and org.active
                        if usable and serial % stride == 0 and len(sampled) < sample:
                            sampled.append(f"{secret}\t{org.id}\t{principal_type}")
                        serial += 1
                        yield (
                            uuid.uuid4(), org.id, principal_type, principal_id, f"key-{index}",
                            key_prefix, fingerprint, digest, scopes_json, annotations_json,
                            status, expires_at, now, now, revoked_at, reason, 0, 1,
                        )  # fmt: skip

            await connection.copy_records_to_table(
                "api_keys",
                columns=[
                    "id", "org_id", "principal_type", "principal_id", "name", "prefix",
                    "fingerprint", "secret_hash", "scopes", "annotations", "status",
                    "expires_at", "created_at", "updated_at", "revoked_at", "revoked_reason",
                    "usage_count", "version",
                ],
                records=key_records(),
            )  # fmt: skip
            report.api_keys = keys
        progress("analyze")
        for table in (
            "organizations", "users", "memberships", "custom_roles", "role_assignments",
            "service_accounts", "api_keys",
        ):  # fmt: skip
            await connection.execute(f"ANALYZE {table}")
    finally:
        await connection.close()
    if secrets_file is not None:
        secrets_file.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(secrets_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write("\n".join(sampled) + "\n")
    report.sampled_secrets = len(sampled)
    largest = org_list[0]
    report.largest_org = {
        "orgId": str(largest.id),
        "slug": largest.slug,
        "members": len(largest.members),
        "apiKeys": key_sizes[0],
        "serviceAccounts": len(largest.accounts),
    }
    report.seconds = time.perf_counter() - started
    return report
