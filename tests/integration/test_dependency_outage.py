"""PostgreSQL goes away under a running service, then comes back: no restart needed."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from tests.conftest import base_settings, start_env
from tests.support import services
from tests.support.api import uid
from tests.support.proxy import TcpProxy
from tests.support.receiver import WebhookReceiver
from userorg.audit.service import verify_stored_chain


async def test_database_outage_is_503_and_recovers(
    tmp_path: Path, fresh_pg_database: str, receiver: WebhookReceiver
) -> None:
    services.require_redis()
    parsed = urlparse(fresh_pg_database)
    proxy = await TcpProxy(parsed.hostname or "127.0.0.1", parsed.port or 5432).start()
    url = parsed._replace(netloc=f"{parsed.username}@127.0.0.1:{proxy.port}").geturl()
    env, manager = await start_env(
        "production", base_settings("production", tmp_path, database_url=url), receiver
    )
    try:
        headers = await env.admin_headers()
        before = await env.create_org(slug=f"before-{uid()}")
        assert (await env.client.get("/readyz")).status_code == 200
        await proxy.cut()
        ready = await env.client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["database"]["status"] == "down"
        assert ready.json()["checks"]["redis"]["status"] == "up"
        response = await env.client.get("/v1/orgs", headers=headers)
        assert response.status_code == 503
        assert response.json()["code"] == "dependency_unavailable"
        assert response.json()["message"]  # a sentence, not a stack trace
        assert "Traceback" not in response.text
        # A mutation during the outage fails as a whole: 503, and nothing of it exists later.
        lost_slug = f"during-{uid()}"
        during = await env.client.post(
            "/v1/orgs",
            json={"name": "During", "slug": lost_slug, "billingOwnerEmail": "b@example.com"},
            headers=headers,
        )
        assert during.status_code == 503, during.text
        assert during.json()["code"] == "dependency_unavailable"
        assert (await env.client.get("/healthz")).status_code == 200
        await proxy.restore()
        recovered = None
        for _ in range(50):
            recovered = await env.client.get("/v1/orgs", headers=headers)
            if recovered.status_code == 200:
                break
        assert recovered is not None and recovered.status_code == 200
        assert (await env.client.get("/readyz")).status_code == 200
        # No corruption: what existed is intact, the failed mutation left nothing, the audit
        # chains verify, and writing works again without a restart.
        slugs = {org["slug"] for org in recovered.json()["items"]}
        assert before["slug"] in slugs
        assert lost_slug not in slugs
        assert (await env.client.get(f"/v1/orgs/{lost_slug}", headers=headers)).status_code == 404
        after = await env.create_org(slug=f"after-{uid()}")
        checked = 0
        async with env.container.session_factory() as session:
            for chain in ("platform", before["orgId"], after["orgId"]):
                result = await verify_stored_chain(session, chain_id=chain)
                assert result.ok, (chain, result)
                checked += result.events_checked
        assert checked >= 2  # both creations are on a chain
    finally:
        await env.client.aclose()
        await manager.__aexit__(None, None, None)
        await proxy.cut()
