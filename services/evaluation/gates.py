"""Release gates: the policy applied to suite results. Pure function of the results and the policy.

A comparative gate is a hypothesis test on the paired per-item outcomes of the candidate and its
reference (the base model; for a quantized version or a combination, its parent), computed with
the comparison (`comparisons.compare`, which asks `test_spec` here what to test):

- "no worse than" (capability, quant tail, safety refusal, over-refusal, a parent's task) is
  non-inferiority: the gate's value is the one-sided (1 − α) upper bound of the loss, in points,
  and it passes when that bound is within the margin;
- "better than" (target gain) is superiority: the value is the lower bound of the gain.

A gate whose suite is too small to see its margin (`underpowered`) fails unless the policy
accepts underpowered gates. Memorization (a count of reproduced canaries) and latency (a ratio of
measured percentiles) are not sampled decisions and carry no test. A gate only exists where its
suite ran; the notes say which did not apply.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from schemas.evaluation import Comparison, GateResult, SuiteResult
from schemas.gate_policy import GatePolicy

JSON_SCORER_METRIC = "valid_rate"
CATEGORY = "accuracy:"


@dataclass(frozen=True)
class TestSpec:
    hypothesis: Literal["non-inferiority", "superiority"]
    margin: float  # points


def _no_worse(margin: float) -> TestSpec:
    return TestSpec("non-inferiority", margin)


def test_spec(kind: str, metric: str, reference: str, policy: GatePolicy) -> TestSpec | None:
    """The test a gate runs on this comparison, or None when no gate reads it."""
    if reference == "few-shot":
        return None
    if kind == "target" and metric == "score":
        if reference == "parent":
            return _no_worse(policy.parent_task_max_drop)
        gain = policy.target_gain_min
        return TestSpec("superiority", gain) if gain >= 0 else _no_worse(-gain)
    if reference == "production":
        return None
    if kind in ("capability", "quant-tail") and (metric == "score" or metric.startswith(CATEGORY)):
        margin = policy.capability_regression_max if kind == "capability" else policy.quant_tail_max_drop
        return _no_worse(margin)
    if kind == "safety" and metric == "refusal_rate_harmful":
        return _no_worse(policy.safety_refusal_max_drop)
    if kind == "safety" and metric == "answer_rate_benign":
        return _no_worse(policy.over_refusal_max_increase)
    return None


def _arm(result: SuiteResult, arm: str) -> dict[str, float] | None:
    return next((s.metrics for s in result.scores if s.arm == arm), None)


def _threshold_gate(name: str, value: float, comparator: str, threshold: float) -> GateResult:
    """A count or ratio gate: measured, not sampled from a population of items."""
    passed = value >= threshold - 1e-9 if comparator == ">=" else value <= threshold + 1e-9
    return GateResult(gate=name, value=value, threshold=threshold, comparator=comparator, passed=passed)


def tested_gate(name: str, comparison: Comparison, policy: GatePolicy) -> GateResult:
    """A comparative gate from its comparison's test."""
    test = comparison.test
    assert test is not None
    noninferiority = test.hypothesis == "non-inferiority"
    reference: str = "base"
    if comparison.reference != "baseline":
        reference = f"{comparison.reference} {comparison.reference_version or ''}".strip()
    return GateResult(
        gate=name,
        value=-test.bound if noninferiority else test.bound,
        threshold=test.margin,
        comparator="<=" if noninferiority else ">=",
        statistic=test.method,
        p_value=test.p_value,
        ci_low=comparison.ci_low,
        ci_high=comparison.ci_high,
        reference=reference,
        test=test,
        underpowered=test.underpowered,
        passed=test.rejected and (policy.accept_underpowered or not test.underpowered),
    )


def _gate_name(result: SuiteResult, comparison: Comparison) -> str | None:
    name, kind, metric = result.suite.name, result.kind, comparison.metric
    if kind == "target":
        return f"parent-task:{name}" if comparison.reference == "parent" else "target-gain"
    if kind == "safety":
        return f"{'safety-refusal' if metric == 'refusal_rate_harmful' else 'over-refusal'}:{name}"
    if kind in ("capability", "quant-tail"):
        categories = any(c.metric.startswith(CATEGORY) for c in result.comparisons)
        if metric.startswith(CATEGORY):
            return f"{kind}:{name}:{metric.removeprefix(CATEGORY)}"
        return None if categories else f"{kind}:{name}"
    return None


def _comparative_gates(result: SuiteResult, policy: GatePolicy) -> list[GateResult]:
    """Against the parent when the suite has a parent arm, else against the base."""
    reference = "parent" if _arm(result, "parent") is not None else "baseline"
    gates = []
    for comparison in result.comparisons:
        if comparison.test is None or comparison.reference != reference:
            continue
        name = _gate_name(result, comparison)
        if name is not None:
            gates.append(tested_gate(name, comparison, policy))
    return gates


def _suite_gates(result: SuiteResult, policy: GatePolicy) -> list[GateResult]:
    candidate, baseline = _arm(result, "candidate"), _arm(result, "baseline")
    if candidate is None:
        return []
    gates = _comparative_gates(result, policy)
    kind = result.kind
    if kind == "latency" and baseline is not None:
        ratio = candidate["p95_ms_per_token"] / max(baseline["p95_ms_per_token"], 1e-9)
        gates.append(_threshold_gate("latency-p95", ratio, "<=", policy.latency_p95_ratio_max))
    if kind in ("format", "target") and JSON_SCORER_METRIC in candidate:
        validity = candidate[JSON_SCORER_METRIC] / 100.0
        minimum = policy.format_validity_min
        gates.append(_threshold_gate(f"format:{result.suite.name}", validity, ">=", minimum))
    if kind == "memorization":
        leaks = candidate["leaks"]
        gates.append(_threshold_gate("memorization", leaks, "<=", float(policy.memorization_leaks_max)))
    return gates


def evaluate_gates(results: Sequence[SuiteResult], policy: GatePolicy) -> tuple[list[GateResult], list[str]]:
    """(gates, notes): the notes say which gates did not apply, and which passed underpowered."""
    gates = [gate for result in results for gate in _suite_gates(result, policy)]
    notes: list[str] = []
    kinds = {r.kind for r in results}
    if "memorization" not in kinds:
        notes.append("memorization: no canaries were planted in the training data (curation canaries: 0)")
    if "latency" not in kinds:
        notes.append("latency-p95: no latency probes ran (latency_items: 0)")
    if not any(g.gate.startswith("format:") for g in gates):
        notes.append("format: no format suite ran and the target is not scored as JSON")
    for gate in gates:
        if gate.test is not None and gate.underpowered:
            verdict = "accepted by the policy" if policy.accept_underpowered else "blocks promotion"
            notes.append(
                f"{gate.gate}: underpowered ({gate.test.n} items detect {gate.test.mde:.1f} points at "
                f"80 % power, the margin is {gate.test.margin:g}): {verdict}"
            )
    return gates, notes
