"""Declarative management I/O models."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any, Literal

from pydantic import Field, StrictBool, StringConstraints

from userorg.schemas import InputModel, OutputModel

RevisionStatus = Literal["pending", "synced", "failed", "drift_detected", "paused"]
RunStatus = Literal["running", "successful", "failed"]
OrgRef = Annotated[str, StringConstraints(min_length=1, max_length=63)]
CommitId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{40}$")]


class SyncRequest(InputModel):
    """Ask for a sync now. ``dryRun`` goes through the real apply path and rolls it back.

    ``forceCommit`` is the explicit admin action that accepts a branch head which does not
    descend from the last applied commit (a force-push or a rollback): it must name that head.
    """

    org_id: OrgRef = Field(description="The org's id or slug")
    dry_run: StrictBool = False
    force_commit: CommitId | None = None


class ConfigProblem(OutputModel):
    code: str
    message: str
    file: str | None = None
    line: int | None = None
    field: str | None = None


class OperationRead(OutputModel):
    kind: Literal["organization", "role", "member", "service_account", "budget_policy"]
    action: Literal["create", "update", "delete"]
    target: str
    changes: dict[str, dict[str, Any]]
    applied: bool = Field(description="False when the operation is reported but not applied")
    skipped: str | None = Field(
        default=None, description="Why not applied: prune_disabled, budgets_capability_unavailable"
    )


class PlanCounts(OutputModel):
    create: int
    update: int
    delete: int
    not_applied: int


class PlanRead(OutputModel):
    org_id: uuid.UUID
    commit_id: str | None = None
    base_commit: str | None = Field(default=None, description="The last applied commit")
    valid: bool
    has_changes: bool
    counts: PlanCounts
    operations: list[OperationRead]
    errors: list[ConfigProblem]
    text: str = Field(description="Human-readable rendering of the plan")


class SyncAccepted(OutputModel):
    org_id: uuid.UUID
    dry_run: Literal[False] = False
    status: Literal["pending"] = "pending"
    sync_requested_at: dt.datetime


class DryRunRead(PlanRead):
    dry_run: Literal[True] = True
    would_succeed: bool
    apply_error: dict[str, Any] | None = Field(
        default=None, description="How applying failed (then rolled back), if it did"
    )


class RevisionRead(OutputModel):
    commit_id: str
    status: RevisionStatus
    trigger: str
    created_at: dt.datetime
    synced_at: dt.datetime | None = None
    error: dict[str, Any] | None = None


class RunRead(OutputModel):
    run_id: uuid.UUID
    status: RunStatus
    trigger: str
    dry_run: bool
    commit_id: str | None = None
    started_at: dt.datetime
    finished_at: dt.datetime | None = None
    duration_ms: int | None = None
    operations: int
    counts: dict[str, int] | None = None
    error: dict[str, Any] | None = None


class LeaseRead(OutputModel):
    owner: str
    expires_at: dt.datetime


class StatusRead(OutputModel):
    org_id: uuid.UUID
    enabled: bool
    paused: bool
    mode: Literal["selfHeal", "lock", "report"]
    prune: bool
    repo: str | None = None
    branch: str | None = None
    path: str | None = None
    status: RevisionStatus | None = Field(
        default=None, description="Null when declarative management is disabled"
    )
    last_applied_commit: str | None = None
    last_applied_at: dt.datetime | None = None
    current_revision: RevisionRead | None = None
    last_run: RunRead | None = None
    drift: list[dict[str, Any]] = Field(description="Managed fields changed outside Git")
    warnings: list[dict[str, Any]] = Field(
        description="Declared but not applied (e.g. budget policy: budgets capability unavailable)"
    )
    last_error: dict[str, Any] | None = None
    sync_requested_at: dt.datetime | None = None
    next_poll_at: dt.datetime | None = None
    lease: LeaseRead | None = Field(default=None, description="Set while a reconciler works")


class ReconcilerStatusRead(StatusRead):
    reconciler_id: str
    in_flight: bool
    queue_depth: int
    last_outcome: str | None = None


class WebhookAccepted(OutputModel):
    accepted: bool
    event: str
    orgs: int = Field(description="How many orgs follow this repository and branch")
    commit_id: str | None = None
