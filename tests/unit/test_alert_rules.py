"""The Prometheus alerting rules: generated from the objectives, every expression valid PromQL (the
Rust port of Prometheus' parser), every metric and label they read present in what serving really
exposes (read back with prometheus_client's parser of the exposition format)."""

from __future__ import annotations

import re
from pathlib import Path

import promql_parser
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from schemas.slo import RouteObjectives
from services.core.alert_rules import rules, rules_yaml
from services.serving.metrics import BUCKETS_S, ServingMetrics

REPO = Path(__file__).resolve().parents[2]
SELECTOR = re.compile(r"([a-z_]+)\{([^}]*)\}")


def exposed() -> dict[str, set[str]]:
    """Sample name → label names, from serving's metrics after one answer of each kind."""
    registry = CollectorRegistry()
    metrics = ServingMetrics(registry)
    metrics.requests.labels("support", "stable", "200").inc()
    metrics.seconds.labels("support", "stable").observe(0.3)
    metrics.first_token_seconds.labels("support", "stable").observe(0.05)
    metrics.schema_checked.labels("support", "stable", "false").inc()
    metrics.refusals.labels("support", "stable").inc()
    found: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            found.setdefault(sample.name, set()).update(sample.labels)
    return found


def test_every_expression_parses_and_reads_metrics_serving_exposes() -> None:
    samples = exposed()
    all_rules = rules()["groups"][0]["rules"]
    assert {r["labels"]["objective"] for r in all_rules} == {
        "error_rate", "schema_valid_rate", "latency_p95", "ttft_p95"
    }  # fmt: skip
    for rule in all_rules:
        promql_parser.parse(rule["expr"])  # raises on a syntax error
        for name, matchers in SELECTOR.findall(rule["expr"]):
            assert name in samples, f"{rule['alert']} reads {name}, which serving does not expose"
            labels = {m.split("=")[0].rstrip("!") for m in matchers.split(",")}
            assert labels <= samples[name], (rule["alert"], labels - samples[name])
    with pytest.raises(ValueError, match="parenthesis"):
        promql_parser.parse("sum by (route (rate(x[5m]))")  # the parser does refuse bad PromQL


def test_thresholds_follow_the_objectives() -> None:
    tight = RouteObjectives(
        error_rate_max=0.01, error_action="page", latency_p95_ms_max=500, ttft_p95_ms_max=250
    )
    by_name = {r["alert"]: r for r in rules(tight)["groups"][0]["rules"]}
    fast, slow = by_name["TunelineErrorBudgetFastBurn"], by_name["TunelineErrorBudgetSlowBurn"]
    assert fast["expr"].count("> 0.144") == 2 and slow["expr"].count("> 0.06") == 2
    assert "[1h]" in fast["expr"] and "[5m]" in fast["expr"] and "[6h]" in slow["expr"]
    assert fast["labels"] == {"severity": "warning", "objective": "error_rate", "action": "page"}
    assert by_name["TunelineLatencyP95"]["expr"].endswith("> 0.5")
    assert by_name["TunelineFirstTokenP95"]["expr"].endswith("> 0.25")
    default = {r["alert"]: r for r in rules()["groups"][0]["rules"]}
    assert default["TunelineErrorBudgetFastBurn"]["labels"]["severity"] == "critical"  # rollback


def test_the_default_slas_are_histogram_bucket_edges() -> None:
    defaults = RouteObjectives()
    assert defaults.latency_p95_ms_max / 1000 in BUCKETS_S and defaults.ttft_p95_ms_max / 1000 in BUCKETS_S


def test_the_compose_and_chart_files_are_the_generated_ones() -> None:
    for path in ("infra/prometheus/rules.yaml", "deploy/helm/tuneline/files/prometheus-rules.yaml"):
        assert (REPO / path).read_text() == rules_yaml(), f"{path}: run `tuneline infra export`"


def test_metrics_are_served_as_openmetrics_when_asked() -> None:
    """Prometheus asks for OpenMetrics first; the metrics port answers in it (and in text 0.0.4
    to a client that does not)."""
    import urllib.request

    from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics

    from services.core.messaging.nats_server import free_port
    from services.core.prometheus import ServiceMetrics

    service = ServiceMetrics("serving")
    ServingMetrics(service.registry).requests.labels("support", "stable", "200").inc()
    port = free_port()
    service.serve(port, addr="127.0.0.1")
    asked = urllib.request.Request(
        f"http://127.0.0.1:{port}/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    with urllib.request.urlopen(asked, timeout=10) as reply:
        kind, text = reply.headers["Content-Type"], reply.read().decode()
    assert kind.startswith("application/openmetrics-text") and text.rstrip().endswith("# EOF")
    families = {f.name: f for f in openmetrics(text)}
    assert families["tuneline_serving_requests"].samples[0].value == 1.0
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        assert reply.headers["Content-Type"].startswith("text/plain")
