"""The Helm chart, rendered by the real Helm engine and checked object by object against the
Kubernetes schemas (strict), plus the wiring between objects that schemas cannot see."""

from __future__ import annotations

from typing import Any

import pytest

from tests.deploy.manifests import CHART, by_kind, render_chart, validate
from userorg.cli import app as cli
from userorg.settings import Settings


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def test_chart_lints_clean() -> None:
    import helm_python as helm

    report = helm.lint(str(CHART), {}, strict=True, kube_version="v1.30.0")
    assert report["errors"] == []
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert problems == []


def test_default_render_validates_and_is_wired() -> None:
    objects = render_chart()
    for obj in objects:
        validate(obj)
    index = by_kind(objects)
    assert set(index) == {
        ("ServiceAccount", "userorg"),
        ("ConfigMap", "userorg"),
        ("Deployment", "userorg-admin-api"),
        ("Deployment", "userorg-reconciler"),
        ("Service", "userorg-admin-api"),
        ("Service", "userorg-gateway"),
        ("Service", "userorg-reconciler"),
        ("HorizontalPodAutoscaler", "userorg-admin-api"),
        ("PodDisruptionBudget", "userorg-admin-api"),
        ("ServiceMonitor", "userorg"),
        ("Job", "userorg-migrate"),
        ("NetworkPolicy", "userorg-admin-api"),
        ("NetworkPolicy", "userorg-reconciler"),
    }

    admin = index[("Deployment", "userorg-admin-api")]
    assert "replicas" not in admin["spec"]  # the HPA owns the count
    pod = admin["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    api = _container(admin)
    assert api["args"] == ["serve"]
    assert {p["name"]: p["containerPort"] for p in api["ports"]} == {"http": 8081, "gateway": 8083}
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert api["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api["resources"]["requests"]["cpu"] and api["resources"]["limits"]["memory"]
    assert api["securityContext"]["readOnlyRootFilesystem"] is True
    assert api["securityContext"]["allowPrivilegeEscalation"] is False
    assert api["securityContext"]["capabilities"]["drop"] == ["ALL"]
    secret_refs = {
        e["name"]: e["valueFrom"]["secretKeyRef"] for e in api["env"] if "valueFrom" in e
    }
    assert set(secret_refs) == {
        "USER_ORG_DATABASE_URL",
        "USER_ORG_REDIS_URL",
        "USER_ORG_MASTER_KEY",
    }
    assert {ref["name"] for ref in secret_refs.values()} == {"userorg"}

    reconciler = index[("Deployment", "userorg-reconciler")]
    assert reconciler["spec"]["replicas"] == 1
    assert _container(reconciler)["args"] == ["reconcile"]
    assert _container(reconciler)["readinessProbe"]["httpGet"]["path"] == "/readyz"

    job = index[("Job", "userorg-migrate")]
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    migrate = job["spec"]["template"]["spec"]["containers"][0]
    assert migrate["args"] == ["migrate"]
    job_env = {e["name"] for e in migrate["env"]}
    assert {"USER_ORG_MODE", "USER_ORG_DATABASE_URL"} <= job_env

    # Every command the manifests and the image run exists in the CLI.
    commands = {command.name or command.callback.__name__ for command in cli.registered_commands}
    assert {"serve", "reconcile", "migrate", "healthcheck"} <= commands

    # Every configured variable is a real setting (a typo would be silently ignored).
    config = index[("ConfigMap", "userorg")]["data"]
    fields = {f"USER_ORG_{name.upper()}" for name in Settings.model_fields}
    assert set(config) <= fields, set(config) - fields
    assert config["USER_ORG_GATEWAY_PORT"] == "8083"

    # Services select the right pods and name real container ports.
    admin_labels = admin["spec"]["template"]["metadata"]["labels"]
    reconciler_labels = reconciler["spec"]["template"]["metadata"]["labels"]
    for name, labels, target in (
        ("userorg-admin-api", admin_labels, "http"),
        ("userorg-gateway", admin_labels, "gateway"),
        ("userorg-reconciler", reconciler_labels, "http"),
    ):
        service = index[("Service", name)]
        assert _matches(service["spec"]["selector"], labels), name
        assert service["spec"]["ports"][0]["targetPort"] == target
    hpa = index[("HorizontalPodAutoscaler", "userorg-admin-api")]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "userorg-admin-api"
    pdb = index[("PodDisruptionBudget", "userorg-admin-api")]
    assert _matches(pdb["spec"]["selector"]["matchLabels"], admin_labels)

    # Prometheus scrapes admin-api and reconciler, not the gateway listener.
    monitor = index[("ServiceMonitor", "userorg")]
    scraped = {
        name
        for (kind, name), obj in index.items()
        if kind == "Service"
        and _matches(monitor["spec"]["selector"]["matchLabels"], obj["metadata"]["labels"])
    }
    assert scraped == {"userorg-admin-api", "userorg-reconciler"}

    # The gateway port admits only the API gateway; the admin port never admits it.
    policy = index[("NetworkPolicy", "userorg-admin-api")]
    assert _matches(policy["spec"]["podSelector"]["matchLabels"], admin_labels)
    rules = {rule["ports"][0]["port"]: rule["from"] for rule in policy["spec"]["ingress"]}
    assert set(rules) == {"http", "gateway"}
    gateway_peer = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "api-gateway"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "api-gateway"}},
    }
    assert rules["gateway"] == [gateway_peer]
    assert gateway_peer not in rules["http"]


@pytest.mark.parametrize(
    "values",
    [
        {"adminApi": {"autoscaling": {"enabled": False}, "replicas": 2}},
        {"gateway": {"enabled": False}},
        {"networkPolicy": {"enabled": False}, "serviceMonitor": {"enabled": False}},
        {"migrations": {"enabled": False}, "serviceAccount": {"create": False}},
        {"image": {"tag": "1.2.3"}, "imagePullSecrets": [{"name": "registry"}]},
    ],
)
def test_value_variants_render_valid_objects(values: dict[str, Any]) -> None:
    objects = render_chart(values)
    for obj in objects:
        validate(obj)
    index = by_kind(objects)
    admin = index[("Deployment", "userorg-admin-api")]
    if values.get("adminApi", {}).get("autoscaling", {}).get("enabled") is False:
        assert admin["spec"]["replicas"] == 2
        assert ("HorizontalPodAutoscaler", "userorg-admin-api") not in index
    if values.get("gateway", {}).get("enabled") is False:
        assert ("Service", "userorg-gateway") not in index
        assert [p["name"] for p in _container(admin)["ports"]] == ["http"]
        assert "USER_ORG_GATEWAY_PORT" not in index[("ConfigMap", "userorg")]["data"]
    if "image" in values:
        assert _container(admin)["image"].endswith(":1.2.3")


@pytest.mark.parametrize(
    "values",
    [
        {"adminApi": {"replicas": 0, "autoscaling": {"enabled": False}}},
        {"gateway": {"port": 70000}},
        {"config": {"LOG_LEVEL": "debug"}},
        {"secrets": {"existingSecret": "", "env": []}},
    ],
)
def test_bad_values_are_refused(values: dict[str, Any]) -> None:
    import helm_python as helm

    with pytest.raises(helm.HelmError):
        render_chart(values)
