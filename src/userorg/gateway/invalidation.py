"""What must be invalidated when the database changes, found where every change passes: the
ORM flush (and ORM-executed bulk UPDATE/DELETE statements).

A listener on every session notes which cached facts a transaction touches — a key, a
principal (service account, user, membership, role assignment), an org (status, custom
roles) — in ``session.info``. When the unit of work commits, the hook installed by the
gateway publishes them on the invalidation bus (see ``Gateway.publish_session_changes``);
a rollback forgets them. Because this sits below the services, no code path that changes a
status, a role or a key (API, reconciler, maintenance) can forget to invalidate.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import ORMExecuteState, Session, UOWTransaction
from sqlalchemy.sql import operators, visitors
from sqlalchemy.sql.elements import BinaryExpression, BindParameter
from sqlalchemy.sql.schema import Column

PENDING = "userorg.invalidations"
SKIP_OPTION = "userorg_no_invalidation"

Item = tuple[str, str]  # (kind, id): ("key"|"principal"|"org"|"all", id)
ALL: Item = ("all", "")

# table -> (column whose value names the invalidated thing, kind)
_TABLES: dict[str, list[tuple[str, str]]] = {
    "api_keys": [("id", "key")],
    "organizations": [("id", "org")],
    "service_accounts": [("id", "principal")],
    "users": [("id", "principal")],
    "memberships": [("user_id", "principal")],
    "role_assignments": [("principal_id", "principal"), ("org_id", "org")],
    "custom_roles": [("org_id", "org")],
}


def _items_for_row(table: str, obj: Any) -> list[Item]:
    for column, kind in _TABLES[table]:
        value = getattr(obj, column, None)
        if value is not None:
            return [(kind, str(value))]
    return [ALL]


def _pending(session: Session) -> set[Item]:
    pending: set[Item] | None = session.info.get(PENDING)
    if pending is None:
        pending = session.info[PENDING] = set()
    return pending


@event.listens_for(Session, "after_flush")
def _after_flush(session: Session, _context: UOWTransaction) -> None:
    items: list[Item] = []
    for obj in session.dirty:
        table = getattr(obj, "__tablename__", None)
        if table in _TABLES and session.is_modified(obj, include_collections=False):
            items.extend(_items_for_row(table, obj))
    for collection in (session.new, session.deleted):
        for obj in collection:
            table = getattr(obj, "__tablename__", None)
            if table in _TABLES and table != "api_keys":
                items.extend(_items_for_row(table, obj))
    for obj in session.deleted:
        if getattr(obj, "__tablename__", None) == "api_keys":
            items.extend(_items_for_row("api_keys", obj))
    if items:
        _pending(session).update(items)


def _bound_values(clause: Any) -> dict[str, list[str]]:
    """``column = value`` and ``column IN (values)`` terms of a WHERE clause."""
    found: dict[str, list[str]] = {}
    if clause is None:
        return found
    for node in visitors.iterate(clause):
        if not isinstance(node, BinaryExpression) or not isinstance(node.left, Column):
            continue
        right = node.right
        if not isinstance(right, BindParameter):
            continue
        value = right.effective_value
        if node.operator is operators.eq and value is not None:
            found.setdefault(node.left.name, []).append(str(value))
        elif node.operator is operators.in_op and isinstance(value, list | tuple):
            found.setdefault(node.left.name, []).extend(str(v) for v in value)
    return found


@event.listens_for(Session, "do_orm_execute")
def _bulk_statement(state: ORMExecuteState) -> None:
    if not (state.is_update or state.is_delete):
        return
    if state.execution_options.get(SKIP_OPTION):
        return
    table = getattr(state.statement, "table", None)
    name = getattr(table, "name", None)
    if name not in _TABLES:
        return
    values = _bound_values(getattr(state.statement, "whereclause", None))
    for column, kind in _TABLES[name]:
        if values.get(column):
            _pending(state.session).update((kind, v) for v in values[column])
            return
    _pending(state.session).add(ALL)


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(PENDING, None)


def take_pending(session: Session) -> set[Item]:
    pending: set[Item] = session.info.pop(PENDING, None) or set()
    return pending
