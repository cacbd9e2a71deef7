"""OpenTelemetry tracing: exported by OTLP/HTTP when an endpoint is configured, free otherwise.

Enabled when ``USER_ORG_OTLP_ENDPOINT`` is set (the collector's base URL; spans go to
``<endpoint>/v1/traces``) or, failing that, when the standard ``OTEL_EXPORTER_OTLP_ENDPOINT``
/ ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` variables are (``OTEL_SDK_DISABLED=true`` and
``OTEL_TRACES_EXPORTER=none`` switch it off). Each process owns its tracer provider (nothing is
installed globally), so several apps in one process (the tests) do not see each other's spans.

What produces spans:
- FastAPI's native instrumentation: one SERVER span per request, named ``METHOD /route``, with
  W3C ``traceparent`` propagation (the provider is handed to ``FastAPI(telemetry=...)``);
  health, readiness and metrics requests are not traced;
- SQLAlchemy: one CLIENT span per statement run inside a trace (``instrument_engine``);
- Redis: one CLIENT span per command (``opentelemetry-instrumentation-redis`` on our client);
- the service's own spans through ``Tracing.span``: ``identity.auth.evaluate`` around every
  authorization decision, ``identity.reconcile.run`` around a reconciliation run.

When tracing is off, ``Tracing.span`` returns one shared ``nullcontext`` and no listener is
attached, so the hot path pays an attribute lookup and nothing else.
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

from opentelemetry.trace import Span, SpanKind, StatusCode, Tracer, get_current_span

from userorg import __version__

if TYPE_CHECKING:
    from fastapi.telemetry import TelemetryConfig
    from opentelemetry.sdk.trace import TracerProvider
    from redis.asyncio import Redis
    from sqlalchemy.ext.asyncio import AsyncEngine

    from userorg.settings import Settings

AUTH_EVALUATE_SPAN = "identity.auth.evaluate"
RECONCILE_RUN_SPAN = "identity.reconcile.run"

_NULL: AbstractContextManager[None] = nullcontext()
# Probes and scrapes every few seconds would bury real traces: they are not traced.
UNTRACED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def _untraced(scope: Any) -> bool:
    return scope.get("path") in UNTRACED_PATHS


_SPAN_ATTR = "_userorg_otel_span"
_MAX_STATEMENT = 2000


def otlp_traces_endpoint(settings: Settings) -> str | None:
    """Where spans go, or None when tracing is off."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    if os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return None
    if settings.otlp_endpoint:
        return settings.otlp_endpoint.rstrip("/") + "/v1/traces"
    explicit = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    if explicit:
        return explicit
    base = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    if base:
        return base.rstrip("/") + "/v1/traces"
    return None


def build_tracer_provider(settings: Settings, *, service_name: str) -> TracerProvider | None:
    endpoint = otlp_traces_endpoint(settings)
    if endpoint is None:
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    resource = Resource.create(
        {
            "service.name": os.environ.get("OTEL_SERVICE_NAME") or service_name,
            "service.version": __version__,
            "service.namespace": "userorg",
            "deployment.environment.name": settings.mode.value,
        }
    )
    provider = TracerProvider(
        resource=resource,
        sampler=ParentBased(TraceIdRatioBased(settings.trace_sample_ratio)),
        shutdown_on_exit=False,
    )
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    return provider


class Tracing:
    """The process's tracer (or nothing). Build it with ``Tracing.from_settings``."""

    def __init__(self, provider: TracerProvider | None) -> None:
        self.provider = provider
        self.enabled = provider is not None
        self._tracer: Tracer | None = (
            provider.get_tracer("userorg", __version__) if provider is not None else None
        )

    @classmethod
    def from_settings(cls, settings: Settings, *, service_name: str) -> Tracing:
        return cls(build_tracer_provider(settings, service_name=service_name))

    def fastapi_config(self) -> TelemetryConfig:
        """``FastAPI(telemetry=...)``: server spans only when we trace; metrics stay Prometheus."""
        config: TelemetryConfig = {
            "tracing": self.enabled,
            "metrics": False,
            "logs": False,
            "operation_spans": False,
            "auto_configure": False,
            "exclude": _untraced,
        }
        if self.provider is not None:
            config["tracer_provider"] = self.provider
        return config

    def span(
        self, name: str, attributes: dict[str, Any] | None = None
    ) -> AbstractContextManager[Span | None]:
        """A span that is current inside the block; a shared no-op when tracing is off."""
        if self._tracer is None:
            return _NULL
        return self._tracer.start_as_current_span(name, attributes=attributes)

    def instrument_engine(self, engine: AsyncEngine) -> None:
        """One CLIENT span per SQL statement (the statement text, never its parameters)."""
        tracer = self._tracer
        if tracer is None:
            return
        from sqlalchemy import event

        sync_engine = engine.sync_engine
        system = "postgresql" if sync_engine.dialect.name == "postgresql" else "sqlite"
        namespace = sync_engine.url.database or ""
        host = sync_engine.url.host
        port = sync_engine.url.port

        @event.listens_for(sync_engine, "before_cursor_execute")
        def _before(
            _conn: Any, _cursor: Any, statement: str, _params: Any, context: Any, _many: bool
        ) -> None:
            if not get_current_span().is_recording():
                return  # only inside a trace: background polls would be a stream of root spans
            operation = statement.lstrip().split(None, 1)[0].upper() if statement else "SQL"
            attributes: dict[str, Any] = {
                "db.system.name": system,
                "db.namespace": namespace,
                "db.operation.name": operation,
                "db.query.text": statement[:_MAX_STATEMENT],
            }
            if host:
                attributes["server.address"] = host
            if port:
                attributes["server.port"] = port
            span = tracer.start_span(operation, kind=SpanKind.CLIENT, attributes=attributes)
            if context is not None:
                setattr(context, _SPAN_ATTR, span)

        @event.listens_for(sync_engine, "after_cursor_execute")
        def _after(
            _conn: Any, _cursor: Any, _statement: str, _params: Any, context: Any, _many: bool
        ) -> None:
            span = _pop_span(context)
            if span is not None:
                span.end()

        @event.listens_for(sync_engine, "handle_error")
        def _error(exception_context: Any) -> None:
            span = _pop_span(exception_context.execution_context)
            if span is not None:
                error = exception_context.original_exception
                span.set_attribute("error.type", type(error).__name__)
                span.set_status(StatusCode.ERROR)
                span.end()

    def instrument_redis(self, client: Redis) -> None:
        """One CLIENT span per Redis command and pipeline."""
        if self.provider is None:
            return
        from opentelemetry.instrumentation.redis import RedisInstrumentor

        RedisInstrumentor.instrument_client(client, tracer_provider=self.provider)

    def shutdown(self) -> None:
        """Flush what is buffered and stop the exporter (process or app shutdown)."""
        if self.provider is not None:
            self.provider.shutdown()


def _pop_span(context: Any) -> Span | None:
    span: Span | None = getattr(context, _SPAN_ATTR, None)
    if span is not None:
        setattr(context, _SPAN_ATTR, None)
    return span
