"""The hot path's thin HTTP layer: a bare ASGI handler served before FastAPI's router.

FastAPI's dependency injection, Pydantic validation and middleware stack cost far more than
the decision itself (hash, dictionary lookups, policy: a few microseconds). These two routes
are therefore parsed and encoded with msgspec here; the contract (``contracts/openapi.yaml``)
documents them through equivalent routes in ``gateway/api.py``, which FastAPI would serve the
same way if the fast path were bypassed. What the middleware gives other routes is done here
too: a request id (echoed or generated), security headers, the body-size limit, the latency
histogram, one error body shape and, when ``USER_ORG_GATEWAY_ACCESS_LOG`` is on, an access log.
"""

from __future__ import annotations

import hmac
import os
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

import msgspec
import structlog
from starlette.types import Receive, Scope, Send

from userorg import strictjson
from userorg.gateway.schemas import AuthorizeIn, ValidateApiKeyIn
from userorg.middleware import SECURITY_HEADERS, classify_unhandled, wrong_listener
from userorg.telemetry.metrics import HTTP_REQUEST_DURATION

if TYPE_CHECKING:
    from userorg.container import Container

log = structlog.get_logger("userorg.gateway.http")

AUTHORIZE_PATH: Final = "/v1/authorize"
VALIDATE_PATH: Final = "/v1/auth/validate-api-key"
MAX_BODY: Final = 64 * 1024
_JSON: Final = (b"content-type", b"application/json")
_STATIC: Final = [_JSON, *SECURITY_HEADERS, (b"cache-control", b"no-store")]
_ENCODER: Final = msgspec.json.Encoder()
_DECODERS: Final[dict[str, msgspec.json.Decoder[Any]]] = {
    AUTHORIZE_PATH: msgspec.json.Decoder(AuthorizeIn),
    VALIDATE_PATH: msgspec.json.Decoder(ValidateApiKeyIn),
}
_REQUEST_ID_CHARS: Final = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-"
)


class BodyError(Exception):
    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}


def _valid_request_id(value: bytes) -> bool:
    return 0 < len(value) <= 100 and all(c in _REQUEST_ID_CHARS for c in value)


def parse_body(path: str, body: bytes) -> Any:
    """Decode and validate a hot-path body; bad input raises :class:`BodyError` (4xx)."""
    if not body.strip():
        raise BodyError(400, "invalid_body", "The request body must be a JSON object")
    # msgspec lets a repeated key win silently; the admin API refuses it, and so does this.
    refused = strictjson.hot_path_problem(body)
    if refused is not None:
        raise BodyError(400, "malformed_json", f"The request body is not strict JSON: {refused}")
    try:
        parsed = _DECODERS[path].decode(body)
    except msgspec.ValidationError as error:
        try:
            document = msgspec.json.decode(body)
        except msgspec.DecodeError:
            raise BodyError(400, "malformed_json", "The request body is not valid JSON") from None
        if not isinstance(document, dict):
            raise BodyError(400, "invalid_body", "The request body must be a JSON object") from None
        text = str(error)
        message, found, where = text.partition(" - at `")
        field = where.rstrip("`").removeprefix("$").lstrip(".") if found else ""
        if message.startswith("Object contains unknown field `"):
            field = message.removeprefix("Object contains unknown field `").rstrip("`")
        elif message.startswith("Object missing required field `"):
            field = message.removeprefix("Object missing required field `").rstrip("`")
        raise BodyError(
            422,
            "validation_error",
            "The request is not valid",
            {"errors": [{"field": field, "message": message, "type": "invalid"}]},
        ) from None
    except msgspec.DecodeError:
        raise BodyError(400, "malformed_json", "The request body is not valid JSON") from None
    return parsed


