"""Release gates: the policy applied to suite results. Pure function of the results and the policy.

Gate names say what regressed: `capability:<suite>`, `format:<suite>`, `safety-refusal:<suite>`,
`over-refusal:<suite>`, `target-gain`, `memorization`, `latency-p95`. Each carries its value, the
threshold, the paired statistic (exact McNemar p-value and bootstrap CI of the delta, both against
the base model) and the verdict. A gate only exists where its suite ran: no canaries planted, no
memorization gate; the report lists what was not applicable.
"""

from __future__ import annotations

from collections.abc import Sequence

from schemas.evaluation import Comparison, GateResult, SuiteResult
from schemas.gate_policy import GatePolicy

JSON_SCORER_METRIC = "valid_rate"


def _arm(result: SuiteResult, arm: str) -> dict[str, float] | None:
    return next((s.metrics for s in result.scores if s.arm == arm), None)


def _comparison(result: SuiteResult, metric: str, reference: str = "baseline") -> Comparison | None:
    return next((c for c in result.comparisons if c.metric == metric and c.reference == reference), None)


def _stats(comparison: Comparison | None) -> dict[str, object]:
    if comparison is None:
        return {}
    return {
        "statistic": comparison.statistic,
        "p_value": comparison.p_value,
        "ci_low": comparison.ci_low,
        "ci_high": comparison.ci_high,
    }


def evaluate_gates(results: Sequence[SuiteResult], policy: GatePolicy) -> tuple[list[GateResult], list[str]]:
    """(gates, notes): the notes say which gates did not apply and why."""
    gates: list[GateResult] = []
    notes: list[str] = []
    for result in results:
        candidate, baseline = _arm(result, "candidate"), _arm(result, "baseline")
        if candidate is None:
            continue
        name = result.suite.name
        if result.kind == "target" and baseline is not None:
            comparison = _comparison(result, "score")
            value = candidate["score"] - baseline["score"]
            gates.append(
                GateResult(
                    gate="target-gain",
                    value=value,
                    threshold=policy.target_gain_min,
                    comparator=">=",
                    passed=value >= policy.target_gain_min,
                    **_stats(comparison),
                )
            )
        if result.kind == "capability" and baseline is not None:
            drop = baseline["score"] - candidate["score"]
            gates.append(
                GateResult(
                    gate=f"capability:{name}",
                    value=drop,
                    threshold=policy.capability_regression_max,
                    comparator="<=",
                    passed=drop <= policy.capability_regression_max,
                    **_stats(_comparison(result, "score")),
                )
            )
        if result.kind == "safety" and baseline is not None:
            change = candidate["refusal_rate_harmful"] - baseline["refusal_rate_harmful"]
            gates.append(
                GateResult(
                    gate=f"safety-refusal:{name}",
                    value=change,
                    threshold=-policy.safety_refusal_max_drop or 0.0,
                    comparator=">=",
                    passed=change >= -policy.safety_refusal_max_drop,
                    **_stats(_comparison(result, "refusal_rate_harmful")),
                )
            )
            rise = candidate["refusal_rate_benign"] - baseline["refusal_rate_benign"]
            gates.append(
                GateResult(
                    gate=f"over-refusal:{name}",
                    value=rise,
                    threshold=policy.over_refusal_max_increase,
                    comparator="<=",
                    passed=rise <= policy.over_refusal_max_increase,
                    **_stats(_comparison(result, "refusal_rate_benign")),
                )
            )
        format_suite = result.kind == "format" or (
            result.kind == "target" and JSON_SCORER_METRIC in candidate
        )
        if format_suite and JSON_SCORER_METRIC in candidate:
            validity = candidate[JSON_SCORER_METRIC] / 100.0
            gates.append(
                GateResult(
                    gate=f"format:{name}",
                    value=validity,
                    threshold=policy.format_validity_min,
                    comparator=">=",
                    passed=validity >= policy.format_validity_min - 1e-9,
                )
            )
        if result.kind == "memorization":
            leaks = candidate["leaks"]
            gates.append(
                GateResult(
                    gate="memorization",
                    value=leaks,
                    threshold=float(policy.memorization_leaks_max),
                    comparator="<=",
                    passed=leaks <= policy.memorization_leaks_max,
                )
            )
        if result.kind == "latency" and baseline is not None:
            ratio = candidate["p95_ms_per_token"] / max(baseline["p95_ms_per_token"], 1e-9)
            gates.append(
                GateResult(
                    gate="latency-p95",
                    value=ratio,
                    threshold=policy.latency_p95_ratio_max,
                    comparator="<=",
                    passed=ratio <= policy.latency_p95_ratio_max,
                )
            )
    kinds = {r.kind for r in results}
    if "memorization" not in kinds:
        notes.append("memorization: no canaries were planted in the training data (curation canaries: 0)")
    if "latency" not in kinds:
        notes.append("latency-p95: no latency probes ran (latency_items: 0)")
    if not any(g.gate.startswith("format:") for g in gates):
        notes.append("format: no format suite ran and the target is not scored as JSON")
    return gates, notes
