"""Policy decision point I/O models."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints

from userorg.schemas import InputModel, OutputModel, RoleName

Action = Annotated[str, StringConstraints(min_length=3, max_length=64, pattern=r"^[a-z_:]+$")]
OrgRef = Annotated[str, StringConstraints(min_length=1, max_length=100)]
ResourceType = Literal[
    "org",
    "user",
    "invite",
    "role",
    "session",
    "service_account",
    "api_key",
    "budget",
    "audit",
    "declarative",
    "policy",
    "model",
]


class EvaluateSubject(InputModel):
    org_id: OrgRef = Field(description="The org the principal acts in (UUID or slug)")
    principal_id: uuid.UUID
    principal_type: Literal["user", "service_account"]
    roles: Annotated[list[RoleName], Field(max_length=64)] | None = Field(
        default=None,
        description="Narrows the principal's roles in the org to these (never widens them)",
    )


class EvaluateResource(InputModel):
    type: ResourceType
    id: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None
    org_id: uuid.UUID | None = Field(
        default=None, description="The org the resource belongs to (cross-tenant check)"
    )


class EvaluateRequest(InputModel):
    subject: EvaluateSubject
    action: Action = Field(description="A scope of the catalogue, e.g. inference:invoke")
    resource: EvaluateResource | None = None
    context: dict[str, Any] | None = Field(
        default=None,
        description="Free-form facts for custom policies (input.context); size-limited",
    )


class EvaluateResponse(OutputModel):
    decision: Literal["allow", "deny"]
    policy_id: str
    reason: str
    ttl_seconds: int
    obligations: list[dict[str, Any]]


class PolicyCacheInfo(OutputModel):
    entries: int
    hits: int
    misses: int


class PolicyInfo(OutputModel):
    engine: Literal["regorus", "opa"]
    # regorus only: the compiled decision (RVM program) or the interpreter.
    evaluator: Literal["compiled", "interpreter"] | None = None
    revision: str | None
    packages: list[str]
    modules: list[str]
    loaded_at: str | None = None
    last_reload_error: dict[str, Any] | None = None
    url: str | None = None
    cache: PolicyCacheInfo
