"""Render tuneline's Helm chart with Helm's own Go library (helm-python-sdk) and validate each
manifest against the Kubernetes API schemas (kubernetes-validate, strict) or, for KEDA's
ScaledObject and the Prometheus Operator's ServiceMonitor, the structural schemas below."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import yaml

CHART = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "tuneline"
REPO = CHART.parents[2]
KUBE_VERSION = "1.30.0"

_string_map = {"type": "object", "additionalProperties": {"type": "string"}}
_metadata = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": {"type": "string"}, "labels": _string_map, "annotations": _string_map},
}
_duration = {"type": "string", "pattern": r"^\d+[smh]$"}


def _list_of(required: list[str], properties: dict[str, Any]) -> dict[str, Any]:
    item = {"type": "object", "additionalProperties": False, "properties": properties}
    return {"type": "array", "items": {**item, "required": required} if required else item}


def _monitoring(required: list[str], spec: dict[str, Any]) -> dict[str, Any]:
    """A Prometheus Operator resource: metadata and a closed spec."""
    closed = {"type": "object", "additionalProperties": False, "required": required, "properties": spec}
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {"metadata": _metadata, "spec": closed},
    }


CRD_SCHEMAS: dict[tuple[str, str], dict[str, Any]] = {
    # https://keda.sh/docs/latest/reference/scaledobject-spec/ and the nats-jetstream scaler
    ("keda.sh/v1alpha1", "ScaledObject"): {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "keda.sh/v1alpha1"},
            "kind": {"const": "ScaledObject"},
            "metadata": _metadata,
            "spec": {
                "type": "object",
                "additionalProperties": False,
                "required": ["scaleTargetRef", "triggers"],
                "properties": {
                    "scaleTargetRef": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {"name": {"type": "string"}, "kind": {"type": "string"}},
                    },
                    "minReplicaCount": {"type": "integer", "minimum": 0},
                    "maxReplicaCount": {"type": "integer", "minimum": 1},
                    "cooldownPeriod": {"type": "integer", "minimum": 0},
                    "pollingInterval": {"type": "integer", "minimum": 1},
                    "triggers": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["type", "metadata"],
                            "properties": {
                                "type": {"const": "nats-jetstream"},
                                "metadata": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": [
                                        "natsServerMonitoringEndpoint",
                                        "account",
                                        "stream",
                                        "consumer",
                                    ],
                                    "properties": {
                                        key: {"type": "string"}
                                        for key in (
                                            "natsServerMonitoringEndpoint",
                                            "account",
                                            "stream",
                                            "consumer",
                                            "lagThreshold",
                                            "activationLagThreshold",
                                            "useHttps",
                                        )
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
    # https://prometheus-operator.dev/docs/api-reference/api/#monitoring.coreos.com/v1.PrometheusRule
    ("monitoring.coreos.com/v1", "PrometheusRule"): _monitoring(
        ["groups"],
        {
            "groups": _list_of(
                ["name", "rules"],
                {
                    "name": {"type": "string"},
                    "interval": {"type": "string"},
                    "rules": _list_of(
                        ["expr"],
                        {
                            "alert": {"type": "string"},
                            "record": {"type": "string"},
                            "expr": {"type": "string"},
                            "for": _duration,
                            "labels": _string_map,
                            "annotations": _string_map,
                        },
                    ),
                },
            )
        },
    ),
    # https://prometheus-operator.dev/docs/api-reference/api/#monitoring.coreos.com/v1.ServiceMonitor
    ("monitoring.coreos.com/v1", "ServiceMonitor"): _monitoring(
        ["selector", "endpoints"],
        {
            "selector": {"type": "object", "properties": {"matchLabels": _string_map}},
            "endpoints": _list_of(
                [], {"port": {"type": "string"}, "path": {"type": "string"}, "interval": _duration}
            ),
        },
    ),
}


def has_nats_chart() -> bool:
    return any((CHART / "charts").glob("nats-*.tgz")) or (CHART / "charts" / "nats").is_dir()


def render(case: str | None, release: str = "tl", **overrides: Any) -> dict[str, list[dict[str, Any]]]:
    """Template path → its manifests (NOTES.txt left out)."""
    values: dict[str, Any] = {}
    if case is not None:
        values = yaml.safe_load((CHART / "ci" / case).read_text())
    for key, value in overrides.items():
        values[key] = value
    chart = helm.Chart.load(str(CHART))
    chart.validate_schema(values)
    rendered = chart.render(values, name=release, namespace="ml", is_install=True)
    return {
        path: [doc for doc in yaml.safe_load_all(text) if doc]
        for path, text in rendered.items()
        if not path.endswith("NOTES.txt")
    }


def manifests(rendered: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [doc for docs in rendered.values() for doc in docs]


def of_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def validate(doc: dict[str, Any]) -> None:
    schema = CRD_SCHEMAS.get((doc["apiVersion"], doc["kind"]))
    if schema is not None:
        jsonschema.validate(doc, schema)
    else:
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
