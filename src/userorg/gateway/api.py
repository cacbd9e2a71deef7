"""The gateway routes as the contract documents them.

Requests to these paths are answered by the fast path (``gateway/http.py``) before FastAPI's
router sees them; these FastAPI routes describe the same operations in the OpenAPI document
and, should the fast path ever be bypassed, answer the same way through the same core.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from userorg.deps import ContainerDep
from userorg.gateway.http import AUTHORIZE_PATH, VALIDATE_PATH, BodyError, parse_body
from userorg.gateway.schemas import (
    AuthorizeRequest,
    AuthorizeResponse,
    ValidateApiKeyRequest,
    ValidateApiKeyResponse,
)
from userorg.http import JSONBody

router = APIRouter(tags=["gateway"])


async def _answer(request: Request, container: ContainerDep, path: str) -> Response:
    try:
        parsed = parse_body(path, await request.body())
    except BodyError as error:
        return JSONBody(
            {"code": error.code, "message": error.message, "details": error.details},
            status_code=error.status,
        )
    gateway = container.gateway
    answer = await (
        gateway.authorize(parsed) if path == AUTHORIZE_PATH else gateway.validate(parsed)
    )
    return JSONBody(answer)


@router.post(
    VALIDATE_PATH,
    response_model=ValidateApiKeyResponse,
    response_model_exclude_none=True,
    summary="Validate an API key (public; the platform router calls it on every request)",
    description=(
        "Compatibility endpoint. A good key answers `{valid: true, apiKeyId, organizationId, "
        "principalId, principalType, scopes, status, expiresAt}`; a bad, revoked or expired "
        "one (or one whose principal or org is suspended) answers 200 `{valid: false, message}`."
        " When `USER_ORG_GATEWAY_SHARED_SECRET` is set, the `X-Gateway-Secret` header must "
        "carry it."
    ),
)
async def validate_api_key(
    body: ValidateApiKeyRequest, request: Request, container: ContainerDep
) -> Response:
    return await _answer(request, container, VALIDATE_PATH)


@router.post(
    AUTHORIZE_PATH,
    response_model=AuthorizeResponse,
    response_model_exclude_none=True,
    summary="The gateway decision for one inference request",
    description=(
        "`credential` is the API key or user access token as presented. Answers 200 with "
        "`decision: allow|deny` and a specific `reason` (`key_revoked`, `key_expired`, "
        "`key_rotated`, `key_unknown`, `credential_malformed`, `principal_suspended`, "
        "`org_suspended`, `scope_missing`, `budget_exceeded`, ...). With `estimatedCost` the "
        "estimate is reserved atomically against the org's budget and `reservationId` is "
        "returned (settle it with usage carrying it). `budget.remaining` is a decimal string "
        "(null without a budget policy). `ttlSeconds` is how long the caller may reuse the answer."
    ),
)
async def authorize(body: AuthorizeRequest, request: Request, container: ContainerDep) -> Response:
    return await _answer(request, container, AUTHORIZE_PATH)
