"""Routes: the policy decision point for other services, and what is loaded."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from userorg.authz import service
from userorg.authz.schemas import EvaluateRequest, EvaluateResponse, PolicyInfo
from userorg.deps import AuthContext, ContainerDep, UoW, require

router = APIRouter(tags=["policy"])


@router.post(
    "/v1/policy/evaluate",
    response_model=EvaluateResponse,
    summary="Ask the policy decision point (503 when it cannot decide)",
)
async def evaluate(
    body: EvaluateRequest,
    uow: UoW,
    container: ContainerDep,
    ctx: AuthContext = require("policy:evaluate"),
) -> EvaluateResponse:
    decision = await service.evaluate(
        uow,
        policy=container.policy,
        actor=ctx.actor,
        request=body,
        max_context_bytes=container.settings.policy_max_context_bytes,
    )
    return EvaluateResponse(
        decision="allow" if decision.allow else "deny",
        policy_id=decision.policy_id,
        reason=decision.reason,
        ttl_seconds=decision.ttl_seconds,
        obligations=[dict(item) for item in decision.obligations],
    )


@router.get(
    "/v1/policy/info",
    response_model=PolicyInfo,
    summary="The loaded policy: revision, packages, last reload error, cache",
)
async def info(
    container: ContainerDep, _ctx: AuthContext = require("policy:evaluate")
) -> dict[str, Any]:
    return container.policy_engine.info()
