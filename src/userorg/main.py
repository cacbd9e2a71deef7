"""The admin-api application: ``create_app(settings)``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from starlette.middleware.cors import CORSMiddleware
from starlette.types import Receive, Scope, Send

from userorg import __version__
from userorg.apikeys.api import router as api_keys_router
from userorg.audit.api import router as audit_router
from userorg.authn.api import admin_router as authn_admin_router
from userorg.authn.api import discovery_router, mfa_router, oauth2_router
from userorg.authn.api import router as authn_router
from userorg.authz.api import router as policy_router
from userorg.bootstrap import announce, ensure_platform_admin
from userorg.budgets.api import router as budgets_router
from userorg.container import Container
from userorg.declarative.api import router as declarative_router
from userorg.errors_http import install_error_handlers
from userorg.gateway.api import router as gateway_router
from userorg.gateway.http import FastPath
from userorg.middleware import RequestContextMiddleware
from userorg.ops import ReadinessCheck, ops_router
from userorg.orgs.api import router as orgs_router
from userorg.roles.api import router as roles_router
from userorg.schemas import ErrorBody
from userorg.serviceaccounts.api import router as service_accounts_router
from userorg.settings import Settings
from userorg.users.api import invites_router
from userorg.users.api import router as users_router

# Routes reachable without a credential. Every other route authenticates (a test enforces it).
PUBLIC_ROUTES = frozenset(
    {
        ("POST", "/v1/auth/login"),
        ("POST", "/v1/auth/refresh"),
        ("POST", "/v1/invites/accept"),
        ("POST", "/v1/auth/password/forgot"),
        ("POST", "/v1/auth/password/reset"),
        ("POST", "/oauth2/token"),
        ("POST", "/oauth2/introspect"),
        ("POST", "/oauth2/revoke"),
        ("GET", "/.well-known/openid-configuration"),
        ("GET", "/.well-known/jwks.json"),
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/metrics"),
        ("POST", "/v1/declarative/webhook"),
        # The gateway: the credential to judge is in the body (an invalid one is a 200 deny);
        # USER_ORG_GATEWAY_SHARED_SECRET restricts who may ask.
        ("POST", "/v1/auth/validate-api-key"),
        ("POST", "/v1/authorize"),
    }
)


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in {
        400: "Malformed request (bad JSON, bad cursor)",
        401: "No valid credential",
        403: "Denied by policy; details name the permission and the reason",
        404: "Not found (or not visible to the caller)",
        409: "Conflicts with the current state",
        423: "The account is locked after repeated failed sign-ins; see Retry-After",
        412: "If-Match does not name the current version",
        413: "Request body too large",
        422: "Validation failed; details list the fields",
        429: "Rate limited; see Retry-After",
        503: "A dependency is unavailable",
    }.items()
}


def _split_list(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def _checks(request: Request) -> dict[str, ReadinessCheck]:
    container: Container = request.app.state.container
    return container.readiness_checks


class UserorgApp(FastAPI):
    """FastAPI, with the gateway's hot-path routes dispatched before its router."""

    fast_path: FastPath | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        fast_path = self.fast_path
        if fast_path is not None and scope["type"] == "http" and scope["path"] in fast_path.paths:
            await fast_path(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(settings: Settings, *, bootstrap: bool = True) -> FastAPI:
    container = Container(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await container.start()
        if bootstrap:
            announce(await ensure_platform_admin(container))
        try:
            yield
        finally:
            await container.stop()

    app = UserorgApp(
        title="userorg — User & Organization Service",
        version=__version__,
        description=(
            "Identity, authorization, budgets and audit for an AI-as-a-Service platform. "
            "Errors are `{code, message, details}`; lists are cursor-paginated."
        ),
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
        telemetry=container.tracing.fastapi_config(),
    )
    app.state.container = container
    app.fast_path = FastPath(container)
    install_error_handlers(app)
    for router in (
        authn_router,
        mfa_router,
        authn_admin_router,
        oauth2_router,
        discovery_router,
        orgs_router,
        users_router,
        invites_router,
        roles_router,
        service_accounts_router,
        api_keys_router,
        gateway_router,
        budgets_router,
        audit_router,
        declarative_router,
        policy_router,
        ops_router(_checks),
    ):
        app.include_router(router, responses=ERROR_RESPONSES)
    if settings.cors_origin_list:
        # Off unless origins are configured; inside the request-context layer, so preflight
        # answers carry the request id and the security headers too.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin_list,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=_split_list(settings.cors_allow_headers),
            expose_headers=["ETag", "Retry-After", "X-Request-Id"],
            allow_credentials=False,
            max_age=settings.cors_max_age_seconds,
        )
    app.add_middleware(
        RequestContextMiddleware,
        max_body_bytes=settings.max_request_bytes,
        gateway_port=settings.gateway_port,
    )
    return app
