"""Request dependencies: the unit of work, the authenticated principal and ``require(scope)``."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request

from userorg.audit import recorder as audit
from userorg.authn import service as authn_service
from userorg.authn.principal import Principal
from userorg.authz.engine import AuthzRequest, Decision
from userorg.container import Container
from userorg.context import Actor
from userorg.db import UnitOfWork
from userorg.errors import DomainError, Forbidden, NotFound, Unauthenticated
from userorg.orgs import service as orgs_service
from userorg.orgs.models import Organization
from userorg.platform import ratelimit
from userorg.roles import service as roles_service
from userorg.telemetry.metrics import AUTHZ_DECISION_DURATION, AUTHZ_DENIALS
from userorg.telemetry.tracing import AUTH_EVALUATE_SPAN


def get_container(request: Request) -> Container:
    container: Container = request.app.state.container
    return container


ContainerDep = Annotated[Container, Depends(get_container)]


async def get_uow(request: Request) -> AsyncIterator[UnitOfWork]:
    """The request's one transaction: committed after the handler returns, before responding."""
    uow = get_container(request).uow()
    try:
        yield uow
        await uow.commit()
    except DomainError as error:
        if error.commit:
            await uow.commit()
        else:
            await uow.rollback()
        raise
    except BaseException:
        await uow.rollback()
        raise
    finally:
        await uow.close()


UoW = Annotated[UnitOfWork, Depends(get_uow, scope="function")]


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# POSTs that are service-to-service traffic, not changes a person makes: asking the policy
# decision point, and reporting usage. Their volume follows the platform's traffic, so they do
# not spend from the per-principal mutation budget (the usage intake is idempotent per event
# and batched; both need their own scope).
UNMETERED_ROUTES = frozenset({"/v1/policy/evaluate", "/v1/budgets/{orgId}/usage"})


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def get_principal(request: Request, uow: UoW, container: ContainerDep) -> Principal:
    token = bearer_token(request)
    if token is None:
        raise Unauthenticated()
    principal = await authn_service.authenticate_bearer(
        uow.session,
        tokens=container.tokens,
        token=token,
        api_key_environment=container.settings.api_key_environment,
        on_api_key_use=container.gateway.note_admin_use,
    )
    request.state.principal = principal
    route = getattr(request.scope.get("route"), "path", None)
    if request.method not in SAFE_METHODS and route not in UNMETERED_ROUTES:
        # Every authenticated change spends from the principal's budget (abuse limit; the
        # public mutations have their own per-IP and per-account limits).
        await ratelimit.enforce(
            container.rate_limiter,
            scope="mutation_principal",
            key=str(principal.id),
            limit=container.settings.mutation_rate_per_principal_per_minute,
            period_seconds=60,
        )
    return principal


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]


@dataclass(frozen=True, slots=True)
class AuthContext:
    """An authorized request: who, in which org, with which roles and scopes."""

    principal: Principal
    org: Organization | None
    roles: frozenset[str]
    scopes: frozenset[str]
    decision: Decision

    @property
    def actor(self) -> Actor:
        return self.principal.actor

    @property
    def org_required(self) -> Organization:
        assert self.org is not None, "route without {orgId} asked for the org"
        return self.org


async def authorize(
    uow: UnitOfWork,
    container: Container,
    *,
    principal: Principal,
    permission: str,
    org: Organization | None,
    org_ref: str | None = None,
    route: str | None = None,
) -> AuthContext:
    """Ask the policy engine; on deny, audit it (committed with the error) and raise."""
    started = time.perf_counter()
    with container.tracing.span(AUTH_EVALUATE_SPAN, {"userorg.permission": permission}) as span:
        grants = await roles_service.load_grants(uow.session, principal=principal, org=org)
        decision = await container.policy.decide_async(
            authz_request(principal, permission=permission, org=org, grants=grants)
        )
        if span is not None:
            span.set_attributes(
                {
                    "userorg.decision": "allow" if decision.allow else "deny",
                    "userorg.reason": decision.reason,
                    "userorg.policy_id": decision.policy_id,
                    "userorg.principal_type": principal.type,
                }
            )
    AUTHZ_DECISION_DURATION.labels("admin_api", "allow" if decision.allow else "deny").observe(
        time.perf_counter() - started
    )
    if decision.allow:
        return AuthContext(principal, org, grants.roles, grants.scopes, decision)
    AUTHZ_DENIALS.labels(decision.reason).inc()
    await audit.record(
        uow.session,
        action="authz:access:deny",
        actor=principal.actor,
        org_id=org.id if org else None,
        outcome="denied",
        policy_id=decision.policy_id,
        reason=decision.reason,
        target_type="route",
        target_id=route,
        metadata={"permission": permission},
    )
    if decision.reason == "not_a_member":
        # Outsiders learn nothing about the org, not even that it exists.
        error: DomainError = NotFound("organization", org_ref)
        error.commit = True
        raise error
    raise Forbidden(
        f"Permission {permission} denied: {decision.reason.replace('_', ' ')}",
        details={
            "permission": permission,
            "reason": decision.reason,
            "policyId": decision.policy_id,
        },
        commit=True,
    )


def authz_request(
    principal: Principal,
    *,
    permission: str,
    org: Organization | None,
    grants: roles_service.Grants,
    resource_type: str | None = None,
    resource_id: str | None = None,
    resource_org_id: str | None = None,
    context: dict[str, Any] | None = None,
) -> AuthzRequest:
    """The decision's inputs for an authenticated principal (the cache key, too)."""
    return AuthzRequest(
        permission=permission,
        principal_id=str(principal.id),
        principal_type=principal.type,
        principal_status=principal.status,
        is_platform_admin=principal.is_platform_admin,
        org_id=str(org.id) if org else None,
        org_status=org.status if org else None,
        membership_status=grants.membership_status,
        roles=grants.roles,
        granted_scopes=grants.scopes,
        credential_scopes=principal.credential_scopes,
        custom_role_scopes=grants.custom_scopes,
        credential_type="session" if principal.session_id is not None else "token",
        mfa_verified_at=principal.mfa_verified_at.timestamp()
        if principal.mfa_verified_at
        else None,
        amr=tuple(principal.amr),
        resource_type=resource_type,
        resource_id=resource_id,
        resource_org_id=resource_org_id,
        context=context,
    )


def require(permission: str) -> Any:
    """Route dependency: the caller must hold ``permission`` (in the path's org, if any)."""

    async def dependency(
        request: Request, uow: UoW, container: ContainerDep, principal: CurrentPrincipal
    ) -> AuthContext:
        org_ref = request.path_params.get("orgId")
        org = None
        if org_ref is not None:
            org = await orgs_service.find_org(uow.session, org_ref)
            if org is None:
                raise NotFound("organization", org_ref)
        route = getattr(request.scope.get("route"), "path", None)
        return await authorize(
            uow,
            container,
            principal=principal,
            permission=permission,
            org=org,
            org_ref=org_ref,
            route=f"{request.method} {route}",
        )

    return Depends(dependency)
