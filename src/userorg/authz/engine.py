"""The policy decision: given who asks, where, and for what permission, allow or deny with a reason.

Every enforcement point calls ``PolicyEngine.decide`` (or ``decide_async``). The rules live in
Rego (``policies/``); ``authz.rego.RegoEngine`` evaluates them in-process with regorus and
``authz.opa.RemoteOpaEngine`` asks an OPA server. Both cache decisions keyed by the request.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from userorg.errors import ServiceUnavailable


@dataclass(frozen=True, slots=True)
class AuthzRequest:
    """Everything a decision depends on (and so the key of the decision cache).

    ``granted_scopes`` is what the enforcement point resolved from the subject's roles (kept for
    callers written before the Rego engine); the policy itself grants from ``roles`` (system
    roles, from the catalogue data) and ``custom_role_scopes`` (the scopes of the subject's custom
    roles in the org). When ``custom_role_scopes`` is None, ``granted_scopes`` stands for it.
    """

    permission: str
    principal_id: str
    principal_type: str
    principal_status: str = "active"
    is_platform_admin: bool = False
    org_id: str | None = None
    org_status: str | None = None
    membership_status: str | None = None
    roles: frozenset[str] = field(default_factory=frozenset)
    granted_scopes: frozenset[str] = field(default_factory=frozenset)
    credential_scopes: frozenset[str] | None = None
    custom_role_scopes: frozenset[str] | None = None
    credential_type: str | None = None  # "session" | "api_key" | "token" | ...
    mfa_verified_at: float | None = None  # Unix seconds of the last second-factor check
    amr: tuple[str, ...] = ()
    resource_type: str | None = None
    resource_id: str | None = None
    resource_org_id: str | None = None
    budget_status: str | None = None  # "ok" | "warn" | "block", filled by the budget service
    # Free-form facts for custom policies. Not hashed (dicts are not hashable) but compared, so
    # requests that differ only in context share a hash bucket yet never a cache entry.
    context: Mapping[str, Any] | None = field(default=None, hash=False)

    def to_input(self, *, now: float | None = None) -> dict[str, Any]:
        """The policy input document (docs/authorization.md describes it)."""
        custom = self.custom_role_scopes
        if custom is None:
            custom = self.granted_scopes
        subject: dict[str, Any] = {
            "id": self.principal_id,
            "type": self.principal_type,
            "status": self.principal_status,
            "platform_admin": self.is_platform_admin,
            "roles": sorted(self.roles),
            "custom_role_scopes": sorted(custom),
            "mfa": {"verified_at": self.mfa_verified_at, "amr": list(self.amr)},
        }
        document: dict[str, Any] = {
            "action": self.permission,
            "now": time.time() if now is None else now,
            "subject": subject,
        }
        if self.org_id is not None:
            document["org"] = {"id": self.org_id, "status": self.org_status}
        if self.membership_status is not None:
            document["membership"] = {"status": self.membership_status}
        if self.credential_scopes is not None or self.credential_type is not None:
            credential: dict[str, Any] = {"type": self.credential_type or "token"}
            if self.credential_scopes is not None:
                credential["scopes"] = sorted(self.credential_scopes)
            document["credential"] = credential
        if self.resource_type is not None or self.resource_org_id is not None:
            document["resource"] = {
                "type": self.resource_type,
                "id": self.resource_id,
                "org_id": self.resource_org_id,
            }
        if self.budget_status is not None:
            document["budget"] = {"status": self.budget_status}
        if self.context:
            document["context"] = dict(self.context)
        return document


@dataclass(frozen=True, slots=True)
class Decision:
    allow: bool
    reason: str
    policy_id: str
    obligations: tuple[Mapping[str, Any], ...] = field(default=(), hash=False)
    ttl_seconds: int = 0
    revision: str = ""


class PolicyUnavailable(ServiceUnavailable):
    """The engine cannot decide (no policy loaded, OPA unreachable): fail closed with a 503."""

    code = "policy_unavailable"

    def __init__(self, message: str = "The policy engine cannot decide right now") -> None:
        super().__init__(message)


class PolicyEngine(Protocol):
    """The decision point. ``decide`` is synchronous and costs ~1 µs on a cache hit (the
    gateway hot path); ``decide_async`` also works for engines that do I/O (remote OPA)."""

    def decide(self, request: AuthzRequest) -> Decision: ...

    async def decide_async(self, request: AuthzRequest) -> Decision: ...


# Decision as the policy returns it (the JSON of data.userorg.authz.decision).
def decision_from_document(document: Any, *, revision: str) -> Decision:
    """Validate the policy's answer; anything malformed is a deny (fail closed)."""
    if not isinstance(document, dict):
        return Decision(False, "policy_error", "userorg.authz.engine", revision=revision)
    allow = document.get("allow")
    reason = document.get("reason")
    policy_id = document.get("policy_id")
    obligations = document.get("obligations", [])
    ttl = document.get("ttl_seconds", 0)
    if (
        not isinstance(allow, bool)
        or not isinstance(reason, str)
        or not isinstance(policy_id, str)
        or not isinstance(obligations, list)
        or not all(isinstance(item, dict) for item in obligations)
        or not isinstance(ttl, int | float)
        or isinstance(ttl, bool)
    ):
        return Decision(False, "policy_error", "userorg.authz.engine", revision=revision)
    return Decision(
        allow,
        reason,
        policy_id,
        tuple(obligations),
        max(0, int(ttl)),
        revision,
    )
