"""The gateway decision: is this credential usable, and may it do this action on this resource?

Served from per-process caches on a hit: key records by SHA-256 of the secret, principal state
(status, roles, scopes in the key's org) and org status. A miss reads the database through the
read engine (one joined query for key + principal + org, one for the role scopes). Unknown
hashes are cached negatively. Nothing is written per request: key usage (``lastUsedAt``,
``usageCount``) and denial audit events are buffered and flushed in batches.

Staleness is bounded three ways (see docs/api-keys.md):
- every committed change that can turn an allow into a deny is published on the invalidation
  bus after commit (``gateway.invalidation`` notes them during the flush) and applied here at
  once — locally before the bus round trip, so the replica that made the change never lags;
- entries older than ``USER_ORG_GATEWAY_CACHE_TTL_SECONDS`` are reloaded (a lost message);
- while the bus is unhealthy (lost Redis subscription) the caches are not trusted: every
  request reads the database, and the bus's reset clears everything when it resubscribes.
A load that raced with an invalidation is answered but not stored (an epoch counter).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
import time
import uuid
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Final

import structlog
from sqlalchemy import Table, and_, bindparam, case, or_, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session as SyncSession

from userorg.apikeys import secrets
from userorg.apikeys.models import ApiKey
from userorg.audit import recorder as audit
from userorg.authn.models import Session as LoginSession
from userorg.authn.tokens import InvalidToken, TokenService
from userorg.authz.catalogue import ALWAYS_MFA_ROLES, ORG_SCOPES, SYSTEM_ROLES
from userorg.authz.engine import AuthzRequest, PolicyEngine
from userorg.context import ANONYMOUS, Actor
from userorg.crypto import constant_time_equals
from userorg.db import UnitOfWork, UTCDateTime
from userorg.gateway.budget import BudgetGate, NoBudgets
from userorg.gateway.invalidation import ALL, SKIP_OPTION, Item, take_pending
from userorg.gateway.schemas import AuthorizeIn, ValidateApiKeyIn
from userorg.orgs.models import Organization
from userorg.platform.bus import InvalidationBus
from userorg.roles.models import CustomRole, RoleAssignment
from userorg.serviceaccounts.models import ServiceAccount
from userorg.telemetry.metrics import GATEWAY_STATS
from userorg.users.models import Membership, User

log = structlog.get_logger("userorg.gateway")
_STATS = GATEWAY_STATS.counts

CHANNEL: Final = "gateway"
MAX_DENIAL_GROUPS: Final = 10_000
MAX_REFRESHES: Final = 8  # background reloads of aged entries at once

MESSAGES: Final[dict[str, str]] = {
    "credential_malformed": "The API key is malformed",
    "key_wrong_environment": "The API key belongs to another environment",
    "key_unknown": "The API key is not valid",
    "key_revoked": "The API key has been revoked",
    "key_expired": "The API key has expired",
    "key_rotated": "The API key was rotated and its grace period is over",
    "principal_suspended": "The key's principal is suspended or disabled",
    "principal_deleted": "The key's principal no longer exists",
    "principal_removed": "The key's user is no longer a member of the organization",
    "org_suspended": "The key's organization is suspended",
    "org_deleted": "The key's organization is deleted",
    "org_mismatch": "The API key belongs to another organization",
}

# Policy reasons, in the gateway's vocabulary.
_POLICY_REASONS: Final[dict[str, str]] = {
    "credential_scope_missing": "scope_missing",
    "membership_suspended": "principal_suspended",
    "not_a_member": "principal_removed",
    "org_pending_delete": "org_deleted",
    "unknown_permission": "unknown_action",
}


# (org id, key id, actor type, actor id, reason) -> [count, first, last, action]
DenialGroup = tuple[str | None, str | None, str, str | None, str]


@dataclass(slots=True)
class KeyEntry:
    key_id: str
    org_id: str
    principal_type: str
    principal_id: str
    scopes: frozenset[str]
    status: str  # active | revoked
    expires_at: float | None  # epoch seconds
    expires_at_iso: str | None
    is_previous: bool  # this hash is the previous secret of a rotated key
    previous_until: float | None
    loaded_at: float
    # (action, resource) -> (principal state, org state, policy revision, allow, reason, scopes)
    decisions: dict[tuple[str, str], tuple[Any, ...]] = field(default_factory=dict)


@dataclass(slots=True)
class PrincipalState:
    status: str  # active | disabled | suspended | deleted | removed
    membership_status: str | None
    roles: frozenset[str]
    scopes: frozenset[str]
    is_platform_admin: bool
    loaded_at: float
    # A user's roles and scopes without the roles that require a second factor in the org
    # (OrgOwner and the org's mfaRequiredRoles): what an API key or a session without MFA
    # may use, as the admin API's load_grants does.
    roles_without_mfa: frozenset[str] = frozenset()
    scopes_without_mfa: frozenset[str] = frozenset()

    def grants(self, *, mfa: bool) -> tuple[frozenset[str], frozenset[str]]:
        if mfa:
            return self.roles, self.scopes
        return self.roles_without_mfa, self.scopes_without_mfa


@dataclass(slots=True)
class OrgState:
    status: str  # active | suspended | pending_delete | missing
    loaded_at: float


_k: Table = ApiKey.__table__  # type: ignore[assignment]
_o = Organization.__table__
_sa = ServiceAccount.__table__
_u = User.__table__
_m = Membership.__table__
_ra = RoleAssignment.__table__
_cr = CustomRole.__table__

_KEY_QUERY = (
    select(
        _k.c.id,
        _k.c.org_id,
        _k.c.principal_type,
        _k.c.principal_id,
        _k.c.scopes,
        _k.c.status,
        _k.c.expires_at,
        _k.c.secret_hash,
        _k.c.previous_expires_at,
        _o.c.status.label("org_status"),
        _o.c.mfa_required_roles.label("org_mfa_roles"),
        _sa.c.status.label("sa_status"),
        _sa.c.org_id.label("sa_org_id"),
        _sa.c.deleted_at.label("sa_deleted_at"),
        _u.c.status.label("user_status"),
        _u.c.is_platform_admin,
        _m.c.status.label("membership_status"),
        _ra.c.role_name,
        _cr.c.scopes.label("role_scopes"),
    )
    .select_from(
        _k.join(_o, _o.c.id == _k.c.org_id)
        .outerjoin(
            _sa, and_(_k.c.principal_type == "service_account", _sa.c.id == _k.c.principal_id)
        )
        .outerjoin(_u, and_(_k.c.principal_type == "user", _u.c.id == _k.c.principal_id))
        .outerjoin(
            _m,
            and_(
                _k.c.principal_type == "user",
                _m.c.user_id == _k.c.principal_id,
                _m.c.org_id == _k.c.org_id,
            ),
        )
        # One row per role of the principal in the key's org: a miss is one round trip.
        .outerjoin(
            _ra,
            and_(
                _ra.c.org_id == _k.c.org_id,
                _ra.c.principal_type == _k.c.principal_type,
                _ra.c.principal_id == _k.c.principal_id,
            ),
        )
        .outerjoin(_cr, and_(_cr.c.org_id == _ra.c.org_id, _cr.c.name == _ra.c.role_name))
    )
    .where(or_(_k.c.secret_hash == bindparam("h"), _k.c.previous_secret_hash == bindparam("h")))
)
_SA_QUERY = select(
    _sa.c.status.label("sa_status"),
    _sa.c.org_id.label("sa_org_id"),
    _sa.c.deleted_at.label("sa_deleted_at"),
).where(_sa.c.id == bindparam("pid", type_=_sa.c.id.type))
_USER_QUERY = (
    select(
        _u.c.status.label("user_status"),
        _u.c.is_platform_admin,
        _m.c.status.label("membership_status"),
    )
    .select_from(
        _u.outerjoin(
            _m,
            and_(_m.c.user_id == _u.c.id, _m.c.org_id == bindparam("org", type_=_m.c.org_id.type)),
        )
    )
    .where(_u.c.id == bindparam("pid", type_=_u.c.id.type))
)
_ROLES_QUERY = (
    select(_ra.c.role_name, _cr.c.scopes)
    .select_from(
        _ra.outerjoin(_cr, and_(_cr.c.org_id == _ra.c.org_id, _cr.c.name == _ra.c.role_name))
    )
    .where(
        _ra.c.org_id == bindparam("org", type_=_ra.c.org_id.type),
        _ra.c.principal_type == bindparam("ptype"),
        _ra.c.principal_id == bindparam("pid", type_=_ra.c.principal_id.type),
    )
)
_ORG_QUERY = select(_o.c.status, _o.c.mfa_required_roles).where(
    _o.c.id == bindparam("org", type_=_o.c.id.type)
)
_USER_ORGS_QUERY = (
    select(_m.c.org_id)
    .where(_m.c.user_id == bindparam("pid", type_=_m.c.user_id.type), _m.c.status != "removed")
    .limit(2)
)
_USAGE_UPDATE = (
    _k.update()
    .where(_k.c.id == bindparam("kid", type_=_k.c.id.type))
    .values(
        usage_count=_k.c.usage_count + bindparam("n"),
        last_used_at=case(
            (
                or_(
                    _k.c.last_used_at.is_(None),
                    _k.c.last_used_at < bindparam("t", type_=UTCDateTime()),
                ),
                bindparam("t", type_=UTCDateTime()),
            ),
            else_=_k.c.last_used_at,
        ),
    )
    .execution_options(**{SKIP_OPTION: True})
)


_USAGE_UPDATE_PG = text(
    "UPDATE api_keys AS k SET usage_count = k.usage_count + v.n, "
    "last_used_at = GREATEST(COALESCE(k.last_used_at, to_timestamp(v.t)), to_timestamp(v.t)) "
    "FROM unnest(CAST(:ids AS text[]), CAST(:ns AS bigint[]), CAST(:ts AS float8[])) "
    "AS v(id, n, t) WHERE k.id = CAST(v.id AS uuid)"
)


def _epoch(value: dt.datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def _iso(value: dt.datetime | None) -> str | None:
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z") if value else None


def _principal_from_row(row: Any, principal_type: str, org_id: str, now: float) -> PrincipalState:
    if principal_type == "service_account":
        if (
            row["sa_status"] is None
            or row["sa_deleted_at"] is not None
            or str(row["sa_org_id"]) != org_id
        ):
            return PrincipalState("deleted", None, frozenset(), frozenset(), False, now)
        return PrincipalState(
            row["sa_status"], row["sa_status"], frozenset(), frozenset(), False, now
        )
    if row["user_status"] is None:
        return PrincipalState("deleted", None, frozenset(), frozenset(), False, now)
    membership = row["membership_status"]
    admin = bool(row["is_platform_admin"])
    if membership is None or membership == "removed":
        return PrincipalState("removed", None, frozenset(), frozenset(), admin, now)
    status = row["user_status"] if row["user_status"] != "active" else membership
    return PrincipalState(status, membership, frozenset(), frozenset(), admin, now)


def _scopes_of(rows: list[Any]) -> tuple[frozenset[str], frozenset[str]]:
    roles: set[str] = set()
    scopes: set[str] = set()
    for name, custom_scopes in rows:
        roles.add(name)
        system = SYSTEM_ROLES.get(name)
        if system is not None and name != "PlatformAdmin":
            scopes |= system
        elif custom_scopes:
            scopes |= set(custom_scopes)
    return frozenset(roles), frozenset(scopes) & ORG_SCOPES


def _fill_grants(principal: PrincipalState, rows: list[tuple[str, Any]], mfa_required: Any) -> None:
    """Roles and scopes from (role name, custom role scopes) rows; for users also without the
    roles that require MFA in the org."""
    principal.roles, principal.scopes = _scopes_of(rows)
    required = ALWAYS_MFA_ROLES | frozenset(mfa_required or ())
    principal.roles_without_mfa, principal.scopes_without_mfa = _scopes_of(
        [row for row in rows if row[0] not in required]
    )


@dataclass(slots=True)
class Resolved:
    key: KeyEntry | None
    principal: PrincipalState | None
    org: OrgState | None


class Gateway:
    def __init__(
        self,
        *,
        read_engine: AsyncEngine,
        session_factory: async_sessionmaker[AsyncSession],
        read_session_factory: async_sessionmaker[AsyncSession],
        uow_factory: Any,
        policy: PolicyEngine,
        bus: InvalidationBus,
        tokens: TokenService,
        environment: str,
        cache_ttl: float,
        negative_ttl: float,
        max_entries: int,
        decision_ttl: int,
        flush_interval: float,
        budgets: BudgetGate | None = None,
    ) -> None:
        self._read_engine = read_engine
        self._read_sessions = read_session_factory
        self._uow_factory = uow_factory
        self.policy = policy
        self._bus = bus
        self._tokens = tokens
        self._environment = environment
        self._ttl = cache_ttl
        self._negative_ttl = negative_ttl
        self._max_entries = max_entries
        self._decision_ttl = decision_ttl
        self._flush_interval = flush_interval
        self.budgets: BudgetGate = budgets or NoBudgets()
        self._raw_key_sql: str | None = None
        self._raw_key_names: tuple[str, ...] = ()
        self._raw_key_params: dict[str, Any] = {}
        if read_engine.dialect.name == "postgresql":
            compiled = _KEY_QUERY.compile(dialect=read_engine.dialect)
            self._raw_key_sql = str(compiled)
            self._raw_key_names = tuple(compiled.positiontup or ())
            self._raw_key_params = dict(compiled.construct_params({"h": ""}))
        self._keys: dict[str, KeyEntry] = {}
        self._hashes_by_key: dict[str, set[str]] = {}
        self._negative: dict[str, float] = {}
        self._principals: dict[tuple[str, str], PrincipalState] = {}
        self._orgs_by_principal: dict[str, set[str]] = {}
        self._orgs: dict[str, OrgState] = {}
        self._epoch = 0
        self._inflight: dict[str, asyncio.Future[Resolved]] = {}
        self._refreshing: set[str] = set()
        self._refresh_tasks: set[asyncio.Task[None]] = set()
        self._usage: dict[str, list[Any]] = {}
        self._denials: dict[DenialGroup, list[Any]] = {}
        self._denials_dropped = 0
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        bus.subscribe(CHANNEL, self._on_message)
        bus.on_reset(self.clear)

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self._stop.clear()
        self._task = asyncio.create_task(self._flush_loop(), name="gateway-flush")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task
            self._task = None
        with contextlib.suppress(Exception):
            await self.flush()

    # -- invalidation ----------------------------------------------------------------------
    def clear(self) -> None:
        self._epoch += 1
        self._keys.clear()
        self._hashes_by_key.clear()
        self._negative.clear()
        self._principals.clear()
        self._orgs_by_principal.clear()
        self._orgs.clear()

    def apply(self, items: set[Item] | list[Item]) -> None:
        """Drop what the items name (``key``, ``principal``, ``org`` or ``all``)."""
        self._epoch += 1
        for kind, ident in items:
            if kind == "key":
                for digest in self._hashes_by_key.pop(ident, ()):
                    self._keys.pop(digest, None)
            elif kind == "principal":
                for org_id in self._orgs_by_principal.pop(ident, ()):
                    self._principals.pop((org_id, ident), None)
            elif kind == "org":
                self._orgs.pop(ident, None)
                for pair in [p for p in self._principals if p[0] == ident]:
                    del self._principals[pair]
            else:
                self.clear()
                return

    async def _on_message(self, message: dict[str, Any]) -> None:
        items = message.get("items")
        if not isinstance(items, list):
            self.apply([ALL])
            return
        self.apply([(str(kind), str(ident)) for kind, ident in items])

    async def publish_session_changes(self, session: SyncSession) -> None:
        """Commit hook: apply here at once, then tell every other replica."""
        items = take_pending(session)
        if not items:
            return
        self.apply(items)
        try:
            # Bounded: when Redis is unreachable the other replicas have lost their
            # subscription too and distrust their caches; the change must not wait on it.
            async with asyncio.timeout(0.5):
                await self._bus.publish(CHANNEL, {"items": sorted(items)})
        except Exception as error:
            log.warning("invalidation_publish_failed", error=f"{type(error).__name__}: {error}")

    def _policy_revision(self) -> object:
        """The loaded policy's revision (a memoised answer from another revision is stale)."""
        policy_set = getattr(self.policy, "policy", None)
        return getattr(policy_set, "revision", None)

    def _raw_key_args(self, digest: str) -> list[Any]:
        params = self._raw_key_params
        return [digest if name == "h" else params[name] for name in self._raw_key_names]

    # -- lookups ---------------------------------------------------------------------------
    def _trusted(self) -> bool:
        return self._ttl > 0 and self._bus.healthy

    async def resolve(self, digest: str) -> Resolved:
        now = time.monotonic()
        if not self._trusted():
            _STATS[("cache", "bypass")] += 1
            return await self._load(digest, store=False)
        key = self._keys.get(digest)
        if key is not None:
            principal = self._principals.get((key.org_id, key.principal_id))
            org = self._orgs.get(key.org_id)
            if principal is not None and org is not None:
                oldest = min(key.loaded_at, principal.loaded_at, org.loaded_at)
                if now - oldest < self._ttl:
                    _STATS[("cache", "hit")] += 1
                    return Resolved(key, principal, org)
                if now - oldest < 2 * self._ttl and self._refresh_soon(digest):
                    # Past the TTL backstop: answer from the entry once more while one
                    # background reload replaces it (no stampede of synchronous misses when
                    # many entries age out together). Past twice the TTL: a plain miss.
                    _STATS[("cache", "stale")] += 1
                    return Resolved(key, principal, org)
        else:
            seen = self._negative.get(digest)
            if seen is not None and now - seen < self._negative_ttl:
                _STATS[("cache", "hit")] += 1
                return Resolved(None, None, None)
        _STATS[("cache", "miss")] += 1
        return await self._load_once(digest)

    async def _load_once(self, digest: str) -> Resolved:
        """Concurrent misses for one hash share one database read."""
        pending = self._inflight.get(digest)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Resolved] = asyncio.get_running_loop().create_future()
        self._inflight[digest] = future
        try:
            result = await self._load(digest, store=True)
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # retrieved: waiters re-raise it, nobody else must log it
            raise
        else:
            future.set_result(result)
        finally:
            self._inflight.pop(digest, None)
        return result

    def _refresh_soon(self, digest: str) -> bool:
        """Start (at most ``MAX_REFRESHES`` at once) a background reload of an aged entry."""
        if digest in self._refreshing:
            return True
        if len(self._refreshing) >= MAX_REFRESHES:
            return False
        self._refreshing.add(digest)
        task = asyncio.get_running_loop().create_task(self._refresh(digest))
        self._refresh_tasks.add(task)
        task.add_done_callback(self._refresh_tasks.discard)
        return True

    async def _refresh(self, digest: str) -> None:
        try:
            await self._load_once(digest)
        except Exception as error:
            log.warning("gateway_refresh_failed", error=f"{type(error).__name__}: {error}")
        finally:
            self._refreshing.discard(digest)

    async def _load(self, digest: str, *, store: bool) -> Resolved:
        epoch = self._epoch
        now = time.monotonic()
        async with self._read_engine.connect() as connection:
            rows: list[Any]
            if self._raw_key_sql is not None:
                # PostgreSQL: the compiled statement straight to asyncpg (the SQLAlchemy
                # execution and result layers cost more CPU than the query itself).
                raw = await connection.get_raw_connection()
                driver: Any = raw.driver_connection
                rows = await driver.fetch(self._raw_key_sql, *self._raw_key_args(digest))
            else:
                rows = [r._mapping for r in await connection.execute(_KEY_QUERY, {"h": digest})]
        if not rows:
            if store and epoch == self._epoch:
                self._remember_negative(digest, now)
            return Resolved(None, None, None)
        row = rows[0]
        org_id = str(row["org_id"])
        principal_id = str(row["principal_id"])
        is_previous = not constant_time_equals(row["secret_hash"], digest)
        key = KeyEntry(
            key_id=str(row["id"]),
            org_id=org_id,
            principal_type=row["principal_type"],
            principal_id=principal_id,
            scopes=frozenset(row["scopes"] or ()),
            status=row["status"],
            expires_at=_epoch(row["expires_at"]),
            expires_at_iso=_iso(row["expires_at"]),
            is_previous=is_previous,
            previous_until=_epoch(row["previous_expires_at"]) if is_previous else None,
            loaded_at=now,
        )
        principal = _principal_from_row(row, row["principal_type"], org_id, now)
        if principal.status not in {"deleted", "removed"}:
            _fill_grants(
                principal,
                [(r["role_name"], r["role_scopes"]) for r in rows if r["role_name"] is not None],
                row["org_mfa_roles"],
            )
        org = OrgState(row["org_status"], now)
        if store and epoch == self._epoch:
            self._remember(digest, key, principal, org)
        return Resolved(key, principal, org)

    async def principal_state(
        self, *, org_id: uuid.UUID, principal_type: str, principal_id: uuid.UUID
    ) -> tuple[PrincipalState, OrgState]:
        """State of a principal and its org (for access tokens), through the same caches."""
        now = time.monotonic()
        trusted = self._trusted()
        org_key, pid = str(org_id), str(principal_id)
        if trusted:
            principal = self._principals.get((org_key, pid))
            org = self._orgs.get(org_key)
            if (
                principal is not None
                and org is not None
                and now - principal.loaded_at < self._ttl
                and now - org.loaded_at < self._ttl
            ):
                return principal, org
        epoch = self._epoch
        async with self._read_engine.connect() as connection:
            org_row = (await connection.execute(_ORG_QUERY, {"org": org_id})).first()
            org = OrgState(org_row.status if org_row is not None else "missing", now)
            mfa_roles = org_row.mfa_required_roles if org_row is not None else None
            query = _SA_QUERY if principal_type == "service_account" else _USER_QUERY
            found = (await connection.execute(query, {"pid": principal_id, "org": org_id})).first()
            row = found._mapping if found is not None else None
            if row is None:
                principal = PrincipalState("deleted", None, frozenset(), frozenset(), False, now)
            else:
                principal = _principal_from_row(row, principal_type, org_key, now)
            if principal.status not in {"deleted", "removed"}:
                role_rows = await connection.execute(
                    _ROLES_QUERY, {"org": org_id, "ptype": principal_type, "pid": principal_id}
                )
                _fill_grants(principal, [(r[0], r[1]) for r in role_rows], mfa_roles)
        if trusted and epoch == self._epoch:
            self._principals[(org_key, pid)] = principal
            self._orgs_by_principal.setdefault(pid, set()).add(org_key)
            self._orgs[org_key] = org
        return principal, org

    def _remember(
        self, digest: str, key: KeyEntry, principal: PrincipalState, org: OrgState
    ) -> None:
        # Up to 20% earlier ageing, so entries loaded together do not all age out together.
        key.loaded_at -= random.random() * 0.2 * self._ttl
        if len(self._keys) >= self._max_entries:
            for old in list(islice(self._keys, self._max_entries // 10 or 1)):
                self._keys.pop(old, None)
            if len(self._principals) >= self._max_entries:
                self._principals.clear()
                self._orgs_by_principal.clear()
        self._keys[digest] = key
        self._hashes_by_key.setdefault(key.key_id, set()).add(digest)
        self._principals[(key.org_id, key.principal_id)] = principal
        self._orgs_by_principal.setdefault(key.principal_id, set()).add(key.org_id)
        self._orgs[key.org_id] = org
        self._negative.pop(digest, None)

    def _remember_negative(self, digest: str, now: float) -> None:
        if len(self._negative) >= self._max_entries:
            for old in list(islice(self._negative, self._max_entries // 10 or 1)):
                self._negative.pop(old, None)
        self._negative[digest] = now

    # -- decisions -------------------------------------------------------------------------
    @staticmethod
    def credential_problem(resolved: Resolved, now: float) -> str | None:
        """Why the key cannot be used at all (before any action is considered), or None."""
        key, principal, org = resolved.key, resolved.principal, resolved.org
        if key is None or principal is None or org is None:
            return "key_unknown"
        if key.status != "active":
            return "key_revoked"
        if key.expires_at is not None and now >= key.expires_at:
            return "key_expired"
        if key.is_previous and (key.previous_until is None or now >= key.previous_until):
            return "key_rotated"
        if org.status != "active":
            return "org_suspended" if org.status == "suspended" else "org_deleted"
        if principal.status != "active":
            if principal.status == "deleted":
                return "principal_deleted"
            if principal.status == "removed":
                return "principal_removed"
            return "principal_suspended"
        return None

    def _ttl_for(self, key: KeyEntry, now: float) -> int:
        ttl = self._decision_ttl
        for limit in (key.expires_at, key.previous_until if key.is_previous else None):
            if limit is not None:
                ttl = min(ttl, max(0, int(limit - now)))
        return ttl

    def _note_use(self, key: KeyEntry, now: float) -> None:
        usage = self._usage.get(key.key_id)
        if usage is None:
            self._usage[key.key_id] = [1, now]
        else:
            usage[0] += 1
            usage[1] = now

    def _note_denial(
        self, key: KeyEntry | None, reason: str, action: str, *, actor: Actor | None = None
    ) -> None:
        """Count a denial; the flusher writes one audit event per (key or actor, reason)."""
        group: DenialGroup
        if key is not None:
            group = (key.org_id, key.key_id, key.principal_type, key.principal_id, reason)
        else:
            actor = actor or ANONYMOUS
            group = (None, None, actor.type, actor.id, reason)
        entry = self._denials.get(group)
        now = time.time()
        if entry is None:
            if len(self._denials) >= MAX_DENIAL_GROUPS:
                self._denials_dropped += 1
                return
            self._denials[group] = [1, now, now, action]
        else:
            entry[0] += 1
            entry[2] = now

    async def validate(self, body: ValidateApiKeyIn) -> dict[str, Any]:
        """The compatibility answer: ``{valid: true, ...}`` or ``{valid: false, message}``."""
        secret = body.apiKeySecret
        digest = secrets.hash_secret(secret)
        if digest not in self._keys:
            try:
                secrets.check_format(secret, self._environment)
            except secrets.SecretProblem as problem:
                _STATS[("validate", "invalid")] += 1
                self._note_denial(None, problem.reason, "validate")
                return {"valid": False, "message": problem.message}
        resolved = await self.resolve(digest)
        now = time.time()
        reason = self.credential_problem(resolved, now)
        key = resolved.key
        if reason is None and body.orgId is not None and body.orgId != key.org_id:  # type: ignore[union-attr]
            reason = "org_mismatch"
        if reason is not None:
            _STATS[("validate", "invalid")] += 1
            self._note_denial(key, reason, "validate")
            return {"valid": False, "message": MESSAGES[reason]}
        assert key is not None
        assert resolved.principal is not None
        self._note_use(key, now)
        _STATS[("validate", "valid")] += 1
        return {
            "valid": True,
            "apiKeyId": key.key_id,
            "organizationId": key.org_id,
            "principalId": key.principal_id,
            "principalType": key.principal_type,
            "scopes": sorted(
                key.scopes & resolved.principal.grants(mfa=key.principal_type != "user")[1]
            ),
            "status": "active",
            "expiresAt": key.expires_at_iso,
        }

    def _deny(
        self,
        reason: str,
        *,
        key: KeyEntry | None = None,
        org_id: str | None = None,
        principal_id: str | None = None,
        principal_type: str | None = None,
    ) -> dict[str, Any]:
        _STATS[("authorize", "deny")] += 1
        return {
            "decision": "deny",
            "reason": reason,
            "orgId": key.org_id if key else org_id,
            "principalId": key.principal_id if key else principal_id,
            "principalType": key.principal_type if key else principal_type,
            "scopes": [],
            "budget": {"status": "ok", "remaining": None},
            "ttlSeconds": self._decision_ttl,
        }

    async def authorize(self, body: AuthorizeIn) -> dict[str, Any]:
        credential = body.credential
        if secrets.looks_like_api_key(credential):
            return await self._authorize_key(body)
        if credential.count(".") == 2:
            return await self._authorize_token(body)
        self._note_denial(None, "credential_malformed", body.action)
        return self._deny("credential_malformed")

    async def _authorize_key(self, body: AuthorizeIn) -> dict[str, Any]:
        digest = secrets.hash_secret(body.credential)
        if digest not in self._keys:
            # A cached hash was well formed when it was stored; anything else is checked
            # offline (prefix, environment, checksum) before it may cost a database read.
            try:
                secrets.check_format(body.credential, self._environment)
            except secrets.SecretProblem as problem:
                self._note_denial(None, problem.reason, body.action)
                return self._deny(problem.reason)
        resolved = await self.resolve(digest)
        now = time.time()
        reason = self.credential_problem(resolved, now)
        key = resolved.key
        if reason is not None:
            self._note_denial(key, reason, body.action)
            return self._deny(reason, key=key)
        assert key is not None
        principal, org = resolved.principal, resolved.org
        assert principal is not None
        assert org is not None
        context = body.context
        if context is not None:
            wanted = context.get("orgId")
            if wanted is not None and wanted != key.org_id:
                self._note_denial(key, "org_mismatch", body.action)
                return self._deny("org_mismatch", key=key)
        # The policy's answer is memoised on the key entry for the exact states it was given
        # (the principal and org state objects are replaced whenever they are reloaded), the
        # policy revision it came from, and no longer than the decision's own ttlSeconds.
        # Requests with a context go to the policy every time (it may read the context).
        memo_key = (body.action, body.resource)
        revision = self._policy_revision()
        memo = key.decisions.get(memo_key) if context is None else None
        mono = time.monotonic()
        if (
            memo is None
            or memo[0] is not principal
            or memo[1] is not org
            or memo[2] != revision
            or memo[6] <= mono
        ):
            # Keys never carry the roles that require a second factor (as in the admin API).
            roles, scopes = principal.grants(mfa=key.principal_type != "user")
            decision = self.policy.decide(
                AuthzRequest(
                    permission=body.action,
                    principal_id=key.principal_id,
                    principal_type=key.principal_type,
                    principal_status=principal.status,
                    org_id=key.org_id,
                    org_status=org.status,
                    membership_status=principal.membership_status,
                    roles=roles,
                    granted_scopes=scopes,
                    credential_scopes=key.scopes,
                    credential_type="api_key",
                    resource_type="model",
                    resource_id=body.resource,
                    context=context,
                )
            )
            memo = (
                principal,
                org,
                revision,
                decision.allow,
                decision.reason
                if decision.allow
                else _POLICY_REASONS.get(decision.reason, decision.reason),
                sorted(key.scopes & scopes),
                mono + decision.ttl_seconds,
            )
            if context is None and decision.ttl_seconds > 0:
                if len(key.decisions) >= 64:
                    key.decisions.clear()
                key.decisions[memo_key] = memo
        if not memo[3]:
            self._note_denial(key, memo[4], body.action)
            return self._deny(memo[4], key=key)
        budget = await self.budgets.check(
            org_id=key.org_id, principal_id=key.principal_id, estimated_cost=body.estimatedCost
        )
        if budget.blocks:
            self._note_denial(key, "budget_exceeded", body.action)
            denied = self._deny("budget_exceeded", key=key)
            denied["budget"] = {"status": budget.status, "remaining": budget.remaining}
            return denied
        self._note_use(key, now)
        _STATS[("authorize", "allow")] += 1
        answer: dict[str, Any] = {
            "decision": "allow",
            "reason": memo[4],
            "orgId": key.org_id,
            "principalId": key.principal_id,
            "principalType": key.principal_type,
            "scopes": memo[5],
            "budget": {"status": budget.status, "remaining": budget.remaining},
            "ttlSeconds": self._ttl_for(key, now),
        }
        if budget.reservation_id is not None:
            answer["reservationId"] = budget.reservation_id
        return answer

    async def _authorize_token(self, body: AuthorizeIn) -> dict[str, Any]:
        """An access token: signature and expiry, then what makes it revocable — a user's
        session, or a client-credentials token's generation and revocation list — read every
        time like the admin API does, then the principal's state in the org through the
        caches and the policy."""
        try:
            claims = await self._tokens.verify_access_token(body.credential)
        except InvalidToken:
            self._note_denial(None, "token_invalid", body.action)
            return self._deny("token_invalid")
        if claims.get("ptype") == "service_account":
            return await self._authorize_client_token(body, claims)
        try:
            user_id = uuid.UUID(claims["sub"])
            session_id = uuid.UUID(claims["sid"])
        except (KeyError, ValueError, TypeError):
            self._note_denial(None, "token_invalid", body.action)
            return self._deny("token_invalid")
        if claims.get("ptype") != "user":
            self._note_denial(None, "token_invalid", body.action)
            return self._deny("token_invalid")
        actor = Actor(type="user", id=str(user_id))
        async with self._read_sessions() as session:
            row = (
                await session.execute(
                    select(
                        LoginSession.status, LoginSession.expires_at, LoginSession.mfa_verified_at
                    ).where(LoginSession.id == session_id, LoginSession.user_id == user_id)
                )
            ).first()
            mfa_at = row.mfa_verified_at if row is not None else None
            if row is None or row.status != "active" or row.expires_at <= dt.datetime.now(dt.UTC):
                self._note_denial(None, "session_revoked", body.action, actor=actor)
                return self._deny(
                    "session_revoked", principal_id=str(user_id), principal_type="user"
                )
            wanted = (body.context or {}).get("orgId")
            org_id: uuid.UUID | None = None
            if wanted is not None:
                try:
                    org_id = uuid.UUID(str(wanted))
                except ValueError:
                    org_id = None
            else:
                orgs = list((await session.execute(_USER_ORGS_QUERY, {"pid": user_id})).scalars())
                org_id = orgs[0] if len(orgs) == 1 else None
        if org_id is None:
            self._note_denial(None, "org_required", body.action, actor=actor)
            return self._deny("org_required", principal_id=str(user_id), principal_type="user")
        return await self._decide_for_token(
            body,
            actor=actor,
            org_id=org_id,
            principal_type="user",
            principal_id=user_id,
            credential_scopes=None,
            expires=float(claims["exp"]),
            credential_type="session",
            mfa_verified_at=mfa_at.timestamp() if mfa_at is not None else None,
            amr=tuple(str(method) for method in claims.get("amr") or ()),
        )

    async def _authorize_client_token(
        self, body: AuthorizeIn, claims: dict[str, Any]
    ) -> dict[str, Any]:
        """An OAuth2 client-credentials token of a service account."""
        from userorg.authn.oauth2 import machine_token_state

        async with self._read_sessions() as session:
            state = await machine_token_state(session, claims)
        account = state.account
        if not state.active or account is None:
            reason = state.reason or "token_invalid"
            reason = {
                "malformed": "token_invalid",
                "unknown_client": "token_invalid",
                "org_pending_delete": "org_deleted",
            }.get(reason, reason)
            actor = Actor(type="service_account", id=str(account.id)) if account else None
            self._note_denial(None, reason, body.action, actor=actor)
            if account is None:
                return self._deny(reason)
            return self._deny(
                reason,
                org_id=str(account.org_id),
                principal_id=str(account.id),
                principal_type="service_account",
            )
        scope = claims.get("scope")
        return await self._decide_for_token(
            body,
            actor=Actor(type="service_account", id=str(account.id)),
            org_id=account.org_id,
            principal_type="service_account",
            principal_id=account.id,
            credential_scopes=frozenset(scope.split()) if isinstance(scope, str) else frozenset(),
            expires=float(claims["exp"]),
            credential_type="token",
        )

    async def _decide_for_token(
        self,
        body: AuthorizeIn,
        *,
        actor: Actor,
        org_id: uuid.UUID,
        principal_type: str,
        principal_id: uuid.UUID,
        credential_scopes: frozenset[str] | None,
        expires: float,
        credential_type: str,
        mfa_verified_at: float | None = None,
        amr: tuple[str, ...] = (),
    ) -> dict[str, Any]:
        ids: dict[str, Any] = {
            "org_id": str(org_id),
            "principal_id": str(principal_id),
            "principal_type": principal_type,
        }
        principal, org = await self.principal_state(
            org_id=org_id, principal_type=principal_type, principal_id=principal_id
        )
        if org.status == "missing":
            self._note_denial(None, "org_unknown", body.action, actor=actor)
            return self._deny("org_unknown", **ids)
        # A session without a second factor does not carry the roles that require one.
        roles, scopes = principal.grants(
            mfa=principal_type != "user" or mfa_verified_at is not None
        )
        decision = self.policy.decide(
            AuthzRequest(
                permission=body.action,
                principal_id=str(principal_id),
                principal_type=principal_type,
                principal_status="active" if principal.status == "removed" else principal.status,
                is_platform_admin=principal.is_platform_admin,
                org_id=str(org_id),
                org_status=org.status,
                membership_status=principal.membership_status,
                roles=roles,
                granted_scopes=scopes,
                credential_scopes=credential_scopes,
                credential_type=credential_type,
                mfa_verified_at=mfa_verified_at,
                amr=amr,
                resource_type="model",
                resource_id=body.resource,
                context=body.context,
            )
        )
        if not decision.allow:
            reason = _POLICY_REASONS.get(decision.reason, decision.reason)
            self._note_denial(None, reason, body.action, actor=actor)
            return self._deny(reason, **ids)
        budget = await self.budgets.check(
            org_id=str(org_id), principal_id=str(principal_id), estimated_cost=body.estimatedCost
        )
        if budget.blocks:
            self._note_denial(None, "budget_exceeded", body.action, actor=actor)
            denied = self._deny("budget_exceeded", **ids)
            denied["budget"] = {"status": budget.status, "remaining": budget.remaining}
            return denied
        if credential_scopes is not None:
            scopes = scopes & credential_scopes
        _STATS[("authorize", "allow")] += 1
        answer: dict[str, Any] = {
            "decision": "allow",
            "reason": decision.reason,
            "orgId": str(org_id),
            "principalId": str(principal_id),
            "principalType": principal_type,
            "scopes": sorted(scopes),
            "budget": {"status": budget.status, "remaining": budget.remaining},
            "ttlSeconds": min(self._decision_ttl, max(0, int(expires - time.time()))),
        }
        if budget.reservation_id is not None:
            answer["reservationId"] = budget.reservation_id
        return answer

    # -- batched writes --------------------------------------------------------------------
    def note_admin_use(self, key_id: uuid.UUID) -> None:
        """An API key authenticated an admin API call: counted like a gateway use."""
        usage = self._usage.get(str(key_id))
        now = time.time()
        if usage is None:
            self._usage[str(key_id)] = [1, now]
        else:
            usage[0] += 1
            usage[1] = now

    async def flush(self) -> dict[str, int]:
        """Write buffered key usage and denial audit events (one transaction)."""
        usage, self._usage = self._usage, {}
        denials, self._denials = self._denials, {}
        dropped, self._denials_dropped = self._denials_dropped, 0
        if not usage and not denials:
            return {"keys": 0, "denials": 0}
        try:
            async with self._uow_factory() as uow:
                await self._write(uow, usage, denials, dropped)
        except Exception:
            # Put the counts back so the next flush retries them (bounded by the group cap).
            for key_id, (count, last) in usage.items():
                entry = self._usage.setdefault(key_id, [0, last])
                entry[0] += count
                entry[1] = max(entry[1], last)
            for group, values in denials.items():
                if len(self._denials) < MAX_DENIAL_GROUPS:
                    self._denials.setdefault(group, values)
            raise
        return {"keys": len(usage), "denials": len(denials)}

    async def _write(
        self,
        uow: UnitOfWork,
        usage: dict[str, list[Any]],
        denials: dict[DenialGroup, list[Any]],
        dropped: int,
    ) -> None:
        bind = uow.session.bind
        if usage and bind is not None and bind.dialect.name == "postgresql":
            # One statement per 2,000 keys, with plain arrays (ids as text, times as epoch
            # seconds): building them costs little time on the event loop.
            items = sorted(usage.items())
            for start in range(0, len(items), 2000):
                chunk = items[start : start + 2000]
                await uow.session.execute(
                    _USAGE_UPDATE_PG,
                    {
                        "ids": [key_id for key_id, _ in chunk],
                        "ns": [count for _, (count, _last) in chunk],
                        "ts": [last for _, (_count, last) in chunk],
                    },
                )
        elif usage:
            await uow.session.execute(
                _USAGE_UPDATE,
                [
                    {
                        "kid": uuid.UUID(key_id),
                        "n": count,
                        "t": dt.datetime.fromtimestamp(last, dt.UTC),
                    }
                    for key_id, (count, last) in sorted(usage.items())
                ],
            )
        for (org_id, key_id, actor_type, actor_id, reason), (count, first, last, action) in sorted(
            denials.items(), key=lambda item: (item[0][0] or "", item[0][1] or "", item[0][4])
        ):
            await audit.record(
                uow.session,
                action="gateway:api_key:deny"
                if key_id or actor_type == "anonymous"
                else "gateway:access_token:deny",
                actor=Actor(type=actor_type, id=actor_id) if actor_id else ANONYMOUS,
                org_id=uuid.UUID(org_id) if org_id else None,
                outcome="denied",
                reason=reason,
                target_type="api_key" if key_id else None,
                target_id=key_id,
                metadata={
                    "count": count,
                    "action": action,
                    "firstAt": dt.datetime.fromtimestamp(first, dt.UTC).isoformat(),
                    "lastAt": dt.datetime.fromtimestamp(last, dt.UTC).isoformat(),
                },
            )
        if dropped:
            log.warning("gateway_denials_not_audited", count=dropped)

    async def _flush_loop(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=self._flush_interval)
            try:
                await self.flush()
            except Exception:
                log.exception("gateway_flush_failed")
