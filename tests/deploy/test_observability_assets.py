"""The alert rules and the Grafana dashboard parse, and every metric (and label) they name
exists in the service's Prometheus registry; every alert has a runbook section."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

import userorg.telemetry.metrics  # noqa: F401 (registers every metric)
from tests.deploy.manifests import DEPLOY, ROOT

ALERTS = DEPLOY / "observability" / "alerts.yaml"
DASHBOARD = DEPLOY / "observability" / "grafana-dashboard.json"
RUNBOOK = ROOT / "docs" / "operations.md"
# PromQL labels every Prometheus target carries, and the histogram bucket label.
TARGET_LABELS = {"namespace", "pod", "instance", "job", "service", "container", "le"}
SELECTOR = re.compile(r"\b(userorg_[a-z0-9_]+)\s*(\{[^}]*\})?")
BY_CLAUSE = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")


def exposed_series() -> dict[str, set[str]]:
    """Sample name -> label names, for every userorg metric (with or without samples yet)."""
    series: dict[str, set[str]] = {}
    for collector, names in list(REGISTRY._collector_to_names.items()):
        labels = set(getattr(collector, "_labelnames", ()))
        for name in names:
            if name.startswith("userorg_") and not name.endswith("_created"):
                series[name] = labels
    return series


def check_expression(expr: str, series: dict[str, set[str]]) -> list[str]:
    problems = []
    assert expr.count("(") == expr.count(")"), expr
    assert expr.count("{") == expr.count("}"), expr
    found = SELECTOR.findall(expr)
    if not found:  # only Prometheus's own per-target series
        assert re.fullmatch(r"up\{[^}]*\} == 0", expr.strip()), expr
        return []
    known_labels: set[str] = set(TARGET_LABELS)
    for name, selector in found:
        if name not in series:
            problems.append(f"unknown metric {name}")
            continue
        known_labels |= series[name]
        for label in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", selector):
            if label not in series[name] | TARGET_LABELS:
                problems.append(f"{name} has no label {label}")
    for clause in BY_CLAUSE.findall(expr):
        for label in (part.strip() for part in clause.split(",")):
            if label and label not in known_labels:
                problems.append(f"grouping by unknown label {label}")
    return problems


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_alert_rules_reference_real_metrics() -> None:
    series = exposed_series()
    rules = alert_rules()
    names = {rule["alert"] for rule in rules}
    # The alerts the operations issue asks for.
    assert {
        "UserorgHighDenyRate",
        "UserorgOutboxLag",
        "UserorgReconcileFailures",
        "UserorgDependencyDown",
    } <= names
    assert len(names) == len(rules)
    problems = []
    for rule in rules:
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning"}
        assert {"summary", "description", "runbook_url"} <= set(rule["annotations"])
        problems += [f"{rule['alert']}: {p}" for p in check_expression(rule["expr"], series)]
    assert problems == []


def test_every_alert_has_a_runbook_section() -> None:
    headings = {
        re.sub(r"[^a-z0-9]+", "", line.lstrip("#").strip().lower())
        for line in RUNBOOK.read_text().splitlines()
        if line.startswith("#")
    }
    for rule in alert_rules():
        anchor = rule["annotations"]["runbook_url"].split("#", 1)[1]
        assert anchor == rule["alert"].lower()
        assert anchor in headings, f"docs/operations.md has no section {rule['alert']}"


def test_dashboard_queries_reference_real_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    series = exposed_series()
    panels = dashboard["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    problems = []
    for panel in panels:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            expr = target["expr"].replace("$namespace", "x")
            problems += [f"{panel['title']}: {p}" for p in check_expression(expr, series)]
    assert problems == []
    # Everything an operator alerts on is on the dashboard.
    charted = " ".join(t["expr"] for p in panels for t in p["targets"])
    for metric in (
        "userorg_http_request_duration_seconds",
        "userorg_authz_decision_duration_seconds",
        "userorg_authz_denials_total",
        "userorg_login_attempts_total",
        "userorg_dependency_up",
        "userorg_outbox_oldest_pending_age_seconds",
        "userorg_reconcile_runs_total",
    ):
        assert metric in charted


@pytest.mark.parametrize(
    ("expr", "problem"),
    [
        ("rate(userorg_no_such_metric_total[5m])", "unknown metric userorg_no_such_metric_total"),
        (
            'userorg_dependency_up{dependecy="redis"}',
            "userorg_dependency_up has no label dependecy",
        ),
        ("sum by (route) (userorg_outbox_pending)", "grouping by unknown label route"),
    ],
)
def test_the_checker_catches_mistakes(expr: str, problem: str) -> None:
    assert problem in check_expression(expr, exposed_series())
