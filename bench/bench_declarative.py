"""Declarative management: time from a signed webhook to `synced` across the two real processes
(admin-api and reconciler, embedded mode), and the time to plan 20,000 orgs.

Run alone with `python bench/run.py bench_declarative`. Measures; never asserts.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml
from dulwich.objects import Blob, Commit, Tree
from dulwich.repo import Repo

from userorg.declarative.plan import ActualOrg, compute_plan
from userorg.declarative.schema import load_documents
from userorg.declarative.source import GitSource

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.support.gitrepo import GitRepo, members_doc  # noqa: E402

SECRET = "bench-webhook-secret"
ADMIN = ("bench-admin@example.com", "Sturdy-Operator-Passphrase-9")
ORGS = 20_000
ROUNDS = 10


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not healthy")


def _production_env() -> dict[str, str] | None:
    """A fresh PostgreSQL database and a Redis prefix, when the machine's services answer."""
    from tests.support import services

    if not (
        services.reachable(services.POSTGRES_URL, 5432)
        and services.reachable(services.REDIS_URL, 6379)
    ):
        return None
    url = services.run_in_thread(services.create_database)
    return {
        "USER_ORG_MODE": "production",
        "USER_ORG_DATABASE_URL": url,
        "USER_ORG_REDIS_URL": services.REDIS_URL,
        "USER_ORG_KEY_PREFIX": f"bench-{secrets.token_hex(4)}",
        "USER_ORG_MASTER_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
        # the bench repository is a local one (production refuses them unless told)
        "USER_ORG_DECLARATIVE_ALLOW_LOCAL_REPOS": "true",
    }


def webhook_to_synced(production: bool = False) -> None:
    extra: dict[str, str] = {}
    if production:
        found = _production_env()
        if found is None:
            print("| webhook → synced, production | skipped: PostgreSQL or Redis unreachable |")
            return
        extra = found
        from userorg import migrate

        migrate.upgrade(extra["USER_ORG_DATABASE_URL"])
    with tempfile.TemporaryDirectory(prefix="bench-declarative-") as tmp:
        api_port, rec_port = _free_port(), _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("USER_ORG_")}
        env.update(extra)
        env.update(
            USER_ORG_DATA_DIR=f"{tmp}/var",
            USER_ORG_ADMIN_API_PORT=str(api_port),
            USER_ORG_RECONCILER_PORT=str(rec_port),
            USER_ORG_BOOTSTRAP_ADMIN_EMAIL=ADMIN[0],
            USER_ORG_BOOTSTRAP_ADMIN_PASSWORD=ADMIN[1],
            USER_ORG_DECLARATIVE_WEBHOOK_SECRET=SECRET,
            USER_ORG_LOG_LEVEL="warning",
        )
        exe = [sys.executable, "-m", "userorg"]
        api = subprocess.Popen([*exe, "serve"], env=env, stdout=subprocess.DEVNULL)
        try:
            _wait(f"http://127.0.0.1:{api_port}/healthz", api)
            reconciler = subprocess.Popen([*exe, "reconcile"], env=env, stdout=subprocess.DEVNULL)
            try:
                _wait(f"http://127.0.0.1:{rec_port}/healthz", reconciler)
                samples = _rounds(f"http://127.0.0.1:{api_port}", Path(tmp) / "repo")
            finally:
                reconciler.send_signal(signal.SIGTERM)
                reconciler.wait(30)
        finally:
            api.send_signal(signal.SIGTERM)
            api.wait(30)
    if production:
        from tests.support import services

        services.run_in_thread(lambda: services.drop_database(extra["USER_ORG_DATABASE_URL"]))
    samples.sort()
    how = (
        "production (PostgreSQL; the Redis bus wakes the reconciler)"
        if production
        else "embedded (SQLite; the reconciler polls the database every 1 s)"
    )
    print(
        f"| webhook → synced, two processes, {how}; {ROUNDS} rounds "
        f"| p50 {statistics.median(samples):.2f} s | max {samples[-1]:.2f} s |"
    )


def _rounds(base: str, path: Path) -> list[float]:
    client = httpx.Client(base_url=base, timeout=30)
    token = client.post("/v1/auth/login", json={"email": ADMIN[0], "password": ADMIN[1]}).json()[
        "accessToken"
    ]
    headers = {"Authorization": f"Bearer {token}"}
    repo = GitRepo(path)
    members = {"owner@bench.example.com": ["OrgOwner"]} | {
        f"dev{i}@bench.example.com": ["Developer"] for i in range(20)
    }
    first = repo.write({"members.yaml": members_doc(members)})
    org = client.post(
        "/v1/orgs",
        json={
            "name": "Bench",
            "slug": f"bench-{secrets.token_hex(4)}",
            "billingOwnerEmail": "billing@bench.example.com",
            "declarative": {"enabled": True, "repoUrl": repo.url, "branch": "main"},
        },
        headers=headers,
    ).json()
    _until_synced(client, headers, org["orgId"], first)
    samples = []
    for i in range(ROUNDS):
        members[f"new{i}@bench.example.com"] = ["OrgViewer"]
        commit = repo.write({"members.yaml": members_doc(members)})
        body = orjson.dumps(
            {"ref": "refs/heads/main", "after": commit, "repository": {"clone_url": repo.url}}
        )
        signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        started = time.monotonic()
        response = client.post(
            "/v1/declarative/webhook",
            content=body,
            headers={"X-Hub-Signature-256": signature, "Content-Type": "application/json"},
        )
        assert response.status_code == 202, response.text
        _until_synced(client, headers, org["orgId"], commit)
        samples.append(time.monotonic() - started)
    return samples


