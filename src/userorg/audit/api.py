"""Routes: querying the audit trail, signed exports and the audit signing keys."""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from starlette.responses import Response, StreamingResponse

from userorg.audit import export as exporter
from userorg.audit import service
from userorg.audit.models import AuditEvent, AuditExport
from userorg.audit.recorder import PLATFORM_CHAIN, event_document
from userorg.audit.schemas import (
    AuditEventRead,
    AuditKeyRead,
    AuditKeys,
    ExportAccepted,
    ExportCreate,
    ExportRead,
)
from userorg.container import Container
from userorg.deps import (
    AuthContext,
    ContainerDep,
    CurrentPrincipal,
    UoW,
    authorize,
    require,
)
from userorg.errors import Conflict, DomainError, NotFound
from userorg.http import Cursor, Limit
from userorg.orgs import service as orgs_service
from userorg.schemas import Page

router = APIRouter(tags=["audit"])


def _read(event: AuditEvent) -> AuditEventRead:
    return AuditEventRead.model_validate(event_document(event))


@router.get(
    "/v1/orgs/{orgId}/audit-events",
    response_model=Page[AuditEventRead],
    summary="Query the org's audit trail (newest first)",
)
async def list_audit_events(
    uow: UoW,
    ctx: AuthContext = require("audit:read"),
    limit: Limit = 50,
    cursor: Cursor = None,
    since: Annotated[dt.datetime | None, Query(alias="from")] = None,
    until: Annotated[dt.datetime | None, Query(alias="to")] = None,
    actor_id: Annotated[str | None, Query(alias="actorId", max_length=100)] = None,
    target_id: Annotated[str | None, Query(alias="targetId", max_length=100)] = None,
    action: Annotated[str | None, Query(max_length=100)] = None,
    outcome: Literal["success", "failure", "denied"] | None = None,
) -> Page[AuditEventRead]:
    rows, next_cursor = await service.query_events(
        uow.session,
        org_id=ctx.org_required.id,
        limit=limit,
        cursor=cursor,
        since=_aware(since),
        until=_aware(until),
        actor_id=actor_id,
        action=action,
        outcome=outcome,
        target_id=target_id,
    )
    return Page[AuditEventRead](items=[_read(e) for e in rows], next_cursor=next_cursor)


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value


# -- exports -------------------------------------------------------------------------------
EXPORT_PERMISSION = "audit:export"


async def _authorize_export_org(
    request: Request,
    uow: UoW,
    container: Container,
    principal: CurrentPrincipal,
    org_ref: str,
) -> AuthContext:
    """``audit:export`` in the named org (``platform``: the platform chain, admins only)."""
    route = f"{request.method} {getattr(request.scope.get('route'), 'path', None)}"
    if org_ref == PLATFORM_CHAIN:
        return await authorize(
            uow, container, principal=principal, permission=EXPORT_PERMISSION, org=None, route=route
        )
    org = await orgs_service.find_org(uow.session, org_ref)
    if org is None:
        raise NotFound("organization", org_ref)
    return await authorize(
        uow,
        container,
        principal=principal,
        permission=EXPORT_PERMISSION,
        org=org,
        org_ref=org_ref,
        route=route,
    )


async def _visible_export(
    request: Request,
    uow: UoW,
    container: Container,
    principal: CurrentPrincipal,
    export_id: uuid.UUID,
) -> AuditExport:
    """The export, if the caller may export its org's trail; otherwise the same 404 as for an
    unknown id (the denial is still audited)."""
    export = await service.get_export(uow.session, export_id)
    ref = str(export.org_id) if export.org_id else PLATFORM_CHAIN
    try:
        await _authorize_export_org(request, uow, container, principal, ref)
    except DomainError as error:
        if error.status == 404:
            hidden = NotFound("audit_export", export_id)
            hidden.commit = error.commit
            raise hidden from None
        raise
    return export


def _export_read(export: AuditExport) -> ExportRead:
    return ExportRead(
        export_id=export.id,
        org_id=str(export.org_id) if export.org_id else PLATFORM_CHAIN,
        status=export.status,
        from_=export.window_from,
        to=export.window_to,
        event_count=export.event_count if export.status == "completed" else None,
        first_seq=export.first_seq if export.status == "completed" else None,
        last_seq=export.last_seq if export.status == "completed" else None,
        sha256=export.sha256,
        size_bytes=export.size_bytes,
        key_id=export.key_id if export.status == "completed" else None,
        signature=export.signature,
        error=export.error if export.status == "failed" else None,
        created_at=export.created_at,
        completed_at=export.completed_at,
    )


