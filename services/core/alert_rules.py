"""Prometheus alerting rules generated from the routes' service-level objectives.

The guardian (services/rollout) is what judges and acts; these rules let a platform that already
pages through Prometheus and Alertmanager see the same objectives on serving's own metrics. They
are written from `RouteObjectives` defaults (or the rollout service's configured ones) by
`tuneline infra export` to infra/prometheus/rules.yaml (compose) and to the Helm chart's
PrometheusRule (off by default); `make test` fails when either drifts from the code.

Rate objectives (errors, schema-invalid answers) use the multiwindow, multi-burn-rate alerts of
the Google SRE workbook (chapter 5, "Alerting on SLOs"): the objective is the error budget, a
fast burn (14.4x the budget over 1 h, confirmed over 5 m) pages at the objective's severity, a
slow burn (6x over 6 h, confirmed over 30 m) warns. Latency and time to first token compare the
p95 from serving's histograms with the SLA, held for 10 minutes. The refusal band and drift are
relative to what was measured at release, which Prometheus does not know: the guardian alone
judges them.
"""

from __future__ import annotations

from typing import Any

import yaml

from schemas.slo import RouteObjectives, SloAction, severity_of

REQUESTS = "tuneline_serving_requests"
REQUEST_SECONDS = "tuneline_serving_request_seconds"
FIRST_TOKEN_SECONDS = "tuneline_serving_first_token_seconds"
SCHEMA_CHECKED = "tuneline_serving_schema_checked"
REFUSALS = "tuneline_serving_refusals"

BURNS = (  # (name, burn rate, long window, short window, severity when the action is not rollback)
    ("FastBurn", 14.4, "1h", "5m", None),
    ("SlowBurn", 6.0, "6h", "30m", "warning"),
)
STABLE = 'role="stable"'


def _ratio(bad: str, total: str, window: str) -> str:
    return f"(sum by (route) (rate({bad}[{window}])) / sum by (route) (rate({total}[{window}])))"


def _burn_rules(
    name: str, objective: str, bad: str, total: str, bound: float, action: SloAction, what: str
) -> list[dict[str, Any]]:
    rules = []
    for suffix, burn, long, short, severity in BURNS:
        limit = round(burn * bound, 6)
        expr = f"{_ratio(bad, total, long)} > {limit:g}\nand\n{_ratio(bad, total, short)} > {limit:g}"
        rules.append(
            {
                "alert": f"Tuneline{name}{suffix}",
                "expr": expr,
                "for": "2m",
                "labels": {
                    "severity": severity or severity_of(action),
                    "objective": objective,
                    "action": action,
                },
                "annotations": {
                    "summary": f"{{{{ $labels.route }}}}: {what} burning the error budget {burn:g}x too fast",
                    "description": (
                        f"{what} on the production version of {{{{ $labels.route }}}} is "
                        f"{{{{ $value | humanizePercentage }}}} over {long} and {short}; the objective "
                        f"allows {bound:.4g} ({burn:g}x: the budget of 30 days gone in "
                        f"{30 / burn:.1f} days). Method: multiwindow burn rate (SRE workbook). "
                        f"The guardian's action on the route: {action}. "
                        "`tuneline routes health {{ $labels.route }}`"
                    ),
                },
            }
        )
    return rules


def _p95_rule(
    name: str, objective: str, histogram: str, limit_ms: float, action: SloAction
) -> dict[str, Any]:
    p95 = f"histogram_quantile(0.95, sum by (route, le) (rate({histogram}_bucket{{{STABLE}}}[5m])))"
    return {
        "alert": f"Tuneline{name}",
        "expr": f"{p95} > {limit_ms / 1000:g}",
        "for": "10m",
        "labels": {"severity": severity_of(action), "objective": objective, "action": action},
        "annotations": {
            "summary": f"{{{{ $labels.route }}}}: {objective.replace('_', ' ')} above {limit_ms:g} ms",
            "description": (
                f"The p95 from serving's histogram is {{{{ $value | humanizeDuration }}}} over 5 m, "
                f"for 10 m, against {limit_ms:g} ms. The guardian's action on the route: {action}. "
                "`tuneline routes health {{ $labels.route }}`"
            ),
        },
    }


def rules(objectives: RouteObjectives | None = None) -> dict[str, Any]:
    """The rule file (Prometheus' `groups:` format, also a PrometheusRule's spec)."""
    o = objectives or RouteObjectives()
    requests = f"{REQUESTS}_total{{{STABLE}}}"
    failed = f'{REQUESTS}_total{{{STABLE},status!="200"}}'
    checked = f"{SCHEMA_CHECKED}_total{{{STABLE}}}"
    invalid = f'{SCHEMA_CHECKED}_total{{{STABLE},valid="false"}}'
    group = [
        *_burn_rules(
            "ErrorBudget", "error_rate", failed, requests, o.error_rate_max, o.error_action, "the error rate"
        ),
        *_burn_rules(
            "SchemaBudget",
            "schema_valid_rate",
            invalid,
            checked,
            1 - o.schema_valid_min,
            o.schema_action,
            "the schema-invalid rate",
        ),
        _p95_rule("LatencyP95", "latency_p95", REQUEST_SECONDS, o.latency_p95_ms_max, o.latency_action),
        _p95_rule("FirstTokenP95", "ttft_p95", FIRST_TOKEN_SECONDS, o.ttft_p95_ms_max, o.ttft_action),
    ]
    return {"groups": [{"name": "tuneline-route-objectives", "rules": group}]}


def rules_yaml(objectives: RouteObjectives | None = None) -> str:
    header = (
        "# Generated by `tuneline infra export` from schemas/slo.py RouteObjectives (services/core/\n"
        "# alert_rules.py); `make test` fails when this file drifts from the code. Do not edit.\n"
    )
    return header + yaml.dump(rules(objectives), Dumper=_Dumper, sort_keys=False, width=1000)


class _Dumper(yaml.SafeDumper):
    """Multi-line expressions as literal blocks, as rule files are written by hand."""


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _text)
