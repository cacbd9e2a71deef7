"""The reconciler process (port 8082): the Git reconciliation worker, its status endpoint,
health, readiness and metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request

from userorg import __version__
from userorg.container import Container
from userorg.declarative import service
from userorg.declarative.factory import build_engine
from userorg.declarative.schemas import ReconcilerStatusRead
from userorg.declarative.worker import Reconciler, reconciler_id
from userorg.deps import AuthContext, UoW, require
from userorg.errors_http import install_error_handlers
from userorg.middleware import RequestContextMiddleware
from userorg.ops import ReadinessCheck, ops_router
from userorg.settings import Settings


def create_reconciler_app(settings: Settings, *, run_worker: bool = True) -> FastAPI:
    # Each run opens the ``identity.reconcile.run`` span and counts itself in
    # ``userorg_reconcile_runs_total`` (what the alert rules read).
    container = Container(settings, service_name="userorg-reconciler")
    tracing = container.tracing
    engine = build_engine(
        settings,
        session_factory=container.session_factory,
        budgets=container.budget_policies,
        owner=reconciler_id(),
        publish=container.bus.publish,
        tracing=tracing,
    )
    reconciler = Reconciler(engine, bus=container.bus)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await container.start(background=False)
        if run_worker:
            reconciler.start()
        try:
            yield
        finally:
            await reconciler.stop()
            await container.stop()

    app = FastAPI(
        title="userorg reconciler",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        telemetry=tracing.fastapi_config(),
    )
    app.state.container = container
    app.state.tracing = tracing
    app.state.reconciler = reconciler

    def get_checks(_request: Request) -> dict[str, ReadinessCheck]:
        return container.readiness_checks

    @app.get(
        "/v1/reconcile/status/{orgId}",
        response_model=ReconcilerStatusRead,
        summary="The org's reconciliation status as this reconciler sees it",
    )
    async def reconcile_status(
        uow: UoW, ctx: AuthContext = require("declarative:read")
    ) -> ReconcilerStatusRead:
        org = ctx.org_required
        document = await service.status(uow.session, org=org)
        outcome = reconciler.last_outcomes.get(org.id)
        return ReconcilerStatusRead.model_validate(
            {
                **document,
                "reconcilerId": reconciler.engine.owner,
                "inFlight": org.id in reconciler.in_flight,
                "queueDepth": reconciler.queue_depth,
                "lastOutcome": outcome.result if outcome else None,
            }
        )

    install_error_handlers(app)
    app.include_router(ops_router(get_checks))
    app.add_middleware(RequestContextMiddleware, max_body_bytes=settings.max_request_bytes)
    return app