class FastPath:
    """``await fast_path(scope, receive, send)`` for the two gateway routes."""

    def __init__(self, container: Container) -> None:
        self._container = container
        settings = container.settings
        self._max_body = min(settings.max_request_bytes, MAX_BODY)
        secret = settings.gateway_shared_secret
        self._shared_secret = secret.get_secret_value().encode() if secret else None
        self._access_log = settings.gateway_access_log
        # USER_ORG_GATEWAY_PORT: these routes answer only on the gateway listener.
        self._gateway_port = settings.gateway_port
        self._histograms: dict[tuple[str, int], Any] = {}
        self.paths: frozenset[str] = frozenset(_DECODERS)
        # Generated request ids: a random per-process prefix and a counter (unique across
        # replicas, and cheaper than a UUID per request).
        self._id_prefix = os.urandom(8).hex().encode() + b"-"
        self._counter = 0

    def _observe(self, path: str, status: int, elapsed: float) -> None:
        child = self._histograms.get((path, status))
        if child is None:
            child = self._histograms[(path, status)] = HTTP_REQUEST_DURATION.labels(
                "POST", path, str(status)
            )
        child.observe(elapsed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        path: str = scope["path"]
        request_id: bytes | None = None
        presented_secret: bytes | None = None
        declared_length = -1
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                request_id = value if _valid_request_id(value) else None
            elif name == b"content-length":
                declared_length = int(value) if value.isdigit() else self._max_body + 1
            elif name == b"x-gateway-secret":
                presented_secret = value
        if request_id is None:
            self._counter += 1
            rid = b"%s%x" % (self._id_prefix, self._counter)
        else:
            rid = request_id
        status = 200
        try:
            server = scope.get("server")
            if self._gateway_port is not None and wrong_listener(
                path, server[1] if server else None, self._gateway_port
            ):
                status, payload, extra = (
                    404,
                    _error("not_found", "This route is not served on this port"),
                    [],
                )
            elif scope["method"] != "POST":
                status, payload, extra = (
                    405,
                    _error("method_not_allowed", "Method Not Allowed"),
                    [(b"allow", b"POST")],
                )
            elif self._shared_secret is not None and (
                presented_secret is None
                or not hmac.compare_digest(presented_secret, self._shared_secret)
            ):
                status, payload, extra = (
                    401,
                    _error(
                        "gateway_secret_required", "A valid X-Gateway-Secret header is required"
                    ),
                    [],
                )
            elif declared_length > self._max_body:
                status, payload, extra = 413, _too_large(self._max_body), []
            else:
                body = await _read_body(receive, self._max_body)
                if body is None:
                    status, payload, extra = 413, _too_large(self._max_body), []
                else:
                    try:
                        parsed = parse_body(path, body)
                    except BodyError as error:
                        status, extra = error.status, []
                        payload = _ENCODER.encode(
                            {"code": error.code, "message": error.message, "details": error.details}
                        )
                    else:
                        gateway = self._container.gateway
                        answer = await (
                            gateway.authorize(parsed)
                            if path == AUTHORIZE_PATH
                            else gateway.validate(parsed)
                        )
                        payload, extra = _ENCODER.encode(answer), []
        except Exception as error:
            status, code, message = classify_unhandled(error)
            if status == 503:
                log.warning(
                    "dependency_unavailable", error=f"{type(error).__name__}: {error}"[:500]
                )
            else:
                log.error("unhandled_exception", exc_info=error, path=path)
            payload = _ENCODER.encode(
                {"code": code, "message": message, "details": {"requestId": rid.decode()}}
            )
            extra = []
        headers = [(b"content-length", b"%d" % len(payload)), (b"x-request-id", rid), *_STATIC]
        if extra:
            headers.extend(extra)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
        elapsed = time.perf_counter() - started
        self._observe(path, status, elapsed)
        if self._access_log or status >= 500:
            log.info(
                "request",
                method=scope["method"],
                path=path,
                route=path,
                status=status,
                duration_ms=round(elapsed * 1000, 3),
                request_id=rid.decode(),
            )


def _error(code: str, message: str, details: dict[str, Any] | None = None) -> bytes:
    return _ENCODER.encode({"code": code, "message": message, "details": details or {}})


def _too_large(limit: int) -> bytes:
    return _error("payload_too_large", f"The request body exceeds {limit} bytes")


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    message = await receive()
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        return body if len(body) <= limit else None
    chunks = [body]
    size = len(body)
    while message.get("more_body", False):
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


Handler = Callable[[Scope, Receive, Send], Awaitable[None]]
