"""Prometheus metrics shared by every part of the process (one registry per process)."""

from __future__ import annotations

import collections
from collections.abc import Iterable

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

HTTP_REQUEST_DURATION = Histogram(
    "userorg_http_request_duration_seconds",
    "HTTP request latency by route template",
    ["method", "route", "status"],
    buckets=LATENCY_BUCKETS,
)
AUTHZ_DENIALS = Counter(
    "userorg_authz_denials_total", "Authorization denials by reason", ["reason"]
)
LOGIN_ATTEMPTS = Counter(
    "userorg_login_attempts_total", "Password sign-in attempts by outcome", ["outcome"]
)
NOTIFICATIONS = Counter(
    "userorg_notifications_total", "Notification deliveries by outcome", ["outcome"]
)
RATE_LIMITED = Counter("userorg_rate_limited_total", "Requests refused by a rate limit", ["scope"])
BUS_MESSAGES = Counter(
    "userorg_bus_messages_total", "Invalidation bus messages", ["direction", "channel"]
)

# Operations issue: what the alert rules and the dashboard in deploy/observability/ read.
AUTHZ_DECISION_DURATION = Histogram(
    "userorg_authz_decision_duration_seconds",
    "Authorization decisions (loading the caller's grants and asking the policy engine), "
    "by enforcement point and decision",
    ["enforcement_point", "decision"],
    buckets=LATENCY_BUCKETS,
)
DEPENDENCY_UP = Gauge(
    "userorg_dependency_up",
    "1 when the dependency answered the last readiness check, 0 when it did not",
    ["dependency"],
)
OUTBOX_PENDING = Gauge(
    "userorg_outbox_pending", "Rows waiting in an outbox (not yet delivered)", ["outbox"]
)
OUTBOX_OLDEST_AGE = Gauge(
    "userorg_outbox_oldest_pending_age_seconds",
    "Age of the oldest row still waiting in an outbox (0 when it is empty)",
    ["outbox"],
)
RECONCILE_RUNS = Counter(
    "userorg_reconcile_runs_total", "Reconciliation runs by outcome", ["outcome"]
)
RECONCILE_DURATION = Histogram(
    "userorg_reconcile_run_duration_seconds",
    "Duration of reconciliation runs",
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0),
)
for _outcome in ("succeeded", "failed"):
    RECONCILE_RUNS.labels(_outcome)
POLICY_DECISION_SECONDS = Histogram(
    "userorg_policy_decision_seconds",
    "Policy evaluation latency (cache misses; hits cost about a microsecond)",
    buckets=(0.00002, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.01, 0.05, 0.25, 1.0),
)
POLICY_RELOADS = Counter(
    "userorg_policy_reloads_total", "Policy hot reloads by outcome", ["outcome"]
)
RECONCILE_DRIFT = Counter(
    "userorg_reconcile_drift_items_total",
    "Drift items found (changes outside Git to managed fields), by what happened to them",
    ["action"],
)
RECONCILE_QUEUE_DEPTH = Gauge(
    "userorg_reconcile_queue_depth", "Orgs due for reconciliation and not yet started"
)
RECONCILE_IN_FLIGHT = Gauge("userorg_reconcile_in_flight", "Reconciliations running now")
DECLARATIVE_WEBHOOKS = Counter(
    "userorg_declarative_webhooks_total", "Declarative webhook deliveries by outcome", ["outcome"]
)

# Audit pipeline (the audit outbox's backlog is OUTBOX_PENDING / OUTBOX_OLDEST_AGE{outbox="audit"}).
AUDIT_RELAY_PUBLISHED = Counter(
    "userorg_audit_relay_published_total", "Audit events acknowledged by the stream"
)
AUDIT_RELAY_FAILURES = Counter(
    "userorg_audit_relay_failures_total", "Relay iterations that failed (stream or database)"
)
AUDIT_RELAY_LEADER = Gauge(
    "userorg_audit_relay_leader", "1 while this process holds the audit relay lease"
)
AUDIT_EXPORTS = Counter("userorg_audit_exports_total", "Audit exports by outcome", ["outcome"])
AUDIT_PURGED = Counter("userorg_audit_events_purged_total", "Audit events purged by retention")


class _GatewayStats(Collector):
    """Hot-path counters kept as plain integers (a Prometheus counter's lock costs more than
    the decision) and turned into metrics when scraped."""

    def __init__(self) -> None:
        self.counts: collections.Counter[tuple[str, str]] = collections.Counter()

    def collect(self) -> Iterable[Metric]:
        decisions = CounterMetricFamily(
            "userorg_gateway_decisions",
            "Gateway answers by endpoint and outcome",
            labels=["endpoint", "outcome"],
        )
        cache = CounterMetricFamily(
            "userorg_gateway_cache",
            "Gateway cache lookups: hit, stale (served while reloading), miss (read the "
            "database), bypass (cache not trusted)",
            labels=["result"],
        )
        for (family, label), value in sorted(self.counts.items()):
            if family == "cache":
                cache.add_metric([label], value)
            else:
                decisions.add_metric([family, label], value)
        yield decisions
        yield cache


GATEWAY_STATS = _GatewayStats()
REGISTRY.register(GATEWAY_STATS)
