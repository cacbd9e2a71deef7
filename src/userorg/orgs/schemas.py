"""Organization I/O models."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any, Literal

from pydantic import Field, StrictBool, StringConstraints, model_validator

from userorg.schemas import Email, InputModel, Name, OutputModel, RoleName, Slug

OrgStatus = Literal["active", "suspended", "pending_delete"]


class DeclarativeConfig(InputModel):
    """Opt-in to Git-managed configuration (see docs/declarative.md).

    ``enabled`` turns management on or off (the sync state is kept), ``paused`` stops the
    reconciler without forgetting anything, ``driftMode`` chooses what happens to changes made
    through the API to managed fields: ``selfHeal`` reverts them, ``lock`` refuses them (409
    ``managed_by_git``), ``report`` only reports them. ``prune`` allows deletions."""

    enabled: StrictBool = False
    repo_url: (
        Annotated[
            str,
            StringConstraints(min_length=1, max_length=2048, pattern=r"^(https?://|file://|/)\S+$"),
        ]
        | None
    ) = None
    branch: Annotated[
        str, StringConstraints(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9._/-]+$")
    ] = "main"
    path: Annotated[
        str, StringConstraints(min_length=1, max_length=1024, pattern=r"^[A-Za-z0-9._/-]+$")
    ] = "."
    drift_mode: Literal["selfHeal", "lock", "report"] = "selfHeal"
    prune: StrictBool = False
    paused: StrictBool = False

    @model_validator(mode="after")
    def _check(self) -> DeclarativeConfig:
        if self.enabled and not self.repo_url:
            raise ValueError("repoUrl is required when declarative management is enabled")
        if ".." in self.path.split("/") or ".." in self.branch.split("/"):
            raise ValueError("path and branch must not contain '..'")
        return self


class OrgCreate(InputModel):
    name: Name
    slug: Slug
    billing_owner_email: Email
    declarative: DeclarativeConfig | None = None
    mfa_required_roles: Annotated[list[RoleName], Field(max_length=50)] = []


class OrgUpdate(InputModel):
    name: Name | None = None
    billing_owner_email: Email | None = None
    declarative: DeclarativeConfig | None = None
    mfa_required_roles: Annotated[list[RoleName], Field(max_length=50)] | None = None


class OrgSuspend(InputModel):
    reason: Annotated[str, StringConstraints(min_length=1, max_length=500)]


class OrgRead(OutputModel):
    org_id: uuid.UUID = Field(validation_alias="id")
    name: str
    slug: str
    billing_owner_email: str
    status: OrgStatus
    status_reason: str | None = None
    purge_after: dt.datetime | None = None
    mfa_required_roles: list[str]
    declarative: dict[str, Any] | None = None
    version: int
    created_at: dt.datetime
    updated_at: dt.datetime
