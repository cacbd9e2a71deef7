"""Domain errors carry data; one place maps them (and framework errors) to HTTP."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """An expected failure with a machine-readable code, an HTTP status and details."""

    status: int = 400
    code: str = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        commit: bool = False,
    ) -> None:
        super().__init__(message)
        # When true, the unit of work still commits what was written before the error: the
        # audit event of a denial, a failed-login counter. Nothing else may have been written.
        self.commit = commit
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.details = details or {}
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "details": self.details}


class BadRequest(DomainError):
    status = 400
    code = "bad_request"


class ValidationFailed(DomainError):
    status = 422
    code = "validation_error"


class Unauthenticated(DomainError):
    status = 401
    code = "unauthenticated"

    def __init__(self, message: str = "Authentication required", **kwargs: Any) -> None:
        kwargs.setdefault("headers", {"WWW-Authenticate": "Bearer"})
        super().__init__(message, **kwargs)


class Forbidden(DomainError):
    status = 403
    code = "forbidden"


class NotFound(DomainError):
    status = 404
    code = "not_found"

    def __init__(self, resource: str, identifier: object | None = None) -> None:
        details: dict[str, Any] = {"resource": resource}
        if identifier is not None:
            details["id"] = str(identifier)
        super().__init__(
            f"{resource.replace('_', ' ').capitalize()} not found",
            code=f"{resource}_not_found",
            details=details,
        )


class Conflict(DomainError):
    status = 409
    code = "conflict"


class PreconditionFailed(DomainError):
    status = 412
    code = "precondition_failed"


class Locked(DomainError):
    status = 423
    code = "account_locked"


class RateLimited(DomainError):
    status = 429
    code = "rate_limited"

    def __init__(self, retry_after_seconds: float, *, scope: str) -> None:
        retry_after = max(1, int(retry_after_seconds + 0.999))
        super().__init__(
            "Too many requests; retry later",
            details={"scope": scope, "retryAfterSeconds": retry_after},
            headers={"Retry-After": str(retry_after)},
        )


class ServiceUnavailable(DomainError):
    status = 503
    code = "service_unavailable"
