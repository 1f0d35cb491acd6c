"""The Helm chart, rendered by Helm's own Go library (helm-python-sdk) with each values file of
deploy/helm/tuneline/ci, and every manifest validated against the Kubernetes API schemas
(kubernetes-validate, strict: an unknown field is an error).

KEDA's ScaledObject and the Prometheus Operator's ServiceMonitor are not core Kubernetes kinds;
they are checked against the structural schemas in tests/support/helm.py, written from their APIs for the
fields this chart uses. The official NATS chart is a dependency that `helm dependency build`
downloads (charts/ is not committed): the tests marked `chart_deps` render it too, and
`make test-chart` runs them on a machine that reaches its repository.
"""

from __future__ import annotations

import re
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

from schemas.subjects import durable_name
from services.core.security.access import ADMIN_USER, service_access
from tests.support.helm import CHART, REPO, has_nats_chart, manifests, of_kind, render, validate

SERVICES = ("registry", "curation", "training", "merging", "evaluation", "rollout", "serving")
CASES = {
    "defaults": None,
    "external-nats": "external-nats-values.yaml",
    "gpu-workers": "gpu-workers-values.yaml",
    "keda": "keda-values.yaml",
}
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def env_of(deployment: dict[str, Any]) -> dict[str, Any]:
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_rendered_manifest_is_valid_kubernetes(case: str) -> None:
    docs = manifests(render(CASES[case]))
    assert len(docs) >= 15
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "ServiceAccount", "Pod"} <= kinds
    for doc in docs:
        try:
            validate(doc)
        except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as error:
            raise AssertionError(f"{case}: {doc['kind']} {doc['metadata']['name']}: {error}") from None


def test_a_manifest_with_an_unknown_field_is_refused() -> None:
    """The validation above can fail: a typo in a Deployment is caught, and in a ScaledObject."""
    deployment = of_kind(manifests(render(None)), "Deployment")["tl-tuneline-serving"]
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError, match="imagePullPolcy"):
        validate(deployment)
    [scaled, *_] = of_kind(manifests(render(CASES["keda"])), "ScaledObject").values()
    scaled["spec"]["triggers"][0]["metadata"]["lagThreshhold"] = "3"
    with pytest.raises(jsonschema.ValidationError, match="lagThreshhold"):
        validate(scaled)


