"""What the admin-api does for declarative management: status, plans, dry runs, manual syncs
and the signed webhook. The reconciler process does the applying (``reconcile.py``); the API
hands it work by marking the org's state row in its own transaction and publishing a hint
on the bus after commit."""

from __future__ import annotations

import hashlib
import hmac
import re
import time
import uuid
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from userorg.audit import recorder as audit
from userorg.context import Actor
from userorg.db import UnitOfWork, utcnow
from userorg.declarative.apply import apply_plan
from userorg.declarative.managed import CHANNEL, config_of, ensure_state, is_active
from userorg.declarative.models import DeclarativeRevision, DeclarativeRun, DeclarativeState
from userorg.declarative.plan import Plan
from userorg.declarative.reconcile import ReconcileEngine
from userorg.declarative.schema import ConfigError
from userorg.declarative.source import normalize_url
from userorg.errors import BadRequest, Conflict, DomainError, ServiceUnavailable, Unauthenticated
from userorg.orgs.models import Organization
from userorg.telemetry.metrics import DECLARATIVE_WEBHOOKS

SIGNATURE_HEADER = "X-Hub-Signature-256"
COMMIT_ID = re.compile(r"^[0-9a-f]{40}$")


def _not_managed(org: Organization) -> Conflict:
    return Conflict(
        "Declarative management is not enabled for this organization",
        code="declarative_disabled",
        details={"orgId": str(org.id)},
    )


def run_document(run: DeclarativeRun | None) -> dict[str, Any] | None:
    if run is None:
        return None
    return {
        "runId": str(run.id),
        "status": run.status,
        "trigger": run.trigger,
        "dryRun": run.dry_run,
        "commitId": run.commit_id,
        "startedAt": run.started_at,
        "finishedAt": run.finished_at,
        "durationMs": run.duration_ms,
        "operations": run.operations,
        "counts": (run.summary or {}).get("counts"),
        "error": run.error,
    }


async def status(session: AsyncSession, *, org: Organization) -> dict[str, Any]:
    config = config_of(org)
    state = await session.get(DeclarativeState, org.id)
    revision = None
    run = None
    if state is not None and state.current_revision_id is not None:
        revision = await session.get(DeclarativeRevision, state.current_revision_id)
    if state is not None and state.last_run_id is not None:
        run = await session.get(DeclarativeRun, state.last_run_id)
    current = None
    if revision is not None:
        current = {
            "commitId": revision.commit_id,
            "status": revision.status,
            "trigger": revision.trigger,
            "createdAt": revision.created_at,
            "syncedAt": revision.synced_at,
            "error": revision.error,
        }
    value: str | None
    if not config.get("enabled"):
        value = None
    elif config.get("paused"):
        value = "paused"
    elif state is None or state.sync_requested_at is not None or revision is None:
        value = "pending"
    else:
        value = revision.status
        if value == "synced" and state.drift:
            value = "drift_detected"
    lease = None
    if (
        state is not None
        and state.lease_owner
        and state.lease_expires_at
        and state.lease_expires_at > utcnow()
    ):
        lease = {"owner": state.lease_owner, "expiresAt": state.lease_expires_at}
    return {
        "orgId": org.id,
        "enabled": bool(config.get("enabled")),
        "paused": bool(config.get("paused")),
        "mode": config.get("driftMode", "selfHeal"),
        "prune": bool(config.get("prune")),
        "repo": config.get("repoUrl"),
        "branch": config.get("branch"),
        "path": config.get("path"),
        "status": value,
        "lastAppliedCommit": state.last_applied_commit if state else None,
        "lastAppliedAt": state.last_applied_at if state else None,
        "currentRevision": current,
        "lastRun": run_document(run),
        "drift": list(state.drift or []) if state else [],
        "warnings": list(state.warnings or []) if state else [],
        "lastError": state.last_error if state else None,
        "syncRequestedAt": state.sync_requested_at if state else None,
        "nextPollAt": state.next_poll_at
        if state and state.next_poll_at and state.next_poll_at.year < 9999
        else None,
        "lease": lease,
    }


