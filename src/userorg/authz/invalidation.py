"""Decision-cache invalidation after commit, for every writer at once.

Rather than asking each service to remember to publish, the session notices the changes that can
turn an allow into a deny: an org's status, a membership, a role assignment, a custom role's
scopes, a user's status or platform-admin flag, a service account's status (ORM flushes and bulk
UPDATE/DELETE statements alike). When the transaction commits, the local decision cache drops
the affected entries at once (before the response leaves) and the change is published on the
invalidation bus (channel ``authz``) so every other replica drops them too. A rolled-back
transaction publishes nothing.

Message: ``{"org": "<uuid>" | null, "principal": "<uuid>" | null, "all": bool}``. Other caches
(the gateway's key cache, for one) may subscribe to the same channel.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import event, inspect
from sqlalchemy.orm import ORMExecuteState, Session
from sqlalchemy.sql import visitors
from sqlalchemy.sql.elements import BinaryExpression, BindParameter
from sqlalchemy.sql.schema import Column

log = structlog.get_logger("userorg.authz")

CHANNEL = "authz"
TRACKER_KEY = "userorg.authz.tracker"
PENDING_KEY = "userorg.authz.pending"
UOW_KEY = "userorg.uow"


@dataclass(frozen=True, slots=True)
class Change:
    org: str | None = None
    principal: str | None = None
    all: bool = False

    def message(self) -> dict[str, Any]:
        return {"org": self.org, "principal": self.principal, "all": self.all}

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> Change:
        org = message.get("org")
        principal = message.get("principal")
        return cls(
            org=org if isinstance(org, str) else None,
            principal=principal if isinstance(principal, str) else None,
            all=message.get("all") is True,
        )


Invalidate = Callable[[Change], None]
Publish = Callable[[dict[str, Any]], Awaitable[None]]


class ChangeTracker:
    """Attached to a session factory (``session.info``); applies and publishes changes."""

    def __init__(self, *, invalidate: Invalidate, publish: Publish) -> None:
        self._invalidate = invalidate
        self._publish = publish
        self._tasks: set[asyncio.Task[None]] = set()

    def committed(self, session: Session, changes: set[Change]) -> None:
        for change in changes:
            self._invalidate(change)
        uow = session.info.get(UOW_KEY)

        async def publish() -> None:
            for change in sorted(changes, key=lambda c: (c.all, c.org or "", c.principal or "")):
                await self._publish(change.message())

        if uow is not None:
            uow.after_commit(publish)
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        task = loop.create_task(publish())
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("authz_invalidation_publish_failed", error=str(task.exception()))


def _str(value: Any) -> str | None:
    if value is None:
        return None
    return str(value) if isinstance(value, uuid.UUID | str) else None


def _changed(obj: Any, *names: str) -> bool:
    state = inspect(obj)
    return any(state.attrs[name].history.has_changes() for name in names)


def _changes_of(obj: Any, *, kind: str) -> Change | None:
    """The change an ORM object's insert/update/delete means for decisions (None: none)."""
    name = type(obj).__name__
    if name == "Organization":
        if kind == "dirty" and not _changed(obj, "status"):
            return None
        return Change(org=_str(obj.id))
    if name == "Membership":
        if kind == "dirty" and not _changed(obj, "status"):
            return None
        return Change(org=_str(obj.org_id), principal=_str(obj.user_id))
    if name == "RoleAssignment":
        return Change(org=_str(obj.org_id), principal=_str(obj.principal_id))
    if name == "CustomRole":
        if kind == "dirty" and not _changed(obj, "scopes", "name"):
            return None
        return Change(org=_str(obj.org_id))
    if name == "User":
        if kind == "new" or (kind == "dirty" and not _changed(obj, "status", "is_platform_admin")):
            return None
        return Change(principal=_str(obj.id))
    if name == "ServiceAccount":
        if kind == "new" or (kind == "dirty" and not _changed(obj, "status")):
            return None
        return Change(org=_str(obj.org_id), principal=_str(obj.id))
    return None


TRACKED_TABLES = frozenset(
    {
        "organizations",
        "memberships",
        "role_assignments",
        "custom_roles",
        "users",
        "service_accounts",
    }
)


def _pending(session: Session) -> set[Change]:
    pending: set[Change] = session.info.setdefault(PENDING_KEY, set())
    return pending


def _after_flush(session: Session, _context: Any) -> None:
    if session.info.get(TRACKER_KEY) is None:
        return
    found: set[Change] = set()
    for kind, objects in (
        ("new", session.new),
        ("dirty", session.dirty),
        ("deleted", session.deleted),
    ):
        for obj in objects:
            change = _changes_of(obj, kind=kind)
            if change is not None:
                found.add(change)
    if found:
        _pending(session).update(found)


def _equalities(clause: Any) -> dict[str, set[Any]]:
    """``column = value`` pairs of a WHERE clause (``IN`` lists too)."""
    result: dict[str, set[Any]] = {}
    if clause is None:
        return result
    for node in visitors.iterate(clause):
        if not isinstance(node, BinaryExpression) or not isinstance(node.left, Column):
            continue
        name = node.left.name
        right = node.right
        if isinstance(right, BindParameter):
            value = right.effective_value
            values: Iterable[Any] = value if isinstance(value, list | tuple | set) else [value]
            result.setdefault(name, set()).update(values)
    return result


def _on_execute(state: ORMExecuteState) -> None:
    session = state.session
    if session.info.get(TRACKER_KEY) is None or not (state.is_update or state.is_delete):
        return
    table = getattr(state.statement, "table", None)
    table_name = getattr(table, "name", None)
    if table_name not in TRACKED_TABLES:
        return
    where = _equalities(state.statement.whereclause)  # type: ignore[attr-defined]
    org_column = "id" if table_name == "organizations" else "org_id"
    principal_column = {
        "users": "id",
        "service_accounts": "id",
        "memberships": "user_id",
        "role_assignments": "principal_id",
    }.get(table_name)
    orgs = {_str(v) for v in where.get(org_column, set())} - {None}
    principals = (
        {_str(v) for v in where.get(principal_column, set())} - {None}
        if principal_column
        else set()
    )
    pending = _pending(session)
    if not orgs and not principals:
        pending.add(Change(all=True))
        return
    for org in orgs:
        pending.add(Change(org=org))
    for principal in principals:
        pending.add(Change(principal=principal))


def _after_commit(session: Session) -> None:
    changes: set[Change] | None = session.info.pop(PENDING_KEY, None)
    tracker: ChangeTracker | None = session.info.get(TRACKER_KEY)
    if changes and tracker is not None:
        tracker.committed(session, changes)


def _after_rollback(session: Session) -> None:
    session.info.pop(PENDING_KEY, None)


event.listen(Session, "after_flush", _after_flush)
event.listen(Session, "do_orm_execute", _on_execute)
event.listen(Session, "after_commit", _after_commit)
event.listen(Session, "after_rollback", _after_rollback)
