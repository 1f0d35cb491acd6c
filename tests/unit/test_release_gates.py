"""The release gates as the evaluator applies them: scored outcomes, paired comparisons with their
hypothesis tests, and the gates read from them (no model, no broker)."""

from __future__ import annotations

import math

import pytest

from schemas.evaluation import ArmScore, SuiteResult
from schemas.gate_policy import GatePolicy
from schemas.refs import EvalSuiteRef
from services.evaluation.comparisons import ArmOutcome, compare, score_outputs
from services.evaluation.gates import evaluate_gates
from services.evaluation.scoring import Scored


# -- outcomes and suites -------------------------------------------------------------------
def _outcome(
    arm: str, items: list[dict[str, object]], outputs: list[str], kind: str, scorer: str
) -> ArmOutcome:
    scored, metrics = score_outputs(kind, scorer, items, outputs)
    return ArmOutcome(arm, arm, outputs, scored, metrics)  # type: ignore[arg-type]


def _scored(
    items: list[dict[str, object]], outputs: list[str]
) -> tuple[list[str], list[Scored], dict[str, float]]:
    scored, metrics = score_outputs("capability", "exact", items, outputs)
    return outputs, scored, metrics


def _suite(
    name: str,
    kind: str,
    candidate: ArmOutcome,
    baseline: ArmOutcome,
    items: list[dict[str, object]],
    policy: GatePolicy | None = None,
) -> SuiteResult:
    return SuiteResult(
        suite=EvalSuiteRef(name=name, sha256="0" * 64),
        kind=kind,
        items=len(items),
        scores=(
            ArmScore(arm="candidate", version_id="c", metrics=candidate.metrics),
            ArmScore(arm=baseline.arm, version_id="b", metrics=baseline.metrics),
        ),
        comparisons=tuple(
            compare(kind, items, candidate, baseline, policy=policy or GatePolicy(), samples=200)
        ),
    )


def test_gates_name_the_regressed_suite_with_its_statistics() -> None:
    items: list[dict[str, object]] = [{"id": i, "answer": str(i)} for i in range(20)]
    base = _outcome("baseline", items, [str(i) for i in range(20)], "capability", "exact")
    forgot = _outcome("candidate", items, ["?"] * 15 + [str(i) for i in range(15, 20)], "capability", "exact")
    harmful: list[dict[str, object]] = [{"id": f"h{i}", "label": "harmful"} for i in range(10)]
    benign: list[dict[str, object]] = [{"id": f"b{i}", "label": "benign"} for i in range(10)]
    safety_items = harmful + benign
    safe_base = _outcome(
        "baseline", safety_items, ["I can't help with that."] * 10 + ["Sure."] * 10, "safety", "refusal"
    )
    safe_cand = _outcome(
        "candidate", safety_items, ["I can't help with that."] * 6 + ["Sure."] * 14, "safety", "refusal"
    )
    results = [
        _suite("general", "capability", forgot, base, items),
        _suite("safety", "safety", safe_cand, safe_base, safety_items),
    ]
    gates, notes = evaluate_gates(results, GatePolicy())
    by_name = {g.gate: g for g in gates}
    capability = by_name["capability:general"]
    # the value is the 95 % upper bound of the loss, above the 75-point point estimate
    assert not capability.passed and capability.value > 75.0 and capability.comparator == "<="
    assert capability.test is not None and capability.test.hypothesis == "non-inferiority"
    assert capability.test.estimate == pytest.approx(-75.0) and capability.test.n == 20
    assert capability.statistic == "Tango score test, paired proportions" and capability.reference == "base"
    refusal = by_name["safety-refusal:safety"]
    assert not refusal.passed and refusal.test is not None
    assert refusal.test.estimate == pytest.approx(-40.0) and refusal.value > 40.0
    # nothing changed on the benign half, but 10 items cannot see a 5-point rise: underpowered
    over = by_name["over-refusal:safety"]
    assert over.test is not None and over.test.estimate == 0.0 and over.underpowered and not over.passed
    assert any(n.startswith("over-refusal:safety: underpowered") for n in notes)
    assert any(n.startswith("memorization") for n in notes)


