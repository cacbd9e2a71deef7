"""The reconciler process (port 8082). It serves health, readiness and metrics; the Git
reconciliation worker arrives with the declarative issue and runs inside this lifespan."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from sqlalchemy.ext.asyncio import AsyncEngine

from userorg import __version__
from userorg.db import create_engine
from userorg.errors_http import install_error_handlers
from userorg.middleware import RequestContextMiddleware
from userorg.ops import ReadinessCheck, database_check, ops_router
from userorg.settings import Settings
from userorg.telemetry.tracing import Tracing


def create_reconciler_app(settings: Settings) -> FastAPI:
    # The worker uses ``app.state.tracing`` with ``telemetry.reconcile.reconcile_run``, which
    # opens the ``identity.reconcile.run`` span and counts the run for the alert rules.
    tracing = Tracing.from_settings(settings, service_name="userorg-reconciler")
    engine: AsyncEngine = create_engine(settings.effective_database_url, pool_size=2)
    tracing.instrument_engine(engine)
    checks: dict[str, ReadinessCheck] = {"database": database_check(engine)}

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await engine.dispose()
            await asyncio.to_thread(tracing.shutdown)

    app = FastAPI(
        title="userorg reconciler",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        telemetry=tracing.fastapi_config(),
    )
    app.state.tracing = tracing

    def get_checks(_request: Request) -> dict[str, ReadinessCheck]:
        return checks

    install_error_handlers(app)
    app.include_router(ops_router(get_checks))
    app.add_middleware(RequestContextMiddleware, max_body_bytes=settings.max_request_bytes)
    return app