def _until_synced(client: httpx.Client, headers: dict[str, str], org_id: str, commit: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        body = client.get(f"/v1/declarative/status/{org_id}", headers=headers).json()
        if body["status"] == "synced" and body["lastAppliedCommit"] == commit:
            return
        time.sleep(0.02)
    raise RuntimeError("not synced in 120 s")


def _org_files(i: int) -> dict[str, bytes]:
    def doc(value: dict[str, Any]) -> bytes:
        return yaml.safe_dump(value, sort_keys=False).encode()

    return {
        "org.yaml": doc({"apiVersion": "userorg/v1", "kind": "Organization", "name": f"Org {i}"}),
        "roles.yaml": doc(
            {
                "apiVersion": "userorg/v1",
                "kind": "RoleList",
                "roles": [{"name": "ModelOps", "scopes": ["api_keys:write", "orgs:read"]}],
            }
        ),
        "members.yaml": doc(
            members_doc(
                {f"owner@o{i}.example.com": ["OrgOwner"]}
                | {f"u{j}@o{i}.example.com": ["Developer"] for j in range(9)}
            )
        ),
        "service-accounts.yaml": doc(
            {
                "apiVersion": "userorg/v1",
                "kind": "ServiceAccountList",
                "serviceAccounts": [{"name": "ci", "roles": ["ModelOps"]}],
            }
        ),
    }


def _build_repo(path: Path) -> None:
    """One commit holding 20,000 org folders, written as a single pack."""
    repo = Repo.init(str(path), mkdir=True)
    objects: list[Any] = []
    orgs = Tree()
    for i in range(ORGS):
        folder = Tree()
        for name, data in _org_files(i).items():
            blob = Blob.from_string(data)
            objects.append(blob)
            folder.add(name.encode(), 0o100644, blob.id)
        objects.append(folder)
        orgs.add(f"org-{i}".encode(), 0o040000, folder.id)
    root = Tree()
    root.add(b"orgs", 0o040000, orgs.id)
    commit = Commit()
    commit.tree = root.id
    commit.author = commit.committer = b"Bench <bench@example.com>"
    commit.commit_time = commit.author_time = int(time.time())
    commit.commit_timezone = commit.author_timezone = 0
    commit.message = b"20k orgs"
    objects += [orgs, root, commit]
    repo.object_store.add_objects([(obj, None) for obj in objects])
    repo.refs[b"refs/heads/main"] = commit.id


def plan_20k_orgs() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-plan-") as tmp:
        started = time.perf_counter()
        _build_repo(Path(tmp) / "repo")
        build = time.perf_counter() - started
        source = GitSource(cache_dir=Path(tmp) / "cache")
        url = f"file://{tmp}/repo"
        head = source.head(url, "main").commit_id
        read = parse = diff = 0.0
        changes = 0
        for i in range(ORGS):
            t0 = time.perf_counter()
            files = source.read_folder(url, head, f"orgs/org-{i}")
            t1 = time.perf_counter()
            desired = load_documents(files, max_file_bytes=1_048_576)
            t2 = time.perf_counter()
            actual = ActualOrg.from_desired(f"org-{i}", desired)
            if i % 10 == 0:  # every tenth org has drifted: one member's roles changed
                actual.members[f"u0@o{i}.example.com"] = {"roles": ["OrgAdmin"], "status": "active"}
            plan = compute_plan(desired, actual, prune=True)
            t3 = time.perf_counter()
            changes += plan.has_changes
            read, parse, diff = read + t1 - t0, parse + t2 - t1, diff + t3 - t2
    total = read + parse + diff
    print(
        f"| plan {ORGS:,} orgs (4 files, 10 members each; Git read + validate + diff, one core) "
        f"| {total:.1f} s total: read {read:.1f} s, validate {parse:.1f} s, diff {diff:.2f} s "
        f"| {changes} orgs with changes; repo built in {build:.1f} s |"
    )


def main() -> None:
    webhook_to_synced()
    webhook_to_synced(production=True)
    plan_20k_orgs()


if __name__ == "__main__":
    asyncio.run(asyncio.sleep(0))
    main()
