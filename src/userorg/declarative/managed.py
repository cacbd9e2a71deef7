"""The shared check the API's services call before changing something Git may manage.

For an org under declarative management, a change through the API to a field the last
applied commit declares is either refused (``driftMode: lock`` → 409 ``managed_by_git``,
audited as a denial) or let through and reported to the reconciler at once
(``selfHeal`` / ``report``): the org's state row is marked for a drift check in the same
transaction, and the reconciler is woken over the bus after commit.

Also here: the hook that keeps an org's state row in step with its ``declarative`` settings
(enable / disable / pause / change of repository), and the check that refuses to delete an
org while a reconciliation holds its lease.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from userorg.audit import recorder as audit
from userorg.context import Actor
from userorg.db import UnitOfWork, utcnow
from userorg.declarative.models import DeclarativeRevision, DeclarativeState
from userorg.errors import Conflict
from userorg.orgs.models import Organization

CHANNEL = "declarative"


def config_of(org: Organization) -> dict[str, Any]:
    return dict(org.declarative or {})


def is_active(org: Organization) -> bool:
    config = config_of(org)
    return bool(config.get("enabled")) and not config.get("paused")


def _touches(
    applied: dict[str, Any],
    *,
    prune: bool,
    subject: str,
    key: str | None,
    fields: set[str],
    action: str,
) -> list[str]:
    """The managed fields a change would touch (empty: the change is not Git's business)."""
    if subject == "organization":
        return sorted(fields & set(applied.get("org") or {}))
    section = {"role": "roles", "member": "members", "service_account": "serviceAccounts"}[subject]
    declared: dict[str, Any] | None = applied.get(section)
    if declared is None:
        return []
    if action == "create":
        if key in declared:
            return [section]
        return [section] if prune else []
    if key not in declared:
        return []
    if action == "delete":
        return [section]
    managed = set(declared[key]) | {"name"}
    return sorted(fields & managed)


async def check_api_change(
    uow: UnitOfWork,
    *,
    org: Organization,
    actor: Actor,
    subject: str,
    key: str | None = None,
    fields: Iterable[str] = (),
    action: str = "update",
) -> None:
    """Call before an API change to an org's roles, members, service accounts or settings."""
    if not is_active(org):
        return
    session = uow.session
    state = await session.get(DeclarativeState, org.id)
    if state is None or state.applied_config is None:
        return
    config = config_of(org)
    touched = _touches(
        state.applied_config,
        prune=bool(config.get("prune")),
        subject=subject,
        key=key,
        fields=set(fields),
        action=action,
    )
    if not touched:
        return
    if config.get("driftMode") == "lock":
        details = {
            "subject": subject,
            "key": key,
            "fields": touched,
            "repoUrl": config.get("repoUrl"),
            "branch": config.get("branch"),
            "commitId": state.last_applied_commit,
        }
        await audit.record(
            session,
            action=f"api:{subject}:{action}",
            actor=actor,
            org_id=org.id,
            outcome="denied",
            reason="managed_by_git",
            target_type=subject,
            target_id=key,
            metadata=details,
        )
        raise Conflict(
            "This is managed by Git (declarative lock mode): change it in the repository",
            code="managed_by_git",
            details=details,
            commit=True,
        )
    state.check_requested_at = utcnow()
    uow.publish_after_commit(CHANNEL, {"type": "check", "orgId": str(org.id)})


async def check_principal_roles_change(
    uow: UnitOfWork,
    *,
    org: Organization,
    actor: Actor,
    principal_type: str,
    principal_id: uuid.UUID,
) -> None:
    """``PUT .../roles`` of a member or service account."""
    if not is_active(org):
        return
    from userorg.serviceaccounts.models import ServiceAccount
    from userorg.users.models import User

    if principal_type == "user":
        user = await uow.session.get(User, principal_id)
        key = user.email if user else None
        subject = "member"
    else:
        account = await uow.session.get(ServiceAccount, principal_id)
        key = account.name if account else None
        subject = "service_account"
    await check_api_change(uow, org=org, actor=actor, subject=subject, key=key, fields={"roles"})


# -- enable / disable / pause ----------------------------------------------------------------
async def ensure_state(session: AsyncSession, org_id: uuid.UUID) -> DeclarativeState:
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    now = utcnow()
    await session.execute(
        insert(DeclarativeState)
        .values(org_id=org_id, failures=0, drift=[], warnings=[], created_at=now, updated_at=now)
        .on_conflict_do_nothing(index_elements=["org_id"])
    )
    state = (
        await session.execute(
            select(DeclarativeState)
            .where(DeclarativeState.org_id == org_id)
            .execution_options(populate_existing=True)
        )
    ).scalar_one()
    return state


async def config_changed(uow: UnitOfWork, *, org: Organization, actor: Actor) -> None:
    """The org's ``declarative`` settings were set or changed through the API."""
    config = config_of(org)
    if not config:
        return
    session = uow.session
    state = await ensure_state(session, org.id)
    repo_url, branch = config.get("repoUrl"), config.get("branch")
    if (state.repo_url, state.branch) != (repo_url, branch):
        # Another repository or branch is another history: the descendant rule starts over.
        if state.last_applied_commit is not None:
            await audit.record(
                session,
                action="api:declarative:source_change",
                actor=actor,
                org_id=org.id,
                target_type="organization",
                target_id=org.id,
                metadata={
                    "from": {"repoUrl": state.repo_url, "branch": state.branch},
                    "to": {"repoUrl": repo_url, "branch": branch},
                    "lastAppliedCommit": state.last_applied_commit,
                },
            )
        state.repo_url, state.branch = repo_url, branch
        state.last_applied_commit = None
        state.applied_config = None
        state.drift = []
    if config.get("paused") and state.current_revision_id is not None:
        await session.execute(
            update(DeclarativeRevision)
            .where(DeclarativeRevision.id == state.current_revision_id)
            .values(status="paused", updated_at=utcnow())
        )
    if is_active(org):
        state.sync_requested_at = utcnow()
        state.sync_trigger = "config"
        state.retry_at = None
        state.failures = 0
        uow.publish_after_commit(CHANNEL, {"type": "sync", "orgId": str(org.id)})
    state.updated_at = utcnow()


async def ensure_not_reconciling(session: AsyncSession, *, org: Organization) -> None:
    """Org deletion waits for no one: it is refused while a reconciliation runs."""
    state = (
        await session.execute(
            select(DeclarativeState).where(DeclarativeState.org_id == org.id).with_for_update()
        )
    ).scalar_one_or_none()
    if (
        state is not None
        and state.lease_owner is not None
        and state.lease_expires_at is not None
        and state.lease_expires_at > utcnow()
    ):
        raise Conflict(
            "A declarative reconciliation is running for this organization; retry when it ends",
            code="reconciliation_running",
            details={"leaseExpiresAt": state.lease_expires_at.isoformat()},
        )
