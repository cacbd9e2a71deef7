"""Contract fuzzing of every operation, authenticated as an admin of one org (see
``tests/support/fuzz.py``). ``make test`` runs a small, fixed-seed budget; ``make fuzz`` sets
``USERORG_FUZZ_EXAMPLES`` for the long run."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.conftest import (
    DECLARATIVE_WEBHOOK_SECRET,
    WEBHOOK_SECRET,
    base_settings,
    start_env,
)
from tests.support import services
from tests.support.api import Env, uid
from tests.support.fuzz import CHECKS, load_schema, run_fuzz
from tests.support.receiver import WebhookReceiver

EXAMPLES = int(os.environ.get("USERORG_FUZZ_EXAMPLES", "3"))


async def test_contract_fuzz(env: Env) -> None:
    org = await env.create_org()
    org_id = org["orgId"]
    admin = await env.add_member(org_id, ["OrgAdmin"])
    # Real objects of the org, so generated calls reach past "not found" into the handlers.
    member = await env.add_member(org_id, ["Developer"])
    headers = await env.admin_headers()
    account = await env.client.post(
        f"/v1/orgs/{org_id}/service-accounts",
        json={"name": f"sa-{uid()}", "roles": ["Developer"]},
        headers=headers,
    )
    account_id = account.json()["serviceAccountId"]
    key = await env.client.post(
        f"/v1/orgs/{org_id}/service-accounts/{account_id}/api-keys",
        json={"scopes": ["inference:invoke"]},
        headers=headers,
    )
    invite = await env.client.post(
        f"/v1/orgs/{org_id}/invites",
        json={"email": f"fuzz-{uid()}@example.com", "roles": ["OrgViewer"]},
        headers=headers,
    )
    role = f"Fuzz{uid()}"
    await env.client.post(
        f"/v1/orgs/{org_id}/roles", json={"name": role, "scopes": ["users:read"]}, headers=headers
    )
    values = {
        "orgId": org_id,
        "userId": member.user_id,
        "serviceAccountId": account_id,
        "apiKeyId": key.json()["apiKeyId"],
        "inviteId": invite.json()["inviteId"],
        "roleName": role,
    }

    async def login() -> str:
        return await env.login(admin.email, admin.password)

    def fill(path: str) -> dict[str, str]:
        return values

    report = await run_fuzz(env, examples=EXAMPLES, login=login, fill=fill)
    print(
        f"\nfuzz[{env.mode}]: {report.operations} operations, {report.cases} cases, "
        f"statuses {dict(sorted(report.statuses.items()))}, {len(report.failures)} failures"
    )
    assert report.operations >= 60
    assert not report.failures, "\n".join(report.failures)


async def test_oauth2_errors_match_their_documented_schema(env: Env) -> None:
    """Fuzzing finding 1: the OAuth2 endpoints answer RFC 6749 error bodies, but the contract
    documented the service's ``ErrorBody`` for their 400/401. The contract now names the
    OAuth2 shape, and the answers validate against it."""
    schema = load_schema()
    for path, form in (
        ("/oauth2/token", {"grant_type": "password"}),
        ("/oauth2/introspect", {"token": "x"}),
        ("/oauth2/revoke", {"token": "x"}),
    ):
        bad_request = await env.client.post(path, content=b"{}")
        assert bad_request.status_code == 400
        assert bad_request.json()["error"] == "invalid_request"
        unauthenticated = await env.client.post(
            path, data={**form, "client_id": "nope", "client_secret": "nope"}
        )
        assert unauthenticated.status_code in {400, 401}, unauthenticated.text
        assert "error" in unauthenticated.json()
        operation = schema[path]["POST"]
        for response, body in ((bad_request, "{}"), (unauthenticated, form)):
            case = operation.Case(body=body, media_type="application/x-www-form-urlencoded")
            case.validate_response(response, checks=CHECKS)


@pytest.fixture(params=["embedded", "production"])
async def own_env(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    receiver: WebhookReceiver,
) -> AsyncIterator[Env]:
    """A service of the test's own: platform-wide fuzzing may end any session or suspend
    anything, which must not leak into the shared service other tests use."""
    mode = request.param
    overrides: dict[str, Any] = {
        "notifier": "webhook",
        "notify_webhook_url": receiver.url,
        "notify_webhook_secret": WEBHOOK_SECRET,
        "notify_retry_base_seconds": 0.05,
        "notify_poll_interval_seconds": 0.1,
        # Unconfigured, the webhook answers a deliberate 503 (webhook_not_configured).
        "declarative_webhook_secret": DECLARATIVE_WEBHOOK_SECRET,
    }
    if mode == "production":
        services.require_redis()
        overrides["database_url"] = request.getfixturevalue("fresh_pg_database")
    data_dir = tmp_path_factory.mktemp(f"fuzz-platform-{mode}")
    env, manager = await start_env(mode, base_settings(mode, data_dir, **overrides), receiver)
    try:
        yield env
    finally:
        await env.client.aclose()
        await manager.__aexit__(None, None, None)


@pytest.mark.skipif("USERORG_FUZZ_EXAMPLES" not in os.environ, reason="long run only (make fuzz)")
async def test_contract_fuzz_as_platform_admin(own_env: Env) -> None:
    """The platform operations (org creation and suspension, identity suspension, exports,
    policy evaluation) fuzzed with the power to succeed: as the platform admin."""
    env = own_env
    org = await env.create_org()
    member = await env.add_member(org["orgId"], ["Developer"])

    async def login() -> str:
        return await env.login(env.admin_email, env.admin_password)

    def fill(path: str) -> dict[str, str]:
        return {"orgId": org["orgId"], "userId": member.user_id}

    report = await run_fuzz(env, examples=EXAMPLES, login=login, fill=fill, fixed_seed=99)
    print(
        f"\nfuzz-platform[{env.mode}]: {report.operations} operations, {report.cases} cases, "
        f"statuses {dict(sorted(report.statuses.items()))}, {len(report.failures)} failures"
    )
    assert report.operations >= 60
    assert not report.failures, "\n".join(report.failures)
