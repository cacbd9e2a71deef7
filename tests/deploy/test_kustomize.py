"""Every Kustomize overlay, built by the real `kubectl kustomize`, validates strictly and keeps
the shape the Helm chart has (one source of truth for ports, probes, commands and secrets)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.deploy.manifests import DEPLOY, OVERLAYS, by_kind, kustomize, render_chart, validate


def _pod_shape(deployment: dict[str, Any]) -> dict[str, Any]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {
        "args": container["args"],
        "ports": container["ports"],
        "probes": {k: container[k] for k in ("startupProbe", "livenessProbe", "readinessProbe")},
        "secrets": [e for e in container["env"] if "valueFrom" in e],
        "securityContext": container["securityContext"],
        "podSecurityContext": deployment["spec"]["template"]["spec"]["securityContext"],
    }


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {overlay: kustomize(overlay) for overlay in OVERLAYS}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_validates(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    objects = rendered[overlay]
    for obj in objects:
        validate(obj)
    namespace = {"development": "userorg-dev", "staging": "userorg-staging"}.get(overlay, "userorg")
    assert {obj["metadata"].get("namespace") for obj in objects} == {namespace}
    index = by_kind(objects)
    (configmap,) = [obj for obj in objects if obj["kind"] == "ConfigMap"]
    assert configmap["data"]["USER_ORG_MODE"] == "production"
    for name in ("userorg-admin-api", "userorg-reconciler"):
        deployment = index[("Deployment", name)]
        refs = deployment["spec"]["template"]["spec"]["containers"][0]["envFrom"]
        assert refs == [{"configMapRef": {"name": configmap["metadata"]["name"]}}]
    job = index[("Job", "userorg-migrate")]["spec"]["template"]["spec"]["containers"][0]
    assert job["args"] == ["migrate"]
    assert job["envFrom"] == [{"configMapRef": {"name": configmap["metadata"]["name"]}}]
    assert index[("Deployment", "userorg-reconciler")]["spec"]["replicas"] == 1


def test_overlays_differ_where_they_should(rendered: dict[str, list[dict[str, Any]]]) -> None:
    dev, staging, prod = (by_kind(rendered[o]) for o in OVERLAYS)
    assert dev[("Deployment", "userorg-admin-api")]["spec"]["replicas"] == 1
    assert ("HorizontalPodAutoscaler", "userorg-admin-api") not in dev
    assert ("PodDisruptionBudget", "userorg-admin-api") not in dev
    assert ("ServiceMonitor", "userorg") not in dev
    assert staging[("HorizontalPodAutoscaler", "userorg-admin-api")]["spec"]["minReplicas"] == 2
    assert prod[("HorizontalPodAutoscaler", "userorg-admin-api")]["spec"]["minReplicas"] == 3
    assert prod[("PodDisruptionBudget", "userorg-admin-api")]["spec"]["minAvailable"] == 2
    for monitored in (staging, prod):
        assert ("ServiceMonitor", "userorg") in monitored
        assert ("PrometheusRule", "userorg") in monitored


def test_prometheus_rule_carries_the_alert_rules_file(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    alerts = yaml.safe_load((DEPLOY / "observability" / "alerts.yaml").read_text())
    rule = by_kind(rendered["production"])[("PrometheusRule", "userorg")]
    assert rule["spec"] == alerts


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_matches_the_chart(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    chart = by_kind(render_chart())
    built = by_kind(rendered[overlay])
    for name in ("userorg-admin-api", "userorg-reconciler"):
        assert _pod_shape(built[("Deployment", name)]) == _pod_shape(chart[("Deployment", name)])
    for name in ("userorg-admin-api", "userorg-reconciler"):
        assert (
            built[("NetworkPolicy", name)]["spec"]["ingress"]
            == chart[("NetworkPolicy", name)]["spec"]["ingress"]
        )
