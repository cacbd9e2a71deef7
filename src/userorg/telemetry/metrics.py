"""Prometheus metrics shared by every part of the process (one registry per process)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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

RECONCILE_RUNS = Counter(
    "userorg_reconcile_runs_total",
    "Declarative reconciliation runs by outcome and trigger",
    ["outcome", "trigger"],
)
RECONCILE_DURATION = Histogram(
    "userorg_reconcile_run_duration_seconds",
    "Duration of declarative reconciliation runs (fetch, plan, apply)",
    ["outcome"],
    buckets=(*LATENCY_BUCKETS, 30.0, 60.0, 120.0),
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
