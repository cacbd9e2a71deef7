"""OpenTelemetry traces reach a real OTLP/HTTP receiver: server, authorization, SQL and Redis
spans in one trace, continuing the caller's W3C traceparent; nothing is traced when no endpoint
is configured."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import base_settings, start_env
from tests.support import services
from tests.support.otlp import OtlpReceiver
from tests.support.receiver import WebhookReceiver
from userorg.settings import Settings
from userorg.telemetry.tracing import AUTH_EVALUATE_SPAN, Tracing, otlp_traces_endpoint

SERVER, CLIENT = 2, 3  # opentelemetry.proto SpanKind values


@pytest.fixture
def otlp() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver().start()
    yield receiver
    receiver.stop()


@pytest.mark.parametrize("mode", ["embedded", "production"])
async def test_request_trace_reaches_the_collector(
    mode: str,
    tmp_path: Path,
    otlp: OtlpReceiver,
    receiver: WebhookReceiver,
    request: pytest.FixtureRequest,
) -> None:
    overrides: dict[str, object] = {"otlp_endpoint": otlp.endpoint}
    if mode == "production":
        services.require_redis()
        overrides["database_url"] = request.getfixturevalue("fresh_pg_database")
    env, manager = await start_env(mode, base_settings(mode, tmp_path, **overrides), receiver)
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    try:
        assert env.container.tracing.enabled
        headers = await env.admin_headers()
        org = await env.create_org()
        response = await env.client.get(
            f"/v1/orgs/{org['orgId']}",
            headers={**headers, "traceparent": f"00-{trace_id}-{parent_id}-01"},
        )
        assert response.status_code == 200
        # Probes and scrapes are not traced (they would bury real traces).
        assert (await env.client.get("/readyz")).status_code == 200
        assert (await env.client.get("/metrics")).status_code == 200
        if env.container.redis is not None:
            with env.container.tracing.span("test.redis"):
                await env.container.redis.ping()
    finally:
        await env.client.aclose()
        await manager.__aexit__(None, None, None)  # shuts the provider down: flushes spans

    assert otlp.content_types == {"application/x-protobuf"}
    trace = otlp.in_trace(trace_id)
    server = [s for s in trace if s.name == "GET /v1/orgs/{orgId}"]
    assert len(server) == 1, [s.name for s in trace]
    assert server[0].kind == SERVER
    assert server[0].parent_span_id == parent_id  # continues the caller's trace
    assert server[0].attributes["http.route"] == "/v1/orgs/{orgId}"
    assert server[0].attributes["http.response.status_code"] == 200
    assert server[0].resource["service.name"] == "userorg-admin-api"

    (evaluate,) = [s for s in trace if s.name == AUTH_EVALUATE_SPAN]
    assert evaluate.attributes["userorg.permission"] == "orgs:read"
    assert evaluate.attributes["userorg.decision"] == "allow"
    assert evaluate.attributes["userorg.policy_id"]
    by_id = {s.span_id: s for s in trace}
    ancestor = by_id.get(evaluate.parent_span_id)
    while ancestor is not None and ancestor.kind != SERVER:
        ancestor = by_id.get(ancestor.parent_span_id)
    assert ancestor is server[0]

    system = "postgresql" if mode == "production" else "sqlite"
    sql = [s for s in trace if s.attributes.get("db.system.name") == system]
    assert sql, "no SQL span in the request's trace"
    assert all(s.kind == CLIENT and s.attributes["db.query.text"] for s in sql)
    # The grants query runs inside the authorization span.
    assert any(s.parent_span_id == evaluate.span_id for s in sql)

    everything = repr([(s.name, s.attributes) for s in otlp.spans])
    assert env.admin_password not in everything  # statements are traced without parameters
    assert not [s for s in otlp.spans if s.name in {"GET /readyz", "GET /metrics"}]
    if mode == "production":
        (parent,) = otlp.named("test.redis")
        (ping,) = [s for s in otlp.spans if s.parent_span_id == parent.span_id]
        assert ping.name == "PING"
        assert ping.kind == CLIENT


def test_no_endpoint_means_no_tracing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings(data_dir=tmp_path)
    tracing = Tracing.from_settings(settings, service_name="t")
    assert not tracing.enabled
    assert tracing.span("a") is tracing.span("b")  # one shared no-op, nothing allocated
    assert tracing.fastapi_config()["tracing"] is False

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")
    assert otlp_traces_endpoint(settings) == "http://collector:4318/v1/traces"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4318/custom")
    assert otlp_traces_endpoint(settings) == "http://c:4318/custom"
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert otlp_traces_endpoint(settings) is None
    monkeypatch.delenv("OTEL_SDK_DISABLED")
    explicit = Settings(data_dir=tmp_path, otlp_endpoint="https://otel.internal:4318")
    assert otlp_traces_endpoint(explicit) == "https://otel.internal:4318/v1/traces"
