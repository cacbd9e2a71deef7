"""Health, readiness and metrics endpoints (public; both processes serve them)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.responses import Response

from userorg.http import JSONBody
from userorg.telemetry.metrics import DEPENDENCY_UP


@dataclass(frozen=True)
class CheckResult:
    up: bool
    detail: dict[str, Any]
    # An optional dependency (the audit stream) that is down is reported as "degraded" and
    # does not make the process unready: requests keep working without it.
    required: bool = True


ReadinessCheck = Callable[[], Awaitable[CheckResult]]


def database_check(engine: AsyncEngine, *, timeout: float = 2.0) -> ReadinessCheck:
    async def check() -> CheckResult:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(timeout):
                async with engine.connect() as connection:
                    await connection.execute(text("SELECT 1"))
        except Exception as error:
            return CheckResult(False, {"error": type(error).__name__})
        return CheckResult(True, {"latencyMs": round((time.perf_counter() - started) * 1000, 2)})

    return check


REDIS_DOWN_IMPACT = (
    "rate limits are per process; the gateway cache is bypassed (every decision reads the "
    "database) until the invalidation bus resubscribes"
)


def redis_check(client: Redis, *, timeout: float = 2.0) -> ReadinessCheck:
    """Redis is optional at runtime: without it requests stay correct (see REDIS_DOWN_IMPACT),
    so it reports ``degraded`` and the pod stays ready; a Redis outage must not take every
    replica out of its Service at once. ``userorg_dependency_up{dependency="redis"}`` is 0."""

    async def check() -> CheckResult:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(timeout):
                await client.ping()
        except Exception as error:
            return CheckResult(
                False, {"error": type(error).__name__, "impact": REDIS_DOWN_IMPACT}, required=False
            )
        return CheckResult(True, {"latencyMs": round((time.perf_counter() - started) * 1000, 2)})

    return check


async def run_checks(checks: dict[str, ReadinessCheck]) -> tuple[bool, dict[str, Any]]:
    names = list(checks)
    results = await asyncio.gather(*(checks[name]() for name in names))
    report = {
        name: {
            "status": "up" if result.up else ("down" if result.required else "degraded"),
            **result.detail,
        }
        for name, result in zip(names, results, strict=True)
    }
    for name, result in zip(names, results, strict=True):
        DEPENDENCY_UP.labels(name).set(1 if result.up else 0)
    return all(result.up or not result.required for result in results), report


def ops_router(get_checks: Callable[[Request], dict[str, ReadinessCheck]]) -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/healthz", summary="Process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get(
        "/readyz",
        summary="Dependencies reachable (503 when one is down)",
        responses={503: {"description": "A dependency is down"}},
    )
    async def readyz(request: Request) -> JSONBody:
        ready, report = await run_checks(get_checks(request))
        return JSONBody(
            {"status": "ready" if ready else "not_ready", "checks": report},
            status_code=200 if ready else 503,
        )

    @router.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router
