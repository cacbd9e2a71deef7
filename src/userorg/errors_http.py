"""The one mapping from errors to HTTP responses: ``{code, message, details}`` everywhere."""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm.exc import StaleDataError
from starlette.exceptions import HTTPException as StarletteHTTPException

from userorg.context import current_request
from userorg.errors import DomainError
from userorg.http import JSONBody

log = structlog.get_logger("userorg.errors")

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
}


def error_response(
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONBody:
    return JSONBody(
        {"code": code, "message": message, "details": details or {}},
        status_code=status,
        headers=headers,
    )


def is_dependency_outage(error: BaseException) -> bool:
    if isinstance(error, sa_exc.DBAPIError) and (
        error.connection_invalidated
        or isinstance(error, sa_exc.OperationalError | sa_exc.InterfaceError)
    ):
        return True
    if isinstance(error, sa_exc.TimeoutError | ConnectionError | TimeoutError):
        return True
    name = type(error).__name__
    return name in {"ConnectionDoesNotExistError", "CannotConnectNowError", "InterfaceError"} or (
        isinstance(error, OSError) and error.errno is not None
    )


def is_rejected_value(error: BaseException) -> bool:
    """PostgreSQL refused a value the validation let through (SQLSTATE class 22, data
    exception: a NUL byte, an untranslatable character, a number out of range)."""
    if not isinstance(error, sa_exc.DBAPIError):
        return False
    sqlstate = getattr(error.orig, "sqlstate", None) or getattr(error.orig, "pgcode", None)
    return isinstance(sqlstate, str) and sqlstate.startswith("22")


def _validation_details(error: RequestValidationError) -> list[dict[str, Any]]:
    problems = []
    for item in error.errors():
        loc = [str(part) for part in item.get("loc", ()) if part != "body"]
        # Never echo the input back: it may be a password or a token.
        problems.append(
            {"field": ".".join(loc), "message": item.get("msg", ""), "type": item.get("type", "")}
        )
    return problems


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def _domain(_request: Request, error: DomainError) -> JSONBody:
        return error_response(error.status, error.code, error.message, error.details, error.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, error: RequestValidationError) -> JSONBody:
        problems = _validation_details(error)
        if any(p["type"] == "json_invalid" for p in problems):
            return error_response(400, "malformed_json", "The request body is not valid JSON")
        if any(p["type"] == "model_attributes_type" and p["field"] == "" for p in problems):
            return error_response(400, "invalid_body", "The request body must be a JSON object")
        return error_response(
            422, "validation_error", "The request is not valid", {"errors": problems}
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, error: StarletteHTTPException) -> JSONBody:
        code = _HTTP_CODES.get(error.status_code, "error")
        message = error.detail if isinstance(error.detail, str) else code.replace("_", " ")
        if error.status_code == 404:
            message = "No such route"
            code = "route_not_found"
        return error_response(
            error.status_code, code, message, headers=getattr(error, "headers", None)
        )

    @app.exception_handler(StaleDataError)
    async def _stale(_request: Request, _error: StaleDataError) -> JSONBody:
        return error_response(
            409, "version_conflict", "The resource was changed concurrently; re-read and retry"
        )

    @app.exception_handler(sa_exc.IntegrityError)
    async def _integrity(_request: Request, error: sa_exc.IntegrityError) -> JSONBody:
        log.info(
            "integrity_conflict",
            error=str(error.orig)[:300],
            request_id=current_request().request_id,
        )
        return error_response(409, "conflict", "The change conflicts with existing data")
