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
AUDIT_OUTBOX_BACKLOG = Gauge(
    "userorg_audit_outbox_backlog", "Audit events committed but not yet acknowledged by the stream"
)
AUDIT_OUTBOX_LAG = Gauge(
    "userorg_audit_outbox_lag_seconds", "Age of the oldest audit event waiting in the outbox"
)
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
