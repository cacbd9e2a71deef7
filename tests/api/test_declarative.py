"""Declarative management end to end, in both modes, against real Git repositories."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.api import Env, uid
from tests.support.declarative import (
    managed_org,
    members_by_email,
    send_webhook,
    start_reconciler,
    wait_synced,
)
from tests.support.gitrepo import (
    GitRepo,
    accounts_doc,
    budget_doc,
    members_doc,
    org_doc,
    roles_doc,
)


def _emails(prefix: str, n: int) -> list[str]:
    return [f"{prefix}-{i}@example.com" for i in range(n)]


@pytest.fixture
def repo(tmp_path: Path) -> GitRepo:
    return GitRepo(tmp_path / "config")


async def test_webhook_converges_everything_and_reports_the_budget_honestly(
    env: Env, repo: GitRepo
) -> None:
    tag = uid()
    owner, dev = f"owner-{tag}@example.com", f"dev-{tag}@example.com"
    first = repo.write(
        {
            "orgs/acme/org.yaml": org_doc(name="Acme Declared", mfaRequiredRoles=["ModelOps"]),
            "orgs/acme/roles.yaml": roles_doc(
                [{"name": "ModelOps", "description": "ops", "scopes": ["api_keys:write"]}]
            ),
            "orgs/acme/members.yaml": members_doc({owner: ["OrgOwner"], dev: ["Developer"]}),
            "orgs/acme/service-accounts.yaml": accounts_doc(
                [{"name": "ci-bot", "description": "CI", "roles": ["ModelOps"]}]
            ),
            "orgs/acme/budget.yaml": budget_doc(
                limit="5000.00", currency="USD", period="monthly", warnThreshold=80
            ),
        }
    )
    worker = start_reconciler(env)
    try:
        org = await managed_org(env, repo, path="orgs/acme")
        org_id = org["orgId"]
        synced = await wait_synced(env, org_id, first)
        assert synced["currentRevision"]["status"] == "synced"
        assert synced["lastRun"]["status"] == "successful"
        assert synced["warnings"] and synced["warnings"][0]["kind"] == "budget_policy"
        assert synced["warnings"][0]["skipped"] == "budgets_capability_unavailable"

        headers = await env.admin_headers()
        got = (await env.client.get(f"/v1/orgs/{org_id}", headers=headers)).json()
        assert got["name"] == "Acme Declared"
        assert got["mfaRequiredRoles"] == ["ModelOps"]
        assert await members_by_email(env, org_id) == {owner: ["OrgOwner"], dev: ["Developer"]}
        accounts = (
            await env.client.get(f"/v1/orgs/{org_id}/service-accounts", headers=headers)
        ).json()["items"]
        assert [(a["name"], a["roles"]) for a in accounts] == [("ci-bot", ["ModelOps"])]

        events = await env.audit_events(org_id, limit=200)
        ours = [e for e in events if e["action"].startswith("declarative:")]
        assert ours and all(e["actor"]["type"] == "system" for e in ours)
        assert all(e["metadata"]["commitId"] == first for e in ours)
        actions = {e["action"] for e in ours}
        assert {
            "declarative:role:create",
            "declarative:member:add",
            "declarative:user:roles_update",
            "declarative:service_account:create",
            "declarative:organization:update",
            "declarative:revision:apply",
        } <= actions
        applied = next(e for e in ours if e["action"] == "declarative:revision:apply")
        assert applied["metadata"]["notApplied"][0]["skipped"] == "budgets_capability_unavailable"

        # A new commit arrives through the signed webhook.
        second = repo.write(
            {"orgs/acme/members.yaml": members_doc({owner: ["OrgOwner"], dev: ["OrgAdmin"]})}
        )
        response = await send_webhook(env, repo)
        assert response.status_code == 202, response.text
        assert response.json()["orgs"] == 1
        await wait_synced(env, org_id, second)
        assert (await members_by_email(env, org_id))[dev] == ["OrgAdmin"]
    finally:
        await worker.stop()
