"""Hot-path bodies. The fast path parses and encodes them with msgspec (``*In`` structs); the
Pydantic models below describe the same shapes in the OpenAPI contract."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

import msgspec
from pydantic import Field, StrictFloat, StrictInt, StringConstraints

from userorg.schemas import InputModel, OutputModel

MAX_CREDENTIAL = 4096


# -- wire structs (msgspec): what the fast path actually parses ---------------------------
class ValidateApiKeyIn(msgspec.Struct, forbid_unknown_fields=True):
    apiKeySecret: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_CREDENTIAL)]
    orgId: Annotated[str, msgspec.Meta(max_length=100)] | None = None


class AuthorizeIn(msgspec.Struct, forbid_unknown_fields=True):
    credential: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_CREDENTIAL)]
    action: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    resource: Annotated[str, msgspec.Meta(max_length=512)]
    estimatedCost: Annotated[float, msgspec.Meta(ge=0, le=1e12)] | None = None
    context: Annotated[dict[str, Any], msgspec.Meta(max_length=50)] | None = None


# -- contract models (Pydantic): documentation of the same shapes -------------------------
class ValidateApiKeyRequest(InputModel):
    api_key_secret: Annotated[str, StringConstraints(min_length=1, max_length=MAX_CREDENTIAL)]
    org_id: Annotated[str, StringConstraints(max_length=100)] | None = Field(
        default=None, description="When given, the key must belong to this org"
    )


class ValidateApiKeyResponse(OutputModel):
    """``valid: true`` carries every field but ``message``; ``valid: false`` only ``message``."""

    valid: bool
    message: str | None = None
    api_key_id: uuid.UUID | None = None
    organization_id: uuid.UUID | None = None
    principal_id: uuid.UUID | None = None
    principal_type: Literal["service_account", "user"] | None = None
    scopes: list[str] | None = None
    status: str | None = None
    expires_at: str | None = None


class AuthorizeRequest(InputModel):
    credential: Annotated[str, StringConstraints(min_length=1, max_length=MAX_CREDENTIAL)] = Field(
        description="The API key or access token exactly as the caller presented it"
    )
    action: Annotated[str, StringConstraints(min_length=1, max_length=100)] = Field(
        examples=["inference:invoke"]
    )
    resource: Annotated[str, StringConstraints(max_length=512)] = Field(
        examples=["gpt-large"], description="What the action applies to, e.g. a model name"
    )
    estimated_cost: StrictFloat | StrictInt | None = Field(default=None, ge=0, le=1e12)
    context: dict[str, Any] | None = Field(
        default=None,
        description="Free-form facts for the policy; ``orgId`` picks the org of a user token",
    )


class BudgetView(OutputModel):
    status: Literal["ok", "warn", "block"]
    remaining: str | None = Field(
        default=None,
        description="Decimal string: what is left under the block threshold (null: no budget)",
    )


class AuthorizeResponse(OutputModel):
    decision: Literal["allow", "deny"]
    reason: str = Field(
        examples=["granted_by_role", "key_revoked", "key_expired", "principal_suspended"]
    )
    org_id: uuid.UUID | None = None
    principal_id: uuid.UUID | None = None
    principal_type: Literal["service_account", "user"] | None = None
    scopes: list[str]
    budget: BudgetView
    reservation_id: str | None = Field(
        default=None,
        description="Set when estimatedCost was reserved; settle it with usage carrying it",
    )
    ttl_seconds: int
