"""Declarative management end to end, in both modes, against real Git repositories."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.api import Env, uid
from tests.support.declarative import (
    managed_org,
    members_by_email,
    send_webhook,
    set_declarative,
    start_reconciler,
    status,
    wait_for,
    wait_status,
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


async def test_webhook_converges_everything_including_the_budget_policy(
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
        assert not synced["warnings"]

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
            "declarative:service_account:create",
            "declarative:service_account:roles_update",
            "declarative:organization:update",
            "declarative:revision:apply",
        } <= actions
        assert "declarative:budget_policy:apply" in actions
        policy = (await env.client.get(f"/v1/budgets/{org_id}/policy", headers=headers)).json()
        assert (policy["limit"], policy["currency"], policy["period"]) == (
            "5000.00",
            "USD",
            "monthly",
        )
        assert policy["warnThreshold"] == 80

        # A new commit arrives through the signed webhook.
        second = repo.write(
            {"orgs/acme/members.yaml": members_doc({owner: ["OrgOwner"], dev: ["OrgAdmin"]})}
        )
        response = await send_webhook(env, repo)
        assert response.status_code == 202, response.text
        assert response.json()["orgs"] == 1
        await wait_synced(env, org_id, second)
        assert (await members_by_email(env, org_id))[dev] == ["OrgAdmin"]
        update = await env.audit_events(org_id, action="declarative:user:roles_update")
        assert update[0]["metadata"]["commitId"] == second
        assert update[0]["metadata"]["added"] == ["OrgAdmin"]
    finally:
        await worker.stop()


async def _bootstrap(
    env: Env,
    repo: GitRepo,
    *,
    members: dict[str, list[str]] | None = None,
    drift_mode: str = "selfHeal",
    prune: bool = False,
    extra_files: dict | None = None,
) -> tuple[dict, str, dict[str, list[str]]]:
    tag = uid()
    members = members or {
        f"owner-{tag}@example.com": ["OrgOwner"],
        f"dev-{tag}@example.com": ["Developer"],
    }
    commit = repo.write({"members.yaml": members_doc(members), **(extra_files or {})})
    org = await managed_org(env, repo, drift_mode=drift_mode, prune=prune)
    return org, commit, members


async def test_poll_path_converges_without_a_webhook(env: Env, repo: GitRepo) -> None:
    worker = start_reconciler(env, declarative_poll_interval_seconds=1.0)
    try:
        org, first, members = await _bootstrap(env, repo)
        await wait_synced(env, org["orgId"], first)
        newcomer = f"new-{uid()}@example.com"
        second = repo.write({"members.yaml": members_doc({**members, newcomer: ["OrgViewer"]})})
        synced = await wait_synced(env, org["orgId"], second)
        assert synced["lastRun"]["trigger"] in {"poll", "retry"}
        assert (await members_by_email(env, org["orgId"]))[newcomer] == ["OrgViewer"]
    finally:
        await worker.stop()


async def test_unsigned_or_badly_signed_webhook_is_rejected_and_audited(
    env: Env, repo: GitRepo
) -> None:
    repo.write({"members.yaml": members_doc({f"o-{uid()}@example.com": ["OrgOwner"]})})
    before = await env.audit_count(action="api:declarative_webhook:deny")
    for signature in ("", "sha256=" + "0" * 64):
        response = await send_webhook(env, repo, signature=signature)
        assert response.status_code == 401, response.text
        assert response.json()["code"] == "invalid_signature"
    wrong_key = await send_webhook(env, repo, secret="not-the-secret")
    assert wrong_key.status_code == 401
    assert await env.audit_count(action="api:declarative_webhook:deny") == before + 3
    # A signed delivery for a repository nobody follows is accepted and changes nothing.
    unmatched = await send_webhook(env, repo)
    assert unmatched.status_code == 202
    assert unmatched.json()["orgs"] == 0


async def test_drift_is_self_healed(env: Env, repo: GitRepo) -> None:
    worker = start_reconciler(env)
    try:
        org, first, members = await _bootstrap(env, repo)
        org_id = org["orgId"]
        await wait_synced(env, org_id, first)
        dev_email = next(e for e, r in members.items() if r == ["Developer"])
        users = await env.client.get(
            f"/v1/orgs/{org_id}/users",
            params={"emailPrefix": dev_email},
            headers=await env.admin_headers(),
        )
        dev_id = users.json()["items"][0]["userId"]
        # A manual change through the API to a managed field: allowed, then reverted.
        changed = await env.client.put(
            f"/v1/orgs/{org_id}/users/{dev_id}/roles",
            json={"roles": ["OrgAdmin"]},
            headers=await env.admin_headers(),
        )
        assert changed.status_code == 200, changed.text

        async def roles() -> list[str]:
            return (await members_by_email(env, org_id))[dev_email]

        await wait_for(roles, lambda value: value == ["Developer"])
        events = await env.audit_events(org_id, limit=100)
        actions = [e["action"] for e in events]
        assert "declarative:drift:detect" in actions
        assert "declarative:drift:revert" in actions
        detect = next(e for e in events if e["action"] == "declarative:drift:detect")
        assert detect["actor"]["type"] == "system"
        assert detect["metadata"]["commitId"] == first
        assert detect["metadata"]["items"][0]["target"] == dev_email
        final = await status(env, org_id)
        assert final["status"] == "synced"
        assert final["drift"] == []
    finally:
        await worker.stop()


async def test_drift_is_reported_in_report_mode(env: Env, repo: GitRepo) -> None:
    worker = start_reconciler(env)
    try:
        org, first, _ = await _bootstrap(
            env, repo, drift_mode="report", extra_files={"org.yaml": org_doc(name="Reported")}
        )
        org_id = org["orgId"]
        await wait_synced(env, org_id, first)
        renamed = await env.client.patch(
            f"/v1/orgs/{org_id}",
            json={"name": "Renamed by hand"},
            headers=await env.admin_headers(),
        )
        assert renamed.status_code == 200

        reported = await wait_status(env, org_id, lambda s: s["status"] == "drift_detected")
        assert reported["drift"][0]["kind"] == "organization"
        assert reported["drift"][0]["changes"]["name"] == {
            "from": "Renamed by hand",
            "to": "Reported",
        }
        got = await env.client.get(f"/v1/orgs/{org_id}", headers=await env.admin_headers())
        assert got.json()["name"] == "Renamed by hand"  # reported, not reverted
        assert await env.audit_count(action="declarative:drift:detect") >= 1
        # Putting it back by hand resolves the drift.
        await env.client.patch(
            f"/v1/orgs/{org_id}", json={"name": "Reported"}, headers=await env.admin_headers()
        )
        await wait_status(env, org_id, lambda s: s["status"] == "synced" and not s["drift"])
    finally:
        await worker.stop()


async def test_lock_mode_refuses_changes_to_managed_fields_only(env: Env, repo: GitRepo) -> None:
    worker = start_reconciler(env)
    try:
        org, first, members = await _bootstrap(
            env,
            repo,
            drift_mode="lock",
            extra_files={
                "org.yaml": org_doc(name="Locked"),
                "roles.yaml": roles_doc([{"name": "Auditor", "scopes": ["audit:read"]}]),
            },
        )
        org_id = org["orgId"]
        await wait_synced(env, org_id, first)
        headers = await env.admin_headers()
        dev_email = next(e for e, r in members.items() if r == ["Developer"])
        dev_id = (
            await env.client.get(
                f"/v1/orgs/{org_id}/users", params={"emailPrefix": dev_email}, headers=headers
            )
        ).json()["items"][0]["userId"]
        refused = [
            await env.client.patch(f"/v1/orgs/{org_id}", json={"name": "x"}, headers=headers),
            await env.client.put(
                f"/v1/orgs/{org_id}/users/{dev_id}/roles",
                json={"roles": ["OrgAdmin"]},
                headers=headers,
            ),
            await env.client.delete(f"/v1/orgs/{org_id}/users/{dev_id}", headers=headers),
            await env.client.patch(
                f"/v1/orgs/{org_id}/roles/Auditor", json={"scopes": ["users:read"]}, headers=headers
            ),
            await env.client.delete(f"/v1/orgs/{org_id}/roles/Auditor", headers=headers),
        ]
        for response in refused:
            assert response.status_code == 409, response.text
            body = response.json()
            assert body["code"] == "managed_by_git"
            assert body["details"]["commitId"] == first
        denials = await env.audit_events(org_id, outcome="denied", limit=50)
        assert len([e for e in denials if e["reason"] == "managed_by_git"]) == len(refused)
        # Unmanaged fields and unmanaged things stay editable.
        ok = [
            await env.client.patch(
                f"/v1/orgs/{org_id}", json={"billingOwnerEmail": "b@example.com"}, headers=headers
            ),
            await env.client.patch(
                f"/v1/orgs/{org_id}/users/{dev_id}",
                json={"attributes": {"team": "ml"}},
                headers=headers,
            ),
            await env.client.post(
                f"/v1/orgs/{org_id}/roles",
                json={"name": "Extra", "scopes": ["orgs:read"]},
                headers=headers,
            ),
        ]
        assert [r.status_code for r in ok] == [200, 200, 201], [r.text for r in ok]
        got = (await env.client.get(f"/v1/orgs/{org_id}", headers=headers)).json()
        assert got["name"] == "Locked"
        assert (await members_by_email(env, org_id))[dev_email] == ["Developer"]
    finally:
        await worker.stop()


async def test_bad_commit_fails_keeps_the_last_good_state_and_the_next_commit_recovers(
    env: Env, repo: GitRepo
) -> None:
    worker = start_reconciler(env)
    try:
        org, first, members = await _bootstrap(env, repo)
        org_id = org["orgId"]
        await wait_synced(env, org_id, first)
        before = await members_by_email(env, org_id)
        bad_text = (
            "apiVersion: userorg/v1\n"
            "kind: MemberList\n"
            "members:\n"
            f"  - email: extra-{uid()}@example.com\n"
            "    roles: [Developer]\n"
            "    favouriteColour: blue\n"
        )
        bad = repo.write({"members.yaml": bad_text + "", "org.yaml": org_doc(name="Never")})
        assert (await send_webhook(env, repo)).status_code == 202

        failed = await wait_status(
            env,
            org_id,
            lambda s: s["currentRevision"] and s["currentRevision"]["commitId"] == bad,
        )
        assert failed["status"] == "failed"
        assert failed["lastAppliedCommit"] == first
        error = failed["lastError"]
        assert error["code"] == "invalid_config"
        problem = error["errors"][0]
        assert (problem["file"], problem["line"], problem["field"]) == (
            "members.yaml",
            6,
            "members[0].favouriteColour",
        )
        assert "members.yaml:6" in error["message"]
        assert failed["lastRun"]["status"] == "failed"
        assert await members_by_email(env, org_id) == before
        got = await env.client.get(f"/v1/orgs/{org_id}", headers=await env.admin_headers())
        assert got.json()["name"] != "Never"
        fail_events = await env.audit_events(org_id, action="declarative:revision:fail")
        assert fail_events[0]["metadata"]["commitId"] == bad
        assert fail_events[0]["outcome"] == "failure"

        newcomer = f"fixed-{uid()}@example.com"
        good = repo.write(
            {"members.yaml": members_doc({**members, newcomer: ["Developer"]}), "org.yaml": None}
        )
        assert (await send_webhook(env, repo)).status_code == 202
        recovered = await wait_synced(env, org_id, good)
        assert recovered["lastError"] is None
        assert newcomer in await members_by_email(env, org_id)
    finally:
        await worker.stop()


async def test_force_push_to_an_older_commit_is_refused_until_an_admin_accepts_it(
    env: Env, repo: GitRepo
) -> None:
    worker = start_reconciler(env)
    try:
        org, first, members = await _bootstrap(env, repo)
        org_id = org["orgId"]
        await wait_synced(env, org_id, first)
        added = f"later-{uid()}@example.com"
        second = repo.write({"members.yaml": members_doc({**members, added: ["Developer"]})})
        await send_webhook(env, repo)
        await wait_synced(env, org_id, second)

        repo.force_branch(first)  # history rewritten: the branch goes back
        assert (await send_webhook(env, repo)).status_code == 202

        refused = await wait_status(
            env,
            org_id,
            lambda s: s["currentRevision"]["commitId"] == first and s["status"] == "failed",
        )
        assert refused["lastError"]["code"] == "non_fast_forward"
        assert refused["lastAppliedCommit"] == second
        assert added in await members_by_email(env, org_id)  # nothing rolled back

        # The explicit admin action: accept exactly that commit (prune is off, so the member
        # added by the newer commit stays; the point is that the older commit is applied).
        headers = await env.admin_headers()
        wrong = await env.client.post(
            "/v1/declarative/config",
            json={"orgId": org_id, "forceCommit": "nothex"},
            headers=headers,
        )
        assert wrong.status_code == 422
        forced = await env.client.post(
            "/v1/declarative/config", json={"orgId": org_id, "forceCommit": first}, headers=headers
        )
        assert forced.status_code == 202, forced.text
        await wait_synced(env, org_id, first)
        assert await env.audit_count(action="declarative:revision:force_apply") >= 1
    finally:
        await worker.stop()


async def test_prune_off_keeps_and_prune_on_removes(env: Env, repo: GitRepo) -> None:
    worker = start_reconciler(env)
    try:
        tag = uid()
        members = {f"owner-{tag}@example.com": ["OrgOwner"]} | {
            e: ["Developer"] for e in _emails(f"m-{tag}", 4)
        }
        org, first, _ = await _bootstrap(
            env,
            repo,
            members=members,
            extra_files={
                "roles.yaml": roles_doc([{"name": "Temp", "scopes": ["orgs:read"]}]),
                "service-accounts.yaml": accounts_doc([{"name": "old-bot", "roles": ["Temp"]}]),
            },
        )
        org_id = org["orgId"]
        await wait_synced(env, org_id, first)
        gone = _emails(f"m-{tag}", 4)[0]
        kept = {e: r for e, r in members.items() if e != gone}
        second = repo.write(
            {
                "members.yaml": members_doc(kept),
                "roles.yaml": roles_doc([]),
                "service-accounts.yaml": accounts_doc([]),
            }
        )
        await send_webhook(env, repo)
        synced = await wait_synced(env, org_id, second)
        assert gone in await members_by_email(env, org_id)  # prune is off
        assert synced["lastRun"]["counts"]["notApplied"] == 3

        plan = await env.client.get(
            f"/v1/declarative/plan/{org_id}", headers=await env.admin_headers()
        )
        assert plan.status_code == 200
        skipped = [op for op in plan.json()["operations"] if op["skipped"] == "prune_disabled"]
        assert {(op["kind"], op["target"]) for op in skipped} == {
            ("member", gone),
            ("service_account", "old-bot"),
            ("role", "Temp"),
        }
        assert plan.json()["hasChanges"] is False

        await set_declarative(env, org_id, prune=True)
        await wait_status(
            env,
            org_id,
            lambda s: s["status"] == "synced" and s["lastRun"]["counts"]["delete"] == 3,
        )
        assert gone not in await members_by_email(env, org_id)
        accounts = await env.client.get(
            f"/v1/orgs/{org_id}/service-accounts", headers=await env.admin_headers()
        )
        assert accounts.json()["items"] == []
        roles = await env.client.get(f"/v1/orgs/{org_id}/roles", headers=await env.admin_headers())
        assert "Temp" not in {r["name"] for r in roles.json()["items"]}
        assert await env.audit_count(action="declarative:member:remove") >= 1
        assert await env.audit_count(action="declarative:service_account:delete") >= 1
        assert await env.audit_count(action="declarative:role:delete") >= 1
    finally:
        await worker.stop()


async def test_removal_guard_and_last_owner_guard(env: Env, repo: GitRepo) -> None:
    worker = start_reconciler(env)
    try:
        tag = uid()
        owner = f"owner-{tag}@example.com"
        devs = _emails(f"g-{tag}", 7)
        members = {owner: ["OrgOwner"]} | {e: ["Developer"] for e in devs}
        org, first, _ = await _bootstrap(env, repo, members=members, prune=True)
        org_id = org["orgId"]
        await wait_synced(env, org_id, first)

        # 5 of 8 members at once: more than the 25 % the guard allows.
        too_many = repo.write({"members.yaml": members_doc({owner: ["OrgOwner"], devs[0]: []})})
        await send_webhook(env, repo)
        refused = await wait_status(
            env, org_id, lambda s: s["currentRevision"]["commitId"] == too_many
        )
        assert refused["status"] == "failed"
        assert refused["lastError"]["code"] == "removal_guard"
        assert set(await members_by_email(env, org_id)) == set(members)

        no_owner = repo.write({"members.yaml": members_doc({**members, owner: ["Developer"]})})
        await send_webhook(env, repo)
        refused = await wait_status(
            env, org_id, lambda s: s["currentRevision"]["commitId"] == no_owner
        )
        assert refused["status"] == "failed"
        assert refused["lastError"]["code"] == "no_owner"
        assert (await members_by_email(env, org_id))[owner] == ["OrgOwner"]

        one_less = repo.write(
            {
                "members.yaml": members_doc(
                    {owner: ["OrgOwner"]} | {e: ["Developer"] for e in devs[1:]}
                )
            }
        )
        await send_webhook(env, repo)
        await wait_synced(env, org_id, one_less)
        assert devs[0] not in await members_by_email(env, org_id)
    finally:
        await worker.stop()


async def test_plan_and_dry_run_change_nothing(env: Env, repo: GitRepo) -> None:
    org, first, members = await _bootstrap(env, repo)  # no reconciler running
    org_id = org["orgId"]
    headers = await env.admin_headers()
    plan = await env.client.get(f"/v1/declarative/plan/{org_id}", headers=headers)
    assert plan.status_code == 200, plan.text
    body = plan.json()
    assert body["commitId"] == first
    assert body["valid"] is True
    assert body["hasChanges"] is True
    assert body["counts"]["create"] == len(members)
    assert "+ member" in body["text"]

    dry = await env.client.post(
        "/v1/declarative/config", json={"orgId": org["slug"], "dryRun": True}, headers=headers
    )
    assert dry.status_code == 200, dry.text
    assert dry.json()["dryRun"] is True
    assert dry.json()["wouldSucceed"] is True
    assert await members_by_email(env, org_id) == {}
    events = await env.audit_events(org_id, limit=20)
    assert not [e for e in events if e["action"].startswith("declarative:")]
    assert [e for e in events if e["action"] == "api:declarative:dry_run"]

    # A dry run of a plan that fails while applying reports how, and still changes nothing.
    repo.write({"roles.yaml": roles_doc([{"name": "Ghost", "scopes": ["orgs:read"]}])})
    unmanaged = await env.client.post(
        "/v1/declarative/config", json={"orgId": org_id, "dryRun": True}, headers=headers
    )
    assert unmanaged.status_code == 200
    assert unmanaged.json()["wouldSucceed"] is True

    missing = await env.client.post(
        "/v1/declarative/config", json={"orgId": "no-such-org-xyz"}, headers=headers
    )
    assert missing.status_code == 404


async def test_manual_sync_pause_and_disable(env: Env, repo: GitRepo) -> None:

    worker = start_reconciler(env)
    try:
        org, first, members = await _bootstrap(env, repo)
        org_id = org["orgId"]
        await wait_synced(env, org_id, first)
        await set_declarative(env, org_id, paused=True)
        paused = await wait_status(env, org_id, lambda s: s["status"] == "paused")
        assert paused["paused"] is True
        newcomer = f"paused-{uid()}@example.com"
        second = repo.write({"members.yaml": members_doc({**members, newcomer: ["Developer"]})})
        sync = await env.client.post(
            "/v1/declarative/config", json={"orgId": org_id}, headers=await env.admin_headers()
        )
        assert sync.status_code == 409
        assert sync.json()["code"] == "declarative_disabled"
        await send_webhook(env, repo)
        assert newcomer not in await members_by_email(env, org_id)

        await set_declarative(env, org_id, paused=False)
        await wait_synced(env, org_id, second)
        assert newcomer in await members_by_email(env, org_id)

        manual = await env.client.post(
            "/v1/declarative/config", json={"orgId": org_id}, headers=await env.admin_headers()
        )
        assert manual.status_code == 202, manual.text
        assert manual.json()["status"] == "pending"

        await set_declarative(env, org_id, enabled=False)
        disabled = await status(env, org_id)
        assert disabled["enabled"] is False
        assert disabled["status"] is None
        assert disabled["lastAppliedCommit"] == second
    finally:
        await worker.stop()


async def test_org_delete_is_refused_while_a_reconciliation_runs(env: Env, repo: GitRepo) -> None:
    import datetime as dt
    import uuid

    from sqlalchemy import update

    from userorg.declarative.models import DeclarativeState

    org, _, _ = await _bootstrap(env, repo)
    org_id = uuid.UUID(org["orgId"])
    async with env.container.uow() as uow:
        await uow.session.execute(
            update(DeclarativeState)
            .where(DeclarativeState.org_id == org_id)
            .values(
                lease_owner="another-reconciler",
                lease_expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5),
            )
        )
    headers = await env.admin_headers()
    refused = await env.client.delete(f"/v1/orgs/{org_id}", headers=headers)
    assert refused.status_code == 409
    assert refused.json()["code"] == "reconciliation_running"
    async with env.container.uow() as uow:
        await uow.session.execute(
            update(DeclarativeState)
            .where(DeclarativeState.org_id == org_id)
            .values(lease_owner=None, lease_expires_at=None)
        )
    deleted = await env.client.delete(f"/v1/orgs/{org_id}", headers=headers)
    assert deleted.status_code == 202


async def test_unreachable_repository_fails_with_a_precise_error_and_backs_off(
    env: Env, tmp_path: Path
) -> None:
    worker = start_reconciler(env, declarative_retry_base_seconds=30.0)
    try:
        missing = GitRepo(tmp_path / "gone")
        org = await managed_org(env, missing)
        import shutil

        shutil.rmtree(missing.path)
        failed = await wait_status(env, org["orgId"], lambda s: s["lastError"] is not None)
        assert failed["lastError"]["code"] == "repo_unreachable"
        assert failed["lastRun"]["status"] == "failed"
        assert failed["lastAppliedCommit"] is None
        assert failed["status"] == "pending"  # nothing applied yet, retried later
        events = await env.audit_events(org["orgId"], action="declarative:source:fail")
        assert events[0]["outcome"] == "failure"
        assert events[0]["metadata"]["retryInSeconds"] == 30.0
    finally:
        await worker.stop()