async def request_sync(
    uow: UnitOfWork,
    *,
    org: Organization,
    actor: Actor,
    trigger: str,
    force_commit: str | None = None,
    audit_action: str | None = "api:declarative:sync",
) -> DeclarativeState:
    """Queue a sync for the reconciler (durably, in this transaction) and wake it."""
    if not is_active(org):
        raise _not_managed(org)
    state = await ensure_state(uow.session, org.id)
    state.sync_requested_at = utcnow()
    state.sync_trigger = trigger
    state.retry_at = None
    if force_commit is not None:
        state.force_commit = force_commit
    state.updated_at = utcnow()
    if audit_action is not None:
        await audit.record(
            uow.session,
            action=audit_action,
            actor=actor,
            org_id=org.id,
            target_type="organization",
            target_id=org.id,
            metadata={"trigger": trigger, "forceCommit": force_commit},
        )
    uow.publish_after_commit(CHANNEL, {"type": "sync", "orgId": str(org.id)})
    return state


async def plan_for_org(
    session: AsyncSession, *, org: Organization, engine: ReconcileEngine
) -> Plan:
    """What the next run would do: the branch head's folder against the actual state."""
    config = config_of(org)
    if not config.get("repoUrl"):
        raise _not_managed(org)
    state = await session.get(DeclarativeState, org.id)
    last_applied = state.last_applied_commit if state else None
    head, desired, errors = await engine.fetch_desired(config, not_before=time.time())
    if desired is None:
        plan = Plan(slug=org.slug, errors=errors, commit_id=head, base_commit=last_applied)
        return plan
    assert head is not None
    plan = await engine.plan_against(session, org, desired, head, last_applied)
    problem = await engine.ancestry_error(
        config, last_applied, head, state.force_commit if state else None
    )
    if problem is not None:
        plan.errors.insert(0, problem)
    return plan


async def dry_run(
    uow: UnitOfWork, *, org: Organization, actor: Actor, engine: ReconcileEngine
) -> tuple[Plan, dict[str, Any] | None]:
    """Go through the real apply path inside a savepoint, then roll it back.

    Returns the plan and, when applying it failed, the error it failed with."""
    if not config_of(org).get("repoUrl"):
        raise _not_managed(org)
    session = uow.session
    state = await session.get(DeclarativeState, org.id)
    last_applied = state.last_applied_commit if state else None
    head, desired, errors = await engine.fetch_desired(config_of(org), not_before=time.time())
    failure: dict[str, Any] | None = None
    if desired is None or head is None:
        plan = Plan(slug=org.slug, errors=errors, commit_id=head, base_commit=last_applied)
    else:
        plan = await engine.plan_against(session, org, desired, head, last_applied)
        problem = await engine.ancestry_error(
            config_of(org), last_applied, head, state.force_commit if state else None
        )
        if problem is not None:
            plan.errors.insert(0, problem)
        if not plan.errors:
            savepoint = await session.begin_nested()
            try:
                await apply_plan(
                    uow,
                    org=org,
                    plan=plan,
                    desired=desired,
                    metadata={"commitId": head, "dryRun": True},
                    budgets=engine.budgets,
                )
                await session.flush()
            except DomainError as error:
                failure = {"code": error.code, "message": error.message, "details": error.details}
            finally:
                await savepoint.rollback()
            await session.refresh(org)
    await audit.record(
        session,
        action="api:declarative:dry_run",
        actor=actor,
        org_id=org.id,
        target_type="organization",
        target_id=org.id,
        metadata={
            "commitId": head,
            "counts": plan.counts(),
            "valid": plan.valid and failure is None,
            "errors": [e.to_json() for e in plan.errors[:20]],
        },
    )
    return plan, failure