@router.post(
    "/v1/audit/export",
    status_code=202,
    response_model=ExportAccepted,
    summary="Export an org's audit trail for a time window (signed NDJSON, produced async)",
)
async def create_export(
    body: ExportCreate,
    request: Request,
    uow: UoW,
    container: ContainerDep,
    principal: CurrentPrincipal,
) -> ExportAccepted:
    ctx = await _authorize_export_org(request, uow, container, principal, body.org_id)
    export = await service.create_export(
        uow,
        actor=ctx.actor,
        org_id=ctx.org.id if ctx.org else None,
        window_from=body.from_,
        window_to=body.to,
        max_window_days=container.settings.audit_export_max_window_days,
    )
    uow.after_commit(container.audit_exports.wake)
    return ExportAccepted(export_id=export.id, status=export.status)


@router.get(
    "/v1/audit/exports/{exportId}",
    response_model=ExportRead,
    summary="An export's status; when completed, its event count, SHA-256 and signature",
)
async def get_export(
    exportId: uuid.UUID,
    request: Request,
    uow: UoW,
    container: ContainerDep,
    principal: CurrentPrincipal,
) -> ExportRead:
    export = await _visible_export(request, uow, container, principal, exportId)
    return _export_read(export)


def _require_completed(export: AuditExport) -> None:
    if export.status != "completed":
        raise Conflict(
            f"The export is {export.status}, not completed",
            code="export_not_ready",
            details={"status": export.status},
        )


@router.get(
    "/v1/audit/exports/{exportId}/download",
    summary="The export file (NDJSON: a header line, then one event per line), streamed",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"application/x-ndjson": {}}, "description": "The export file"},
        410: {"description": "The export's events were purged by retention"},
    },
)
async def download_export(
    exportId: uuid.UUID,
    request: Request,
    uow: UoW,
    container: ContainerDep,
    principal: CurrentPrincipal,
) -> Response:
    export = await _visible_export(request, uow, container, principal, exportId)
    _require_completed(export)
    async with container.read_session_factory() as session:
        if not await exporter.still_available(session, export):
            raise DomainError(
                "The export's events were purged by retention; request a new export",
                code="export_expired",
                status=410,
            )
    factory = container.read_session_factory

    async def body() -> AsyncIterator[bytes]:
        async with factory() as session:
            async for chunk in exporter.render(session, export):
                yield chunk

    headers = {
        "Content-Disposition": f'attachment; filename="audit-export-{export.id}.ndjson"',
        "X-Content-SHA256": export.sha256 or "",
        "X-Audit-Key-Id": export.key_id or "",
    }
    if export.size_bytes is not None:
        headers["Content-Length"] = str(export.size_bytes)
    return StreamingResponse(body(), media_type="application/x-ndjson", headers=headers)


@router.get(
    "/v1/audit/exports/{exportId}/signature",
    summary="Detached Ed25519 signature (64 raw bytes) of the export file's SHA-256 digest",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}, "description": "Signature"}},
)
async def export_signature(
    exportId: uuid.UUID,
    request: Request,
    uow: UoW,
    container: ContainerDep,
    principal: CurrentPrincipal,
) -> Response:
    export = await _visible_export(request, uow, container, principal, exportId)
    _require_completed(export)
    assert export.signature is not None
    return Response(
        base64.b64decode(export.signature),
        media_type="application/octet-stream",
        headers={
            "Content-Disposition": f'attachment; filename="audit-export-{export.id}.sig"',
            "X-Audit-Key-Id": export.key_id or "",
        },
    )


@router.get(
    "/v1/audit/keys",
    response_model=AuditKeys,
    summary="Public keys that verify audit exports and checkpoints (retired ones included)",
)
async def audit_keys(container: ContainerDep, principal: CurrentPrincipal) -> AuditKeys:
    keys = await container.audit_signer.public_keys()
    return AuditKeys(
        keys=[
            AuditKeyRead(
                key_id=k.key_id,
                algorithm=k.algorithm,
                public_key_pem=k.public_key_pem,
                status=k.status,
                created_at=k.created_at,
                backend=k.backend,
            )
            for k in keys
        ]
    )