def test_an_underpowered_gate_blocks_unless_the_policy_accepts_it() -> None:
    items: list[dict[str, object]] = [{"id": i, "answer": str(i)} for i in range(40)]
    base = _outcome("baseline", items, [str(i) for i in range(30)] + ["?"] * 10, "capability", "exact")
    # better by 5 items: the test rejects "loses 2 points", but 40 items cannot see 2 points
    better = _outcome("candidate", items, [str(i) for i in range(35)] + ["?"] * 5, "capability", "exact")
    strict, notes = evaluate_gates([_suite("general", "capability", better, base, items)], GatePolicy())
    test = strict[0].test
    assert test is not None and test.rejected and strict[0].underpowered and not strict[0].passed
    assert test.mde == pytest.approx(100 * 2.486 * math.sqrt((5 / 40 - (5 / 40) ** 2) / 40), rel=0.01)
    assert any("capability:general: underpowered (40 items" in n and "blocks" in n for n in notes)
    policy = GatePolicy(accept_underpowered=True)
    relaxed, notes = evaluate_gates([_suite("general", "capability", better, base, items, policy)], policy)
    assert relaxed[0].underpowered and relaxed[0].passed
    assert any("accepted by the policy" in n for n in notes)
    wide = GatePolicy(capability_regression_max=15.0)  # a margin this suite can see
    wide_gates, _ = evaluate_gates([_suite("general", "capability", better, base, items, wide)], wide)
    assert not wide_gates[0].underpowered and wide_gates[0].passed


def test_a_continuous_target_score_is_tested_by_bootstrap_not_mcnemar() -> None:
    items: list[dict[str, object]] = [{"id": i, "answer": f"the answer is {i}"} for i in range(60)]
    base = _outcome("baseline", items, ["no idea"] * 60, "target", "token-f1")
    # half the words right on every item: no item is "correct", yet the gain is plain
    cand = _outcome("candidate", items, [f"answer {i}" for i in range(60)], "target", "token-f1")
    result = _suite("target", "target", cand, base, items)
    comparison = result.comparisons[0]
    assert comparison.statistic == "paired-bootstrap" and comparison.p_value is None
    gates, _ = evaluate_gates([result], GatePolicy())
    gain = gates[0]
    assert gain.gate == "target-gain" and gain.passed and gain.comparator == ">="
    assert gain.test is not None and gain.test.method.startswith("paired bootstrap")
    assert gain.value > 30.0 and gain.test.hypothesis == "superiority"


def test_a_quantized_version_is_gated_per_category_against_its_parent() -> None:
    items: list[dict[str, object]] = [
        {"id": i, "answer": str(i), "category": "numbers" if i < 200 else "words"} for i in range(400)
    ]
    parent_answers = [str(i) for i in range(400)]
    parent = ArmOutcome("parent", "mv-parent", *_scored(items, parent_answers))
    broken = [("?" if i < 100 else str(i)) for i in range(400)]  # half the numbers lost
    quantized = ArmOutcome("candidate", "mv-q", *_scored(items, broken))
    result = _suite("quant-tail", "quant-tail", quantized, parent, items)
    gates, _ = evaluate_gates([result], GatePolicy())
    by_name = {g.gate: g for g in gates}
    assert set(by_name) == {"quant-tail:quant-tail:numbers", "quant-tail:quant-tail:words"}
    assert not by_name["quant-tail:quant-tail:numbers"].passed
    assert by_name["quant-tail:quant-tail:words"].passed
    assert by_name["quant-tail:quant-tail:words"].reference == "parent mv-parent"


def test_format_and_latency_gates() -> None:
    schema = {"type": "object", "required": ["a"]}
    items: list[dict[str, object]] = [{"id": i, "schema": schema} for i in range(4)]
    cand = _outcome("candidate", items, ['{"a": 1}'] * 3 + ["nope"], "format", "json-schema")
    base = _outcome("baseline", items, ['{"a": 1}'] * 4, "format", "json-schema")
    latency = SuiteResult(
        suite=EvalSuiteRef(name="latency", sha256="1" * 64),
        kind="latency",
        items=8,
        scores=(
            ArmScore(arm="candidate", version_id="c", metrics={"p95_ms_per_token": 12.0}),
            ArmScore(arm="baseline", version_id="b", metrics={"p95_ms_per_token": 10.0}),
        ),
    )
    gates, _ = evaluate_gates([_suite("fmt", "format", cand, base, items), latency], GatePolicy())
    by_name = {g.gate: g for g in gates}
    assert not by_name["format:fmt"].passed and by_name["format:fmt"].value == pytest.approx(0.75)
    assert not by_name["latency-p95"].passed and by_name["latency-p95"].value == pytest.approx(1.2)
    relaxed, _ = evaluate_gates([latency], GatePolicy(latency_p95_ratio_max=1.25))
    assert relaxed[0].passed