def test_defaults_one_deployment_per_service_each_with_its_own_nats_user() -> None:
    docs = manifests(render(None))
    deployments = of_kind(docs, "Deployment")
    assert sorted(deployments) == sorted(f"tl-tuneline-{s}" for s in SERVICES)
    for service in SERVICES:
        deployment = deployments[f"tl-tuneline-{service}"]
        env = env_of(deployment)
        assert env["TUNELINE_NATS_URL"] == "tls://tl-nats:4222"
        assert env["TUNELINE_NATS_USER"] == service
        assert env["TUNELINE_NATS_PASSWORD"] == {"secretKeyRef": {"name": "tl-nats-users", "key": service}}
        assert env["TUNELINE_NATS_TLS_CA_FILE"] == "/etc/tuneline/nats-ca/ca.crt"
        assert env["TUNELINE_STREAM_MANAGE"] == ("true" if service == "registry" else "false")
        assert env["TUNELINE_STREAM_REPLICAS"] == "3"
        pod = deployment["spec"]["template"]["spec"]
        assert pod["containers"][0]["args"] == [service]
        assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
        assert pod["securityContext"]["runAsNonRoot"] is True
        probes = {p for p in ("startupProbe", "livenessProbe", "readinessProbe") if p in pod["containers"][0]}
        assert probes == {"startupProbe", "livenessProbe", "readinessProbe"}
        assert "nvidia.com/gpu" not in pod["containers"][0]["resources"].get("limits", {})
    serving = deployments["tl-tuneline-serving"]["spec"]["template"]["spec"]["containers"][0]
    assert serving["readinessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    # SQLite on a volume without a PostgreSQL URL: one registry, replaced not rolled
    registry = deployments["tl-tuneline-registry"]
    assert registry["spec"]["replicas"] == 1 and registry["spec"]["strategy"]["type"] == "Recreate"
    assert env_of(registry)["TUNELINE_REGISTRY_DATABASE_URL"] == "sqlite:////data/registry.db"
    # the dashboard is off until it has keys
    assert "TUNELINE_REGISTRY_HTTP_PORT" not in env_of(registry)
    ports = of_kind(docs, "Service")["tl-tuneline-registry"]["spec"]["ports"]
    assert not [p for p in ports if p["name"] == "dashboard"]
    assert "tl-tuneline-registry-data" in of_kind(docs, "PersistentVolumeClaim")
    assert of_kind(docs, "PodDisruptionBudget")["tl-tuneline-serving"]["spec"]["minAvailable"] == 1
    hpa = of_kind(docs, "HorizontalPodAutoscaler")["tl-tuneline-serving"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "tl-tuneline-serving" and "replicas" not in serving
    assert not of_kind(docs, "ScaledObject") and not of_kind(docs, "ServiceMonitor")


def test_the_chart_carries_the_same_nats_permissions_as_infra_nats() -> None:
    docs = manifests(render(None))
    auth = of_kind(docs, "ConfigMap")["tl-nats-auth"]["data"]["auth.conf"]
    assert auth.strip() == (REPO / "infra" / "nats" / "auth.conf").read_text().strip()
    users = of_kind(docs, "Secret")["tl-nats-users"]
    assert set(users["data"]) == {*service_access(), ADMIN_USER}
    assert users["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    tls = of_kind(docs, "Secret")["tl-nats-tls"]
    assert tls["type"] == "kubernetes.io/tls" and set(tls["data"]) == {"tls.crt", "tls.key", "ca.crt"}


def test_helm_test_makes_a_registry_round_trip_as_the_operator() -> None:
    [pod] = of_kind(manifests(render(None)), "Pod").values()
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    container = pod["spec"]["containers"][0]
    assert container["args"] == ["cli", "models", "list", "--json"]  # tuneline.rpc.registry.models.list
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    assert env["TUNELINE_NATS_USER"] == "operator"
    assert env["TUNELINE_NATS_PASSWORD"]["secretKeyRef"]["key"] == "operator"


def test_gpu_workers_request_gpus_and_land_on_gpu_nodes() -> None:
    deployments = of_kind(manifests(render(CASES["gpu-workers"])), "Deployment")
    for service in ("training", "evaluation", "serving"):
        pod = deployments[f"tl-tuneline-{service}"]["spec"]["template"]["spec"]
        assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
        assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    serving = env_of(deployments["tl-tuneline-serving"])
    assert serving["TUNELINE_SERVING_BACKEND"] == "vllm" and serving["TUNELINE_SERVING_DEVICE"] == "cuda"
    assert serving["TUNELINE_SERVING_API_KEYS_FILE"] == "/etc/tuneline/api-keys/api-keys.json"
    assert "nvidia.com/gpu" not in deployments["tl-tuneline-registry"]["spec"]["template"]["spec"][
        "containers"
    ][0]["resources"].get("limits", {})


def test_keda_scales_the_workers_on_their_own_consumers_lag() -> None:
    docs = manifests(render(CASES["keda"]))
    scaled = of_kind(docs, "ScaledObject")
    assert set(scaled) == {"tl-tuneline-training", "tl-tuneline-evaluation"}
    table = service_access()
    for service, scaled_object in ((s, scaled[f"tl-tuneline-{s}"]) for s in ("training", "evaluation")):
        consumers = {t["metadata"]["consumer"] for t in scaled_object["spec"]["triggers"]}
        work = {"training": {"dataset.approved"}, "evaluation": {"candidate.ready", "drift.check-requested"}}
        assert consumers == {durable_name(service, e) for e in work[service]}
        assert consumers <= {durable_name(service, e) for e in table[service].consumes}
        assert scaled_object["spec"]["triggers"][0]["metadata"]["natsServerMonitoringEndpoint"] == (
            "tl-nats.ml.svc.cluster.local:8222"
        )
    assert "tl-tuneline" in of_kind(docs, "ServiceMonitor")


def test_external_nats_uses_its_url_and_the_given_secrets_and_makes_no_nats() -> None:
    docs = manifests(render(CASES["external-nats"]))
    assert not of_kind(docs, "StatefulSet") and "tl-nats-auth" not in of_kind(docs, "ConfigMap")
    assert not of_kind(docs, "Secret")  # every secret is the operator's
    deployments = of_kind(docs, "Deployment")
    env = env_of(deployments["tl-tuneline-training"])
    assert env["TUNELINE_NATS_URL"] == "tls://nats.messaging.svc.cluster.local:4222"
    assert env["TUNELINE_NATS_PASSWORD"]["secretKeyRef"]["name"] == "tuneline-nats-users"
    assert env["AWS_ENDPOINT_URL"] == "http://minio.storage:9000"
    container = deployments["tl-tuneline-training"]["spec"]["template"]["spec"]["containers"][0]
    assert container["envFrom"] == [{"secretRef": {"name": "tuneline-s3"}}]
    registry = env_of(deployments["tl-tuneline-registry"])
    assert registry["TUNELINE_REGISTRY_DATABASE_URL"] == {
        "secretKeyRef": {"name": "tuneline-postgres", "key": "url"}
    }
    volumes = deployments["tl-tuneline-serving"]["spec"]["template"]["spec"]["volumes"]
    assert {"key": "ca.crt", "path": "ca.crt"} in next(v for v in volumes if v["name"] == "nats-ca")[
        "secret"
    ]["items"]


def test_external_nats_without_a_url_is_refused_with_the_fix() -> None:
    with pytest.raises(
        helm.HelmRenderError, match=r"externalNats.url is required when nats.enabled is false"
    ):
        render(None, nats={"enabled": False})


def test_names_are_cut_to_63_characters_for_a_long_release() -> None:
    release = "a-release-name-that-is-far-too-long-for-kubernetes-labels-x"
    rendered = render(CASES["keda"], release=release)
    docs = [d for path, ds in rendered.items() if path.startswith("tuneline/templates/") for d in ds]
    names = [d["metadata"]["name"] for d in docs]
    assert all(len(n) <= 63 and DNS_LABEL.match(n) for n in names), [n for n in names if len(n) > 63]
    deployments = of_kind(docs, "Deployment")
    assert len(deployments) == len(SERVICES)  # still distinct: the component survives the cut
    assert all(name.endswith(f"-{name.rsplit('-', 1)[1]}") for name in deployments)


def test_every_value_is_documented() -> None:
    """Each value of values.yaml has a comment right above it or above one of its enclosing blocks
    (the `services` block documents the keys every service shares)."""
    lines = (CHART / "values.yaml").read_text().splitlines()

    def indent(line: str) -> int:
        return len(line) - len(line.lstrip())

    def commented(i: int) -> bool:
        return i > 0 and lines[i - 1].strip().startswith("#")

    undocumented = []
    for i, line in enumerate(lines):
        key, colon, value = line.strip().partition(":")
        if not colon or key.startswith(("#", "-")) or not value.strip() or value.strip().startswith("&"):
            continue  # comments, list items, and block headers (their leaves are checked)
        documented, level, j = commented(i), indent(line), i
        while not documented and level > 0 and j > 0:
            j -= 1
            if lines[j].strip() and not lines[j].strip().startswith(("#", "-")) and indent(lines[j]) < level:
                level = indent(lines[j])
                documented = commented(j)
        if not documented:
            undocumented.append(f"line {i + 1}: {line.strip()}")
    assert undocumented == []


@pytest.mark.chart_deps
def test_the_nats_subchart_runs_jetstream_clustered_with_tunelines_users() -> None:
    """The official NATS chart (fetched by `make chart-deps`): JetStream on persistent volumes, a
    3-server cluster, TLS, and tuneline's auth.conf mounted with every user's password."""
    assert has_nats_chart(), "run `make chart-deps` (helm dependency build) first"
    rendered = render(None)
    docs = manifests(rendered)
    for doc in docs:
        validate(doc)
    [statefulset] = of_kind(docs, "StatefulSet").values()
    assert statefulset["spec"]["replicas"] == 3
    assert (
        statefulset["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "20Gi"
    )
    container = statefulset["spec"]["template"]["spec"]["containers"][0]
    passwords = {
        e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "PASSWORD" in e["name"]
    }
    assert passwords == {
        f"TUNELINE_NATS_PASSWORD_{u.upper()}": {"name": "tl-nats-users", "key": u}
        for u in [*service_access(), ADMIN_USER]
    }
    assert {"name": "tuneline-auth", "mountPath": "/etc/nats-config/tuneline"} in container["volumeMounts"]
    volumes = {v["name"]: v for v in statefulset["spec"]["template"]["spec"]["volumes"]}
    assert volumes["tuneline-auth"]["configMap"]["name"] == "tl-nats-auth"
    assert volumes["nats-tls"]["secret"]["secretName"] == "tl-nats-tls"
    conf = of_kind(docs, "ConfigMap")["tl-nats-config"]["data"]["nats.conf"]
    assert "include tuneline/auth.conf;" in conf and '"jetstream"' in conf and '"cluster"' in conf
    assert '"tls"' in conf


def test_the_dashboard_is_off_by_default_and_needs_keys_when_enabled() -> None:
    with pytest.raises(helm.HelmRenderError, match=r"dashboard\.keysSecret is required"):
        render(None, dashboard={"enabled": True, "port": 8090})
    docs = manifests(render(None, dashboard={"enabled": True, "port": 8090, "keysSecret": "dash-keys"}))
    registry = of_kind(docs, "Deployment")["tl-tuneline-registry"]
    env = env_of(registry)
    assert env["TUNELINE_REGISTRY_HTTP_PORT"] == "8090"
    assert env["TUNELINE_REGISTRY_DASHBOARD_KEYS_FILE"] == "/etc/tuneline/dashboard-keys/dashboard-keys.json"
    volumes = registry["spec"]["template"]["spec"]["volumes"]
    assert {"name": "dashboard-keys", "secret": {"secretName": "dash-keys"}} in volumes
    ports = of_kind(docs, "Service")["tl-tuneline-registry"]["spec"]["ports"]
    assert {"name": "dashboard", "port": 8090, "targetPort": "dashboard"} in ports
    for doc in docs:
        validate(doc)


def test_the_alerting_rules_are_off_by_default_and_the_generated_ones_when_enabled() -> None:
    assert of_kind(manifests(render(None)), "PrometheusRule") == {}
    docs = manifests(render(None, prometheusRule={"enabled": True, "labels": {"release": "kps"}}))
    rule = of_kind(docs, "PrometheusRule")["tl-tuneline"]
    validate(rule)
    assert rule["metadata"]["labels"]["release"] == "kps"
    compose_rules = yaml.safe_load((REPO / "infra" / "prometheus" / "rules.yaml").read_text())
    assert rule["spec"] == compose_rules, "the chart and compose alert on the same rules"
    assert "{{ $labels.route }}" in rule["spec"]["groups"][0]["rules"][0]["annotations"]["summary"]
