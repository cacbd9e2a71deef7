"""Routes: declarative management (status, plan, manual sync / dry run, signed webhook)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from userorg.declarative import service
from userorg.declarative.plan import Plan
from userorg.declarative.schemas import (
    DryRunRead,
    PlanRead,
    StatusRead,
    SyncAccepted,
    SyncRequest,
    WebhookAccepted,
)
from userorg.deps import AuthContext, ContainerDep, CurrentPrincipal, UoW, authorize, require
from userorg.errors import NotFound
from userorg.orgs import service as orgs_service

router = APIRouter(tags=["declarative"])


def plan_read(org_id: Any, plan: Plan) -> dict[str, Any]:
    document = plan.to_json()
    return {
        "orgId": org_id,
        "commitId": document["commitId"],
        "baseCommit": document["baseCommit"],
        "valid": document["valid"],
        "hasChanges": document["hasChanges"],
        "counts": document["counts"],
        "operations": document["operations"],
        "errors": document["errors"],
        "text": document["text"],
    }


@router.post(
    "/v1/declarative/config",
    status_code=202,
    response_model=SyncAccepted | DryRunRead,
    responses={
        200: {"model": DryRunRead, "description": "Dry run: the plan, applied and rolled back"}
    },
    summary="Sync an org from Git now (202), or dry-run it (200: plan, applied and rolled back)",
)
async def sync(
    body: SyncRequest,
    request: Request,
    response: Response,
    uow: UoW,
    container: ContainerDep,
    principal: CurrentPrincipal,
) -> SyncAccepted | DryRunRead:
    org = await orgs_service.find_org(uow.session, body.org_id)
    if org is None:
        raise NotFound("organization", body.org_id)
    ctx = await authorize(
        uow,
        container,
        principal=principal,
        permission="declarative:write",
        org=org,
        org_ref=body.org_id,
        route=f"{request.method} /v1/declarative/config",
    )
    if body.dry_run:
        plan, failure = await service.dry_run(
            uow, org=org, actor=ctx.actor, engine=container.declarative
        )
        response.status_code = 200
        return DryRunRead.model_validate(
            {
                **plan_read(org.id, plan),
                "dryRun": True,
                "wouldSucceed": plan.valid and failure is None,
                "applyError": failure,
            }
        )
    state = await service.request_sync(
        uow,
        org=org,
        actor=ctx.actor,
        trigger="manual",
        force_commit=body.force_commit,
        audit_action="api:declarative:force_sync" if body.force_commit else "api:declarative:sync",
    )
    assert state.sync_requested_at is not None
    return SyncAccepted(org_id=org.id, sync_requested_at=state.sync_requested_at)


@router.get(
    "/v1/declarative/status/{orgId}",
    response_model=StatusRead,
    summary="Declarative status: mode, repo, last applied commit, status, last run, drift, error",
)
async def get_status(uow: UoW, ctx: AuthContext = require("declarative:read")) -> StatusRead:
    return StatusRead.model_validate(await service.status(uow.session, org=ctx.org_required))


@router.get(
    "/v1/declarative/plan/{orgId}",
    response_model=PlanRead,
    summary="What the next run would change (the branch head against the actual state)",
)
async def get_plan(
    uow: UoW, container: ContainerDep, ctx: AuthContext = require("declarative:read")
) -> PlanRead:
    org = ctx.org_required
    plan = await service.plan_for_org(uow.session, org=org, engine=container.declarative)
    return PlanRead.model_validate(plan_read(org.id, plan))


@router.post(
    "/v1/declarative/webhook",
    status_code=202,
    response_model=WebhookAccepted,
    summary="Git push webhook (public; HMAC-SHA256 signed like GitHub's X-Hub-Signature-256)",
    description=(
        "The body is the Git host's push event (`ref`, `after`, `repository.clone_url` / "
        "`html_url`, ...), signed with `USER_ORG_DECLARATIVE_WEBHOOK_SECRET` in "
        "`X-Hub-Signature-256: sha256=<hex HMAC of the raw body>`. Every org whose repoUrl and "
        "branch match gets a sync queued. A missing or wrong signature is rejected (401) and "
        "audited."
    ),
)
async def webhook(request: Request, uow: UoW, container: ContainerDep) -> WebhookAccepted:
    secret = container.settings.declarative_webhook_secret
    result = await service.receive_webhook(
        uow,
        body=await request.body(),
        signature=request.headers.get(service.SIGNATURE_HEADER),
        secret=secret.get_secret_value() if secret else None,
        event=request.headers.get("X-GitHub-Event") or request.headers.get("X-Gitea-Event"),
        delivery=request.headers.get("X-GitHub-Delivery"),
    )
    return WebhookAccepted.model_validate(result)
