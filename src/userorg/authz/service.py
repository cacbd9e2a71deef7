"""The policy decision point for other services: resolve the subject, ask the engine."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from userorg.audit import recorder as audit
from userorg.authz.catalogue import SCOPES
from userorg.authz.engine import AuthzRequest, Decision, PolicyEngine
from userorg.authz.schemas import EvaluateRequest
from userorg.context import Actor
from userorg.db import UnitOfWork
from userorg.errors import NotFound, ValidationFailed
from userorg.orgs import service as orgs_service
from userorg.orgs.models import Organization
from userorg.roles import service as roles_service
from userorg.serviceaccounts.models import ServiceAccount
from userorg.users.models import Membership, User


def check_request(request: EvaluateRequest, *, max_context_bytes: int) -> None:
    if request.action not in SCOPES:
        raise ValidationFailed(
            "Unknown action: not a scope of the catalogue",
            code="unknown_action",
            details={"action": request.action, "catalogue": "GET /v1/scopes"},
        )
    if request.context is not None:
        size = len(orjson.dumps(request.context))
        if size > max_context_bytes:
            raise ValidationFailed(
                "The context is too large",
                code="context_too_large",
                details={"bytes": size, "maxBytes": max_context_bytes},
            )


async def _subject(
    session: AsyncSession, *, org: Organization, request: EvaluateRequest
) -> tuple[str, bool, str | None, list[str]]:
    """(status, platform admin?, membership status in the org, roles in the org)."""
    subject = request.subject
    membership_status: str | None
    if subject.principal_type == "user":
        user = await session.get(User, subject.principal_id)
        if user is None:
            raise NotFound("principal", subject.principal_id)
        status, is_admin = user.status, user.is_platform_admin
        membership_status = (
            await session.execute(
                select(Membership.status).where(
                    Membership.org_id == org.id, Membership.user_id == user.id
                )
            )
        ).scalar_one_or_none()
        if membership_status == "removed":
            membership_status = None
    else:
        account = await session.get(ServiceAccount, subject.principal_id)
        if account is None or account.deleted_at is not None:
            raise NotFound("principal", subject.principal_id)
        status, is_admin = account.status, False
        membership_status = account.status if account.org_id == org.id else None
    roles: list[str] = []
    if membership_status is not None:
        roles = await roles_service.roles_of(
            session,
            org_id=org.id,
            principal_type=subject.principal_type,
            principal_id=subject.principal_id,
        )
    if subject.roles is not None:
        # The caller may narrow the subject's roles (e.g. to those of a token), never widen.
        roles = sorted(set(roles) & set(subject.roles))
    return status, is_admin, membership_status, roles


async def evaluate(
    uow: UnitOfWork,
    *,
    policy: PolicyEngine,
    actor: Actor,
    request: EvaluateRequest,
    max_context_bytes: int,
) -> Decision:
    check_request(request, max_context_bytes=max_context_bytes)
    session = uow.session
    org = await orgs_service.find_org(session, request.subject.org_id)
    if org is None:
        raise NotFound("organization", request.subject.org_id)
    status, is_admin, membership_status, roles = await _subject(session, org=org, request=request)
    custom = await roles_service.custom_scopes_of_roles(session, org_id=org.id, roles=roles)
    resource = request.resource
    authz = AuthzRequest(
        permission=request.action,
        principal_id=str(request.subject.principal_id),
        principal_type=request.subject.principal_type,
        principal_status=status,
        is_platform_admin=is_admin,
        org_id=str(org.id),
        org_status=org.status,
        membership_status=membership_status,
        roles=frozenset(roles),
        custom_role_scopes=custom,
        credential_type="pdp",
        resource_type=resource.type if resource else None,
        resource_id=resource.id if resource else None,
        resource_org_id=str(resource.org_id) if resource and resource.org_id else None,
        context=request.context,
    )
    decision = await policy.decide_async(authz)
    if not decision.allow:
        metadata: dict[str, Any] = {
            "action": request.action,
            "principalType": request.subject.principal_type,
        }
        if resource is not None:
            metadata["resource"] = {"type": resource.type, "id": resource.id}
        await audit.record(
            session,
            action="pdp:decision:deny",
            actor=actor,
            org_id=org.id,
            outcome="denied",
            policy_id=decision.policy_id,
            reason=decision.reason,
            target_type=request.subject.principal_type,
            target_id=request.subject.principal_id,
            metadata=metadata,
        )
    return decision