# -- webhook --------------------------------------------------------------------------------
def verify_signature(secret: str, body: bytes, signature: str | None) -> bool:
    if not signature or not signature.startswith("sha256="):
        return False
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature.strip())


def _repository_urls(payload: dict[str, Any]) -> set[str]:
    repository = payload.get("repository")
    urls: set[str] = set()
    if isinstance(repository, dict):
        for key in ("clone_url", "html_url", "url", "git_url", "ssh_url", "git_http_url"):
            value = repository.get(key)
            if isinstance(value, str) and value:
                urls.add(normalize_url(value))
    return urls


async def receive_webhook(
    uow: UnitOfWork,
    *,
    body: bytes,
    signature: str | None,
    secret: str | None,
    event: str | None,
    delivery: str | None,
) -> dict[str, Any]:
    """Verify the GitHub-style signature, then queue a sync for every org on that branch."""
    session = uow.session
    if secret is None:
        DECLARATIVE_WEBHOOKS.labels("disabled").inc()
        raise ServiceUnavailable(
            "The declarative webhook is not configured (USER_ORG_DECLARATIVE_WEBHOOK_SECRET)",
            code="webhook_not_configured",
        )
    anonymous = Actor(type="anonymous", id=None)
    if not verify_signature(secret, body, signature):
        DECLARATIVE_WEBHOOKS.labels("bad_signature").inc()
        await audit.record(
            session,
            action="api:declarative_webhook:deny",
            actor=anonymous,
            org_id=None,
            outcome="denied",
            reason="invalid_signature" if signature else "missing_signature",
            target_type="webhook",
            target_id=(delivery or "")[:100] or None,
            metadata={"event": (event or "")[:50], "bytes": len(body)},
        )
        raise Unauthenticated(
            "The webhook signature is missing or does not match",
            code="invalid_signature",
            headers={},
            commit=True,
        )
    if event == "ping":
        DECLARATIVE_WEBHOOKS.labels("ping").inc()
        return {"accepted": True, "event": "ping", "orgs": 0}
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadRequest("The webhook body is not valid JSON", code="malformed_json") from None
    if not isinstance(payload, dict):
        raise BadRequest("The webhook body must be a JSON object", code="invalid_body")
    ref = payload.get("ref")
    branch = ref.removeprefix("refs/heads/") if isinstance(ref, str) else None
    urls = _repository_urls(payload)
    after = payload.get("after")
    commit_id = after if isinstance(after, str) and COMMIT_ID.match(after) else None
    matched: list[Organization] = []
    if urls and branch:
        rows = await session.execute(
            select(Organization.id, Organization.declarative).where(
                Organization.status != "pending_delete"
            )
        )
        for org_id, config in rows:
            if (
                config
                and config.get("enabled")
                and not config.get("paused")
                and config.get("branch") == branch
                and normalize_url(str(config.get("repoUrl") or "")) in urls
            ):
                org = await session.get(Organization, org_id)
                if org is not None:
                    matched.append(org)
    system = Actor(type="system", id="webhook")
    for org in matched:
        await request_sync(uow, org=org, actor=system, trigger="webhook", audit_action=None)
        await audit.record(
            session,
            action="api:declarative_webhook:receive",
            actor=system,
            org_id=org.id,
            target_type="organization",
            target_id=org.id,
            metadata={
                "event": event,
                "delivery": delivery,
                "branch": branch,
                "commitId": commit_id,
            },
        )
    DECLARATIVE_WEBHOOKS.labels("accepted" if matched else "unmatched").inc()
    return {"accepted": True, "event": event or "push", "orgs": len(matched), "commitId": commit_id}


async def get_run(
    session: AsyncSession, *, org: Organization, run_id: uuid.UUID
) -> DeclarativeRun | None:
    run = await session.get(DeclarativeRun, run_id)
    return run if run is not None and run.org_id == org.id else None


__all__ = ["ConfigError", "dry_run", "plan_for_org", "receive_webhook", "request_sync", "status"]
