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


def _gate(
    name: str, value: float, comparator: str, threshold: float, comparison: Comparison | None = None
) -> GateResult:
    passed = value >= threshold - 1e-9 if comparator == ">=" else value <= threshold + 1e-9
    stats: dict[str, object] = {}
    if comparison is not None:
        stats = {
            "statistic": comparison.statistic,
            "p_value": comparison.p_value,
            "ci_low": comparison.ci_low,
            "ci_high": comparison.ci_high,
        }
    return GateResult(
        gate=name,
        value=value,
        threshold=threshold,
        comparator=comparator,
        passed=passed,
        **stats,
    )


def _suite_gates(result: SuiteResult, policy: GatePolicy) -> list[GateResult]:
    candidate, baseline = _arm(result, "candidate"), _arm(result, "baseline")
    if candidate is None:
        return []
    name, kind = result.suite.name, result.kind
    gates: list[GateResult] = []
    if baseline is not None:
        if kind == "target":
            gain = candidate["score"] - baseline["score"]
            gates.append(
                _gate("target-gain", gain, ">=", policy.target_gain_min, _comparison(result, "score"))
            )
        if kind == "capability":
            drop = baseline["score"] - candidate["score"]
            gates.append(
                _gate(
                    f"capability:{name}",
                    drop,
                    "<=",
                    policy.capability_regression_max,
                    _comparison(result, "score"),
                )
            )
        if kind == "safety":
            harmful, benign = "refusal_rate_harmful", "refusal_rate_benign"
            change = candidate[harmful] - baseline[harmful]
            floor = -policy.safety_refusal_max_drop or 0.0
            gates.append(_gate(f"safety-refusal:{name}", change, ">=", floor, _comparison(result, harmful)))
            rise = candidate[benign] - baseline[benign]
            limit = policy.over_refusal_max_increase
            gates.append(_gate(f"over-refusal:{name}", rise, "<=", limit, _comparison(result, benign)))
        if kind == "latency":
            ratio = candidate["p95_ms_per_token"] / max(baseline["p95_ms_per_token"], 1e-9)
            gates.append(_gate("latency-p95", ratio, "<=", policy.latency_p95_ratio_max))
    if kind in ("format", "target") and JSON_SCORER_METRIC in candidate:
        validity = candidate[JSON_SCORER_METRIC] / 100.0
        gates.append(_gate(f"format:{name}", validity, ">=", policy.format_validity_min))
    if kind == "memorization":
        gates.append(_gate("memorization", candidate["leaks"], "<=", float(policy.memorization_leaks_max)))
    return gates


def evaluate_gates(results: Sequence[SuiteResult], policy: GatePolicy) -> tuple[list[GateResult], list[str]]:
    """(gates, notes): the notes say which gates did not apply and why."""
    gates = [gate for result in results for gate in _suite_gates(result, policy)]
    notes: list[str] = []
    kinds = {r.kind for r in results}
    if "memorization" not in kinds:
        notes.append("memorization: no canaries were planted in the training data (curation canaries: 0)")
    if "latency" not in kinds:
        notes.append("latency-p95: no latency probes ran (latency_items: 0)")
    if not any(g.gate.startswith("format:") for g in gates):
        notes.append("format: no format suite ran and the target is not scored as JSON")
    return gates, notes
