"""Render and validate deployment manifests: the real Helm engine (helm-python-sdk), the
real `kubectl kustomize`, kubernetes-validate's bundled schemas (strict), and our own strict
JSON schemas for the Prometheus Operator CRDs (no bundled schema exists for them)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CHART = DEPLOY / "helm" / "userorg"
KUSTOMIZE = DEPLOY / "kustomize"
OVERLAYS = ("development", "staging", "production")
# The chart's kubeVersion floor and the newest the validator knows.
KUBERNETES_VERSIONS = ("1.27.0", "1.37.0")
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-monitoring.coreos.com-v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule-monitoring.coreos.com-v1.json",
}


def documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def render_chart(values: dict[str, Any] | None = None, **kwargs: Any) -> list[dict[str, Any]]:
    import helm_python as helm

    chart = helm.Chart.load(str(CHART))
    rendered = chart.render(
        values or {}, name="userorg", namespace="identity", is_install=True, **kwargs
    )
    objects = []
    for path, text in sorted(rendered.items()):
        if path.endswith(".yaml"):
            objects += documents(text)
    return objects


def kustomize(overlay: str) -> list[dict[str, Any]]:
    kubectl = Path(sys.executable).parent / "kubectl"
    result = subprocess.run(
        [str(kubectl), "kustomize", str(KUSTOMIZE / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return documents(result.stdout)


def validate(obj: dict[str, Any]) -> None:
    """Raise when the object does not match its schema (strict: unknown fields fail)."""
    crd = CRD_SCHEMAS.get((obj["apiVersion"], obj["kind"]))
    if crd is not None:
        schema = json.loads((DEPLOY / "schemas" / crd).read_text())
        jsonschema.Draft202012Validator(schema).validate(obj)
        return
    for version in KUBERNETES_VERSIONS:
        kubernetes_validate.validate(obj, version, strict=True)


def by_kind(objects: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(obj["kind"], obj["metadata"]["name"]): obj for obj in objects}
