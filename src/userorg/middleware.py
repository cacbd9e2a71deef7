"""The outermost ASGI layer: request ids, access logs, latency metrics, body-size limits,
security headers, and a last-resort error body (never a stack trace)."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import orjson
import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from userorg import strictjson
from userorg.context import RequestInfo, set_current_request
from userorg.telemetry.metrics import HTTP_REQUEST_DURATION

log = structlog.get_logger("userorg.http")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
    (b"strict-transport-security", b"max-age=63072000; includeSubDomains"),
]


# With USER_ORG_GATEWAY_PORT set, the gateway's hot-path routes answer only on that port and the
# port answers nothing else (but health, readiness and metrics), so a NetworkPolicy on the port
# decides who may call them. See docs/operations.md ("Who may call the gateway routes").
GATEWAY_PATHS = frozenset({"/v1/authorize", "/v1/auth/validate-api-key"})
OPS_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def wrong_listener(path: str, port: int | None, gateway_port: int) -> bool:
    on_gateway = port == gateway_port
    if path in GATEWAY_PATHS:
        return not on_gateway
    return on_gateway and path not in OPS_PATHS


class PayloadTooLarge(Exception):
    pass


BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


async def _read_all(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """The buffered body once, then the client's own messages (e.g. its disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def error_response_parts(
    status: int, code: str, message: str, request_id: str
) -> tuple[list[tuple[bytes, bytes]], bytes]:
    body = orjson.dumps({"code": code, "message": message, "details": {"requestId": request_id}})
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    return headers, body


def classify_unhandled(error: BaseException) -> tuple[int, str, str]:
    """Map an exception nobody handled to a status: dependency outages are 503, else 500."""
    from userorg.errors_http import is_dependency_outage, is_rejected_value

    if is_rejected_value(error):
        # A safety net: input validation should refuse such values first (a 400 either way).
        return 400, "invalid_input", "A value in the request cannot be stored"
    if is_dependency_outage(error):
        return 503, "dependency_unavailable", "A dependency is unavailable; retry later"
    return 500, "internal_error", "Internal error"


class RequestContextMiddleware:
    def __init__(
        self, app: ASGIApp, *, max_body_bytes: int, gateway_port: int | None = None
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.gateway_port = gateway_port

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = None
        content_length = None
        content_type = None
        user_agent = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                request_id = candidate if _REQUEST_ID.match(candidate) else None
            elif name == b"content-length":
                content_length = value
            elif name == b"content-type":
                content_type = value
            elif name == b"user-agent":
                user_agent = value.decode("latin-1")[:500].replace("\x00", "")
        request_id = request_id or uuid.uuid4().hex
        client = scope.get("client")
        set_current_request(RequestInfo(request_id, client[0] if client else None, user_agent))
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        status_holder = {"status": 500, "started": False}
        rid = request_id.encode()

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                status_holder["started"] = True
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", rid))
                headers.extend(SECURITY_HEADERS)
                if not any(name.lower() == b"cache-control" for name, _ in headers):
                    # Answers carry tokens and tenant data: no shared or browser caching.
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        received = 0

        async def receive_wrapper() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise PayloadTooLarge
            return message

        try:
            if self.gateway_port is not None:
                server = scope.get("server")
                if wrong_listener(scope["path"], server[1] if server else None, self.gateway_port):
                    await self._send_error(
                        send_wrapper,
                        status_holder,
                        404,
                        "not_found",
                        "This route is not served on this port",
                        request_id,
                    )
                    return
            if strictjson.nul_in_target(scope["path"], scope.get("query_string", b"")):
                await self._send_error(
                    send_wrapper,
                    status_holder,
                    400,
                    "invalid_character",
                    "The request path or query contains a NUL character",
                    request_id,
                )
                return
            if content_length is not None and (
                not content_length.isdigit() or int(content_length) > self.max_body_bytes
            ):
                raise PayloadTooLarge
            app_receive: Receive = receive_wrapper
            if scope["method"] in BODY_METHODS and strictjson.looks_like_json(content_type):
                body = await _read_all(receive_wrapper)
                refused = strictjson.problem(body)
                if refused is not None:
                    await self._send_error(
                        send_wrapper,
                        status_holder,
                        400,
                        "malformed_json",
                        f"The request body is not strict JSON: {refused}",
                        request_id,
                    )
                    return
                app_receive = _replay(body, receive)
            await self.app(scope, app_receive, send_wrapper)
        except PayloadTooLarge:
            await self._send_error(
                send_wrapper,
                status_holder,
                413,
                "payload_too_large",
                f"The request body exceeds {self.max_body_bytes} bytes",
                request_id,
            )
        except Exception as error:
            status, code, message = classify_unhandled(error)
            if status == 400:
                # Not the message: it carries the statement's parameters (the input).
                log.warning(
                    "rejected_value",
                    error=type(error).__name__,
                    sqlstate=getattr(getattr(error, "orig", None), "sqlstate", None),
                    path=scope.get("path"),
                )
            elif status == 503:
                log.warning(
                    "dependency_unavailable",
                    error=f"{type(error).__name__}: {error}"[:500],
                    path=scope.get("path"),
                )
            else:
                log.error("unhandled_exception", exc_info=error, path=scope.get("path"))
            await self._send_error(send_wrapper, status_holder, status, code, message, request_id)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            route_path = getattr(route, "path", None) or "unmatched"
            HTTP_REQUEST_DURATION.labels(
                scope["method"], route_path, str(status_holder["status"])
            ).observe(elapsed)
            log.info(
                "request",
                method=scope["method"],
                path=scope["path"],
                route=route_path,
                status=status_holder["status"],
                duration_ms=round(elapsed * 1000, 3),
            )

    @staticmethod
    async def _send_error(
        send: Send, holder: dict[str, Any], status: int, code: str, message: str, request_id: str
    ) -> None:
        if holder["started"]:
            return
        headers, body = error_response_parts(status, code, message, request_id)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
