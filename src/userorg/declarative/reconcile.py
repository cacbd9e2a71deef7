"""One reconciliation of one org: lease, fetch, validate, plan, guard, apply, record.

The order of transactions is what makes a run safe to kill at any point:

1. *claim* — take the org's lease (one reconciler per org across replicas) and mark runs left
   ``running`` by a dead reconciler as failed (``interrupted``);
2. *fetch* — read the branch head and the org's folder from Git, outside any transaction;
3. *start* — record the revision (``pending``) and the run (``running``);
4. *apply* — in ONE transaction: re-check the lease (fencing), compute the plan against the
   rows it locks, apply it with its audit events, and mark the revision ``synced``, the run
   ``successful`` and the state's last applied commit. Killed before the commit, nothing of it
   exists; the next run (after the lease expires) starts again from the last good state;
5. *release* the lease.

A commit is applied only when it descends from the last applied one (or an admin named it
explicitly with ``forceCommit``). A commit that fails (bad YAML, unknown roles, the removal
guard, a domain invariant) leaves everything as it was and is not retried until the branch
moves or someone asks for a sync; source outages are retried with exponential backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import sqlite3
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy import delete, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from userorg.audit import recorder as audit
from userorg.db import Publish, UnitOfWork, utcnow
from userorg.declarative.apply import RECONCILER_ACTOR, apply_plan, load_actual
from userorg.declarative.budget import BudgetPolicyPort
from userorg.declarative.managed import CHANNEL, config_of, is_active
from userorg.declarative.models import DeclarativeRevision, DeclarativeRun, DeclarativeState
from userorg.declarative.plan import Plan, compute_plan
from userorg.declarative.schema import ConfigError, DesiredOrg, InvalidConfig, load_documents
from userorg.declarative.source import GitSource, SourceError
from userorg.errors import DomainError
from userorg.orgs.models import Organization
from userorg.settings import Settings
from userorg.telemetry.metrics import RECONCILE_DRIFT, RECONCILE_DURATION, RECONCILE_RUNS
from userorg.telemetry.tracing import RECONCILE_RUN_SPAN, Tracing

log = structlog.get_logger("userorg.reconciler")
PARKED = dt.datetime(9999, 1, 1, tzinfo=dt.UTC)
EXPLICIT_TRIGGERS = frozenset({"manual", "webhook", "config"})
MAX_SUMMARY_OPERATIONS = 500


def is_dependency_outage(error: BaseException) -> bool:
    """The database is unreachable (retry later) rather than the change being wrong."""
    if isinstance(error, sa_exc.DBAPIError) and (
        error.connection_invalidated
        or isinstance(error, sa_exc.OperationalError | sa_exc.InterfaceError)
    ):
        return not isinstance(error.orig, sqlite3.IntegrityError)
    return isinstance(error, sa_exc.TimeoutError | ConnectionError | TimeoutError)


class LeaseLost(Exception):
    """Another reconciler took the org over (our lease expired): stop without writing."""


class PlanRefused(Exception):
    def __init__(self, plan: Plan) -> None:
        super().__init__("plan refused")
        self.plan = plan


@dataclass
class Claim:
    org_id: uuid.UUID
    slug: str
    config: dict[str, Any]
    last_applied: str | None
    applied_config: dict[str, Any] | None
    sync_requested_at: dt.datetime | None
    sync_trigger: str | None
    force_commit: str | None
    check_requested_at: dt.datetime | None
    next_poll_at: dt.datetime | None
    retry_at: dt.datetime | None
    failures: int
    drift: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Outcome:
    org_id: uuid.UUID
    result: str  # busy | inactive | idle | noop | applied | healed | drift | failed | retry
    run_id: uuid.UUID | None = None
    commit_id: str | None = None
    error: dict[str, Any] | None = None


def _errors_json(errors: list[ConfigError]) -> dict[str, Any]:
    first = errors[0]
    return {
        "code": first.code,
        "message": first.render(),
        "errors": [e.to_json() for e in errors[:100]],
    }


def _summary(plan: Plan) -> dict[str, Any]:
    ops = [op.to_json() for op in plan.operations[:MAX_SUMMARY_OPERATIONS]]
    return {
        "counts": plan.counts(),
        "operations": ops,
        "truncated": len(plan.operations) > MAX_SUMMARY_OPERATIONS,
        "text": plan.render()[:20_000],
    }


class ReconcileEngine:
    def __init__(
        self,
        *,
        settings: Settings,
        session_factory: async_sessionmaker[AsyncSession],
        source: GitSource,
        budgets: BudgetPolicyPort | None,
        owner: str,
        publish: Publish | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.tracing = tracing
        self.settings = settings
        self.session_factory = session_factory
        self.source = source
        self.budgets = budgets
        self.owner = owner
        self.publish = publish

    def uow(self) -> UnitOfWork:
        return UnitOfWork(self.session_factory, publish=self.publish)

    # -- lease ----------------------------------------------------------------------------
    def _lease_until(self) -> dt.datetime:
        return utcnow() + dt.timedelta(seconds=self.settings.declarative_lease_seconds)

    async def _take_lease(self, session: AsyncSession, org_id: uuid.UUID) -> bool:
        now = utcnow()
        result = await session.execute(
            update(DeclarativeState)
            .where(
                DeclarativeState.org_id == org_id,
                (DeclarativeState.lease_owner.is_(None))
                | (DeclarativeState.lease_expires_at < now)
                | (DeclarativeState.lease_owner == self.owner),
            )
            .values(lease_owner=self.owner, lease_expires_at=self._lease_until())
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def _fence(self, session: AsyncSession, org_id: uuid.UUID) -> DeclarativeState:
        """Inside a writing transaction: extend our lease or fail if it is no longer ours."""
        if not await self._renew(session, org_id):
            raise LeaseLost(str(org_id))
        state = (
            await session.execute(
                select(DeclarativeState)
                .where(DeclarativeState.org_id == org_id)
                .execution_options(populate_existing=True)
            )
        ).scalar_one()
        return state

    async def _lock_managed_org(
        self, session: AsyncSession, org_id: uuid.UUID
    ) -> tuple[DeclarativeState, Organization]:
        """Inside the apply transaction: our lease (fenced) and the org, locked, still active
        and managed."""
        state = await self._fence(session, org_id)
        org = await session.get(Organization, org_id, with_for_update=True, populate_existing=True)
        if org is None or org.status == "pending_delete" or not is_active(org):
            raise DomainError("The organization is no longer managed", code="org_not_managed")
        return state, org

    async def _renew(self, session: AsyncSession, org_id: uuid.UUID) -> bool:
        result = await session.execute(
            update(DeclarativeState)
            .where(DeclarativeState.org_id == org_id, DeclarativeState.lease_owner == self.owner)
            .values(lease_expires_at=self._lease_until())
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def _heartbeat(self, org_id: uuid.UUID) -> None:
        interval = max(0.2, self.settings.declarative_lease_seconds / 3)
        while True:
            await asyncio.sleep(interval)
            try:
                async with self.uow() as uow:
                    await self._renew(uow.session, org_id)
            except Exception:
                log.warning("lease_renewal_failed", org_id=str(org_id))

    async def _release(self, org_id: uuid.UUID) -> None:
        async with self.uow() as uow:
            await uow.session.execute(
                update(DeclarativeState)
                .where(
                    DeclarativeState.org_id == org_id, DeclarativeState.lease_owner == self.owner
                )
                .values(lease_owner=None, lease_expires_at=None)
                .execution_options(synchronize_session=False)
            )

    # -- the run --------------------------------------------------------------------------
    async def run_org(self, org_id: uuid.UUID) -> Outcome:
        claim = await self._claim(org_id)
        if claim is None:
            return Outcome(org_id, "busy")
        if isinstance(claim, Outcome):
            await asyncio.shield(self._release(org_id))
            return claim
        heartbeat = asyncio.create_task(self._heartbeat(org_id), name=f"lease-{org_id}")
        span = (
            self.tracing.span(RECONCILE_RUN_SPAN, {"userorg.org_id": str(org_id)})
            if self.tracing is not None
            else contextlib.nullcontext()
        )
        try:
            with span:
                return await self._run(claim)
        except asyncio.CancelledError:
            # Graceful stop mid-run: the open transaction has rolled back; say so.
            await asyncio.shield(self._mark_interrupted(org_id))
            raise
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            await asyncio.shield(self._release(org_id))

    async def _mark_interrupted(self, org_id: uuid.UUID) -> None:
        with contextlib.suppress(Exception):
            async with self.uow() as uow:
                await uow.session.execute(
                    update(DeclarativeRun)
                    .where(
                        DeclarativeRun.org_id == org_id,
                        DeclarativeRun.status == "running",
                        DeclarativeRun.reconciler_id == self.owner,
                    )
                    .values(
                        status="failed",
                        finished_at=utcnow(),
                        error={
                            "code": "interrupted",
                            "message": "the reconciler was stopped during this run; nothing "
                            "of it was applied",
                        },
                    )
                    .execution_options(synchronize_session=False)
                )

    async def _claim(self, org_id: uuid.UUID) -> Claim | Outcome | None:
        async with self.uow() as uow:
            session = uow.session
            if not await self._take_lease(session, org_id):
                return None
            state = (
                await session.execute(
                    select(DeclarativeState)
                    .where(DeclarativeState.org_id == org_id)
                    .execution_options(populate_existing=True)
                )
            ).scalar_one()
            # Runs a dead reconciler left behind: their transaction never committed.
            await session.execute(
                update(DeclarativeRun)
                .where(DeclarativeRun.org_id == org_id, DeclarativeRun.status == "running")
                .values(
                    status="failed",
                    finished_at=utcnow(),
                    error={
                        "code": "interrupted",
                        "message": "the reconciler stopped during this run; nothing of it "
                        "was applied",
                    },
                )
                .execution_options(synchronize_session=False)
            )
            org = await session.get(Organization, org_id)
            if org is None or not is_active(org) or org.status == "pending_delete":
                state.sync_requested_at = None
                state.check_requested_at = None
                state.force_commit = None
                state.next_poll_at = PARKED
                if org is not None and config_of(org).get("paused") and state.current_revision_id:
                    await session.execute(
                        update(DeclarativeRevision)
                        .where(DeclarativeRevision.id == state.current_revision_id)
                        .values(status="paused", updated_at=utcnow())
                    )
                return Outcome(org_id, "inactive")
            return Claim(
                org_id=org_id,
                slug=org.slug,
                config=config_of(org),
                last_applied=state.last_applied_commit,
                applied_config=state.applied_config,
                sync_requested_at=state.sync_requested_at,
                sync_trigger=state.sync_trigger,
                force_commit=state.force_commit,
                check_requested_at=state.check_requested_at,
                next_poll_at=state.next_poll_at,
                retry_at=state.retry_at,
                failures=state.failures,
                drift=list(state.drift or []),
            )

    async def _run(self, claim: Claim) -> Outcome:
        now = utcnow()
        backing_off = claim.retry_at is not None and claim.retry_at > now
        due_poll = claim.next_poll_at is None or claim.next_poll_at <= now
        want_sync = claim.sync_requested_at is not None or (due_poll and not backing_off)
        if claim.retry_at is not None and claim.retry_at <= now:
            want_sync = True
        if not want_sync and claim.check_requested_at is None:
            return Outcome(claim.org_id, "idle")
        trigger = (
            (claim.sync_trigger or ("retry" if claim.failures else "poll"))
            if want_sync
            else "drift"
        )
        if not want_sync:
            return await self._check_drift(claim, trigger, synced=False)
        url = str(claim.config.get("repoUrl") or "")
        branch = str(claim.config.get("branch") or "main")
        path = str(claim.config.get("path") or ".")
        not_before = (
            claim.sync_requested_at.timestamp()
            if claim.sync_requested_at is not None
            else time.time() - self.settings.declarative_poll_interval_seconds / 2
        )
        started = time.perf_counter()
        try:
            head, files = await asyncio.wait_for(
                asyncio.to_thread(self._read, url, branch, path, not_before),
                timeout=self.settings.declarative_fetch_timeout_seconds,
            )
        except SourceError as error:
            return await self._transient_failure(claim, trigger, error.code, error.message, started)
        except TimeoutError:
            return await self._transient_failure(
                claim,
                trigger,
                "repo_timeout",
                f"fetching {url} took longer than "
                f"{self.settings.declarative_fetch_timeout_seconds:g} s",
                started,
            )
        if head == claim.last_applied:
            return await self._check_drift(claim, trigger, synced=True)
        desired: DesiredOrg | None = None
        invalid: InvalidConfig | None = None
        try:
            desired = await asyncio.to_thread(
                load_documents, files, max_file_bytes=self.settings.declarative_max_file_bytes
            )
        except InvalidConfig as error:
            invalid = error
        return await self._process_commit(claim, trigger, head, desired, invalid, started)

    def _read(self, url: str, branch: str, path: str, not_before: float) -> tuple[str, Any]:
        if not url:
            raise SourceError("no_repository", "the org has no repoUrl configured")
        head = self.source.head(url, branch, not_before=not_before)
        files = self.source.read_folder(url, head.commit_id, path)
        return head.commit_id, files

    # -- bookkeeping ----------------------------------------------------------------------
    def _settle_requests(self, state: DeclarativeState, claim: Claim, *, synced: bool) -> None:
        """Clear the requests this run served (not the ones that arrived meanwhile)."""
        if (
            claim.sync_requested_at is not None
            and state.sync_requested_at == claim.sync_requested_at
        ):
            state.sync_requested_at = None
            state.sync_trigger = None
            state.force_commit = None
        if (
            claim.check_requested_at is not None
            and state.check_requested_at == claim.check_requested_at
        ):
            state.check_requested_at = None
        now = utcnow()
        state.last_checked_at = now
        if synced:
            state.next_poll_at = now + dt.timedelta(
                seconds=self.settings.declarative_poll_interval_seconds
            )
            state.retry_at = None
            state.failures = 0

    async def _revision(
        self, session: AsyncSession, org_id: uuid.UUID, commit_id: str, trigger: str
    ) -> DeclarativeRevision:
        revision = (
            await session.execute(
                select(DeclarativeRevision).where(
                    DeclarativeRevision.org_id == org_id, DeclarativeRevision.commit_id == commit_id
                )
            )
        ).scalar_one_or_none()
        if revision is None:
            revision = DeclarativeRevision(
                org_id=org_id, commit_id=commit_id, trigger=trigger, status="pending"
            )
            session.add(revision)
            await session.flush()
        return revision

    async def _trim_runs(self, session: AsyncSession, org_id: uuid.UUID) -> None:
        keep = self.settings.declarative_run_history
        cutoff = (
            await session.execute(
                select(DeclarativeRun.id)
                .where(DeclarativeRun.org_id == org_id)
                .order_by(DeclarativeRun.id.desc())
                .offset(keep)
                .limit(1)
            )
        ).scalar_one_or_none()
        if cutoff is not None:
            await session.execute(
                delete(DeclarativeRun).where(
                    DeclarativeRun.org_id == org_id, DeclarativeRun.id <= cutoff
                )
            )

    def _finish_run(
        self,
        run: DeclarativeRun,
        *,
        status: str,
        started: float,
        operations: int = 0,
        summary: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
    ) -> None:
        elapsed = time.perf_counter() - started
        run.status = status
        run.finished_at = utcnow()
        run.duration_ms = int(elapsed * 1000)
        run.operations = operations
        if summary is not None:
            run.summary = summary
        run.error = error
        RECONCILE_RUNS.labels("succeeded" if status == "successful" else "failed").inc()
        RECONCILE_DURATION.observe(elapsed)

    async def _start_run(
        self, claim: Claim, commit_id: str | None, trigger: str, revision_id: uuid.UUID | None
    ) -> uuid.UUID:
        async with self.uow() as uow:
            await self._fence(uow.session, claim.org_id)
            run = DeclarativeRun(
                org_id=claim.org_id,
                revision_id=revision_id,
                commit_id=commit_id,
                trigger=trigger,
                status="running",
                reconciler_id=self.owner,
            )
            uow.session.add(run)
            await uow.session.flush()
            return run.id

    # -- outcomes -------------------------------------------------------------------------
    async def _transient_failure(
        self,
        claim: Claim,
        trigger: str,
        code: str,
        message: str,
        started: float,
        run_id: uuid.UUID | None = None,
    ) -> Outcome:
        """A failure worth retrying (source unreachable, an apply error): back off."""
        error = {"code": code, "message": message}
        failures = claim.failures + 1
        delay = min(
            self.settings.declarative_retry_max_seconds,
            self.settings.declarative_retry_base_seconds * 2 ** min(claim.failures, 30),
        )
        async with self.uow() as uow:
            session = uow.session
            state = await self._fence(session, claim.org_id)
            self._settle_requests(state, claim, synced=False)
            state.failures = failures
            state.retry_at = utcnow() + dt.timedelta(seconds=delay)
            state.next_poll_at = state.retry_at
            state.last_error = {
                **error,
                "at": utcnow().isoformat(),
                "retryAt": state.retry_at.isoformat(),
            }
            run = await session.get(DeclarativeRun, run_id) if run_id else None
            if run is None:
                run = DeclarativeRun(
                    org_id=claim.org_id,
                    trigger=trigger,
                    status="running",
                    reconciler_id=self.owner,
                )
                session.add(run)
            self._finish_run(run, status="failed", started=started, error=error)
            await session.flush()
            state.last_run_id = run.id
            if claim.failures == 0 or trigger in EXPLICIT_TRIGGERS:
                await audit.record(
                    session,
                    action="declarative:source:fail",
                    actor=RECONCILER_ACTOR,
                    org_id=claim.org_id,
                    outcome="failure",
                    reason=code,
                    target_type="repository",
                    target_id=str(claim.config.get("repoUrl"))[:100],
                    metadata={**error, "runId": str(run.id), "retryInSeconds": delay},
                )
            await self._trim_runs(session, claim.org_id)
        log.warning("declarative_source_failed", org_id=str(claim.org_id), code=code, error=message)
        return Outcome(claim.org_id, "retry", run.id, error=error)

    async def _fail_commit(
        self,
        claim: Claim,
        *,
        trigger: str,
        commit_id: str,
        errors: list[ConfigError],
        started: float,
        run_id: uuid.UUID | None = None,
        plan: Plan | None = None,
    ) -> Outcome:
        error = _errors_json(errors)
        async with self.uow() as uow:
            session = uow.session
            state = await self._fence(session, claim.org_id)
            revision = await self._revision(session, claim.org_id, commit_id, trigger)
            revision.status = "failed"
            revision.error = error
            revision.updated_at = utcnow()
            run = await session.get(DeclarativeRun, run_id) if run_id else None
            if run is None:
                run = DeclarativeRun(
                    org_id=claim.org_id,
                    commit_id=commit_id,
                    trigger=trigger,
                    status="running",
                    reconciler_id=self.owner,
                )
                session.add(run)
            run.revision_id = revision.id
            self._finish_run(
                run,
                status="failed",
                started=started,
                error=error,
                summary=_summary(plan) if plan is not None else None,
            )
            await session.flush()
            self._settle_requests(state, claim, synced=True)
            state.current_revision_id = revision.id
            state.last_run_id = run.id
            state.last_error = {**error, "commitId": commit_id, "at": utcnow().isoformat()}
            await audit.record(
                session,
                action="declarative:revision:fail",
                actor=RECONCILER_ACTOR,
                org_id=claim.org_id,
                outcome="failure",
                reason=error["code"],
                target_type="revision",
                target_id=commit_id,
                metadata={
                    "commitId": commit_id,
                    "runId": str(run.id),
                    "trigger": trigger,
                    "lastAppliedCommit": claim.last_applied,
                    "errors": error["errors"][:20],
                },
            )
            await self._trim_runs(session, claim.org_id)
        log.info(
            "declarative_commit_failed",
            org_id=str(claim.org_id),
            commit=commit_id,
            code=error["code"],
        )
        return Outcome(claim.org_id, "failed", run.id, commit_id, error)

    async def _process_commit(
        self,
        claim: Claim,
        trigger: str,
        head: str,
        desired: DesiredOrg | None,
        invalid: InvalidConfig | None,
        started: float,
    ) -> Outcome:
        forced = claim.force_commit == head
        async with self.uow() as uow:
            revision = await self._revision(uow.session, claim.org_id, head, trigger)
            known_bad = revision.status == "failed"
        if known_bad and trigger not in EXPLICIT_TRIGGERS and not forced:
            # The branch still points at a commit that failed: keep the last good state and
            # keep watching it for drift until the branch moves.
            return await self._check_drift(claim, trigger, synced=True)
        url = str(claim.config.get("repoUrl"))
        if claim.last_applied and not forced:
            descends = await asyncio.to_thread(
                self.source.is_ancestor, url, claim.last_applied, head
            )
            if not descends:
                return await self._fail_commit(
                    claim,
                    trigger=trigger,
                    commit_id=head,
                    started=started,
                    errors=[
                        ConfigError(
                            f"commit {head[:12]} does not descend from the last applied commit "
                            f"{claim.last_applied[:12]} (force-push or rollback); an admin can "
                            "accept it with POST /v1/declarative/config {orgId, forceCommit}",
                            code="non_fast_forward",
                        )
                    ],
                )
        if invalid is not None or desired is None:
            errors = invalid.errors if invalid else [ConfigError("no configuration")]
            return await self._fail_commit(
                claim, trigger=trigger, commit_id=head, errors=errors, started=started
            )
        run_id = await self._start_run(claim, head, trigger, revision.id)
        metadata = {"commitId": head, "runId": str(run_id), "trigger": trigger}
        try:
            async with self.uow() as uow:
                session = uow.session
                state, org = await self._lock_managed_org(session, claim.org_id)
                plan = await self.plan_against(session, org, desired, head, claim.last_applied)
                if plan.errors:
                    raise PlanRefused(plan)
                if forced:
                    await audit.record(
                        session,
                        action="declarative:revision:force_apply",
                        actor=RECONCILER_ACTOR,
                        org_id=org.id,
                        target_type="revision",
                        target_id=head,
                        metadata={**metadata, "lastAppliedCommit": claim.last_applied},
                    )
                count = await apply_plan(
                    uow,
                    org=org,
                    plan=plan,
                    desired=desired,
                    metadata=metadata,
                    budgets=self.budgets,
                )
                revision = await self._revision(session, claim.org_id, head, trigger)
                revision.status = "synced"
                revision.error = None
                revision.operations = count
                revision.synced_at = utcnow()
                revision.updated_at = utcnow()
                run = await session.get(DeclarativeRun, run_id)
                assert run is not None
                self._finish_run(
                    run,
                    status="successful",
                    started=started,
                    operations=count,
                    summary=_summary(plan),
                )
                await audit.record(
                    session,
                    action="declarative:revision:apply",
                    actor=RECONCILER_ACTOR,
                    org_id=org.id,
                    target_type="revision",
                    target_id=head,
                    metadata={
                        **metadata,
                        "lastAppliedCommit": claim.last_applied,
                        "counts": plan.counts(),
                        "notApplied": [op.to_json() for op in plan.not_applied][:50],
                    },
                )
                self._settle_requests(state, claim, synced=True)
                state.last_applied_commit = head
                state.last_applied_at = utcnow()
                state.applied_config = desired.to_json()
                state.current_revision_id = revision.id
                state.last_run_id = run_id
                state.last_error = None
                state.drift = []
                state.warnings = [op.to_json() for op in plan.not_applied][:200]
                await self._trim_runs(session, claim.org_id)
        except PlanRefused as refused:
            return await self._fail_commit(
                claim,
                trigger=trigger,
                commit_id=head,
                errors=refused.plan.errors,
                started=started,
                run_id=run_id,
                plan=refused.plan,
            )
        except DomainError as error:
            return await self._fail_commit(
                claim,
                trigger=trigger,
                commit_id=head,
                errors=[ConfigError(error.message, code=error.code, field=None)],
                started=started,
                run_id=run_id,
            )
        except LeaseLost:
            log.warning("declarative_lease_lost", org_id=str(claim.org_id))
            return Outcome(claim.org_id, "busy", run_id, head)
        except Exception as error:
            if is_dependency_outage(error):
                raise  # the worker backs off; the run is marked interrupted next time
            # A conflicting concurrent change or a bug: nothing was applied; say so and retry.
            log.exception("declarative_apply_error", org_id=str(claim.org_id), commit=head)
            return await self._transient_failure(
                claim,
                trigger,
                "apply_error",
                f"applying {head[:12]} failed and was rolled back: "
                f"{type(error).__name__}: {str(error)[:300]}",
                started,
                run_id=run_id,
            )
        log.info(
            "declarative_applied",
            org_id=str(claim.org_id),
            commit=head,
            operations=count,
            trigger=trigger,
        )
        await self._announce(claim.org_id)
        return Outcome(claim.org_id, "applied", run_id, head)

    async def plan_against(
        self,
        session: AsyncSession,
        org: Organization,
        desired: DesiredOrg,
        head: str | None,
        base: str | None,
    ) -> Plan:
        actual = await load_actual(session, org=org, budgets=self.budgets)
        plan = compute_plan(
            desired,
            actual,
            prune=bool(config_of(org).get("prune")),
            max_removal_fraction=self.settings.declarative_max_removal_fraction,
        )
        plan.commit_id = head
        plan.base_commit = base
        return plan

    async def _announce(self, org_id: uuid.UUID) -> None:
        if self.publish is not None:
            with contextlib.suppress(Exception):
                await self.publish(CHANNEL, {"type": "synced", "orgId": str(org_id)})

    async def _check_drift(self, claim: Claim, trigger: str, *, synced: bool) -> Outcome:
        """Compare the actual state with the last applied commit's declared state."""
        started = time.perf_counter()
        async with self.uow() as uow:
            session = uow.session
            state = await self._fence(session, claim.org_id)
            self._settle_requests(state, claim, synced=synced)
            if claim.applied_config is None or claim.last_applied is None:
                return Outcome(claim.org_id, "noop")
            org = await session.get(Organization, claim.org_id, populate_existing=True)
            assert org is not None
            desired = DesiredOrg.from_json(claim.applied_config)
            plan = await self.plan_against(
                session, org, desired, claim.last_applied, claim.last_applied
            )
            items = [op.to_json() for op in plan.applicable]
            revision = await self._revision(session, claim.org_id, claim.last_applied, trigger)
            mode = claim.config.get("driftMode", "selfHeal")
            if not items:
                if state.drift:
                    state.drift = []
                    await audit.record(
                        session,
                        action="declarative:drift:resolve",
                        actor=RECONCILER_ACTOR,
                        org_id=org.id,
                        target_type="revision",
                        target_id=claim.last_applied,
                        metadata={"commitId": claim.last_applied},
                    )
                if revision.status == "drift_detected":
                    revision.status = "synced"
                    revision.updated_at = utcnow()
                return Outcome(claim.org_id, "noop", commit_id=claim.last_applied)
            heal = mode == "selfHeal" and plan.valid
            if not heal:
                changed = items != state.drift
                state.drift = items
                if plan.errors and mode == "selfHeal":
                    state.last_error = {
                        **_errors_json(plan.errors),
                        "at": utcnow().isoformat(),
                        "context": "self-heal refused",
                    }
                if revision.status in {"synced", "pending"}:
                    revision.status = "drift_detected"
                    revision.updated_at = utcnow()
                if changed:
                    RECONCILE_DRIFT.labels("reported").inc(len(items))
                    await audit.record(
                        session,
                        action="declarative:drift:detect",
                        actor=RECONCILER_ACTOR,
                        org_id=org.id,
                        target_type="revision",
                        target_id=claim.last_applied,
                        metadata={
                            "commitId": claim.last_applied,
                            "mode": mode,
                            "trigger": trigger,
                            "items": items[:50],
                        },
                    )
                return Outcome(claim.org_id, "drift", commit_id=claim.last_applied)
        return await self._heal(claim, trigger, started)

    async def _heal(self, claim: Claim, trigger: str, started: float) -> Outcome:
        assert claim.applied_config is not None
        assert claim.last_applied is not None
        commit_id = claim.last_applied
        run_id = await self._start_run(
            claim, commit_id, "drift" if trigger == "drift" else trigger, None
        )
        metadata = {"commitId": commit_id, "runId": str(run_id), "trigger": trigger, "drift": True}
        desired = DesiredOrg.from_json(claim.applied_config)
        try:
            async with self.uow() as uow:
                session = uow.session
                state, org = await self._lock_managed_org(session, claim.org_id)
                plan = await self.plan_against(session, org, desired, commit_id, commit_id)
                if plan.errors:
                    raise PlanRefused(plan)
                items = [op.to_json() for op in plan.applicable]
                await audit.record(
                    session,
                    action="declarative:drift:detect",
                    actor=RECONCILER_ACTOR,
                    org_id=org.id,
                    target_type="revision",
                    target_id=commit_id,
                    metadata={**metadata, "mode": "selfHeal", "items": items[:50]},
                )
                count = await apply_plan(
                    uow,
                    org=org,
                    plan=plan,
                    desired=desired,
                    metadata=metadata,
                    budgets=self.budgets,
                )
                await audit.record(
                    session,
                    action="declarative:drift:revert",
                    actor=RECONCILER_ACTOR,
                    org_id=org.id,
                    target_type="revision",
                    target_id=commit_id,
                    metadata={**metadata, "counts": plan.counts()},
                )
                run = await session.get(DeclarativeRun, run_id)
                assert run is not None
                revision = await self._revision(session, claim.org_id, commit_id, trigger)
                run.revision_id = revision.id
                if revision.status == "drift_detected":
                    revision.status = "synced"
                self._finish_run(
                    run,
                    status="successful",
                    started=started,
                    operations=count,
                    summary=_summary(plan),
                )
                state.drift = []
                state.last_run_id = run_id
                await self._trim_runs(session, claim.org_id)
        except (PlanRefused, DomainError) as error:
            message = (
                _errors_json(error.plan.errors)
                if isinstance(error, PlanRefused)
                else {"code": error.code, "message": error.message}
            )
            async with self.uow() as uow:
                state = await self._fence(uow.session, claim.org_id)
                run = await uow.session.get(DeclarativeRun, run_id)
                assert run is not None
                self._finish_run(run, status="failed", started=started, error=message)
                state.last_error = {**message, "at": utcnow().isoformat(), "context": "self-heal"}
                state.last_run_id = run_id
            return Outcome(claim.org_id, "failed", run_id, commit_id, message)
        except LeaseLost:
            return Outcome(claim.org_id, "busy", run_id, commit_id)
        RECONCILE_DRIFT.labels("healed").inc(count)
        log.info("declarative_drift_healed", org_id=str(claim.org_id), operations=count)
        await self._announce(claim.org_id)
        return Outcome(claim.org_id, "healed", run_id, commit_id)

    # -- plans and dry runs for the API ----------------------------------------------------
    async def fetch_desired(
        self, config: dict[str, Any], *, not_before: float
    ) -> tuple[str | None, DesiredOrg | None, list[ConfigError]]:
        """Read and validate the org's folder at the branch head (for plans and dry runs)."""
        url = str(config.get("repoUrl") or "")
        try:
            head, files = await asyncio.wait_for(
                asyncio.to_thread(
                    self._read,
                    url,
                    str(config.get("branch") or "main"),
                    str(config.get("path") or "."),
                    not_before,
                ),
                timeout=self.settings.declarative_fetch_timeout_seconds,
            )
        except SourceError as error:
            return None, None, [ConfigError(error.message, code=error.code)]
        except TimeoutError:
            return None, None, [ConfigError(f"fetching {url} timed out", code="repo_timeout")]
        try:
            desired = await asyncio.to_thread(
                load_documents, files, max_file_bytes=self.settings.declarative_max_file_bytes
            )
        except InvalidConfig as error:
            return head, None, error.errors
        return head, desired, []

    async def ancestry_error(
        self, config: dict[str, Any], last_applied: str | None, head: str, force_commit: str | None
    ) -> ConfigError | None:
        if not last_applied or force_commit == head:
            return None
        descends = await asyncio.to_thread(
            self.source.is_ancestor, str(config.get("repoUrl")), last_applied, head
        )
        if descends:
            return None
        return ConfigError(
            f"commit {head[:12]} does not descend from the last applied commit "
            f"{last_applied[:12]}; it would be refused",
            code="non_fast_forward",
        )
