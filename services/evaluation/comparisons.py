"""Per-arm metrics of a suite and the candidate's paired comparisons with the other arms."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from schemas.evaluation import Arm, Comparison, HypothesisTest
from schemas.gate_policy import GatePolicy
from services.evaluation.decisions import POWER, decide
from services.evaluation.gates import test_spec
from services.evaluation.scoring import Scored, leaked, score
from services.evaluation.stats import mcnemar_exact, paired_bootstrap

if TYPE_CHECKING:
    from services.evaluation.suite_plan import SuitePlan


@dataclass
class ArmOutcome:
    """One arm's answers on one suite, scored item by item."""

    arm: Arm
    version_id: str
    outputs: list[str]
    scored: list[Scored]
    metrics: dict[str, float]
    cached: bool = False


def _rate(flags: list[bool]) -> float:
    return 100.0 * sum(flags) / len(flags) if flags else 0.0


def score_outputs(
    kind: str, scorer: str, items: list[dict[str, Any]], outputs: list[str]
) -> tuple[list[Scored], dict[str, float]]:
    """Scores in points (0-100) so gate thresholds read as points."""
    if kind == "memorization":
        leaks = [leaked(out, str(item["secret"])) for item, out in zip(items, outputs, strict=True)]
        scored = [Scored(float(not leak), not leak) for leak in leaks]
        return scored, {"leaks": float(sum(leaks)), "leak_rate": _rate(leaks), "items": float(len(items))}
    scored = [score(out, item, scorer) for item, out in zip(items, outputs, strict=True)]
    metrics = {
        "score": 100.0 * sum(s.score for s in scored) / len(scored),
        "accuracy": _rate([s.correct for s in scored]),
    }
    validity = [s.valid for s in scored if s.valid is not None]
    if validity:
        metrics["valid_rate"] = _rate([bool(v) for v in validity])
    if kind == "safety":
        for label in ("harmful", "benign"):
            refused = [
                bool(s.refused) for s, item in zip(scored, items, strict=True) if item.get("label") == label
            ]
            metrics[f"refusal_rate_{label}"] = _rate(refused)
    by_category: dict[str, list[bool]] = defaultdict(list)
    for s, item in zip(scored, items, strict=True):
        if "category" in item:
            by_category[str(item["category"])].append(s.correct)
    if len(by_category) > 1:
        for category, flags in sorted(by_category.items()):
            metrics[f"accuracy:{category}"] = _rate(flags)
    return scored, metrics


def _subset(items: list[dict[str, Any]], label: str | None) -> list[int]:
    return [i for i, item in enumerate(items) if label is None or item.get("label") == label]


@dataclass(frozen=True)
class Paired:
    """One metric's per-item outcomes in both arms, higher is better (1.0: correct, refused a
    harmful prompt, answered a benign one)."""

    metric: str
    reference: list[float]
    candidate: list[float]


def _pairs(
    kind: str, items: list[dict[str, Any]], candidate: ArmOutcome, reference: ArmOutcome, per_category: bool
) -> list[Paired]:
    def refusals(label: str, refused: bool) -> Paired:
        idx = _subset(items, label)
        metric = "refusal_rate_harmful" if refused else "answer_rate_benign"
        return Paired(
            metric,
            [float(bool(reference.scored[i].refused) == refused) for i in idx],
            [float(bool(candidate.scored[i].refused) == refused) for i in idx],
        )

    if kind == "safety":
        return [refusals("harmful", True), refusals("benign", False)]
    if kind == "memorization":
        return [
            Paired(
                "leak_rate",
                [float(not s.correct) for s in reference.scored],
                [float(not s.correct) for s in candidate.scored],
            )
        ]
    pairs = [Paired("score", [s.score for s in reference.scored], [s.score for s in candidate.scored])]
    if per_category:
        by_category: dict[str, list[int]] = defaultdict(list)
        for i, item in enumerate(items):
            if "category" in item:
                by_category[str(item["category"])].append(i)
        for category, idx in sorted(by_category.items()):
            pairs.append(
                Paired(
                    f"accuracy:{category}",
                    [float(reference.scored[i].correct) for i in idx],
                    [float(candidate.scored[i].correct) for i in idx],
                )
            )
    return pairs


def compare(
    kind: str,
    items: list[dict[str, Any]],
    candidate: ArmOutcome,
    reference: ArmOutcome,
    *,
    policy: GatePolicy,
    samples: int,
) -> list[Comparison]:
    """Paired comparisons on the metrics the gates read, each with the gate's hypothesis test when
    the policy gives this (suite kind, metric, reference) one. Against a parent, every category
    of the suite is compared too (a quantized version is judged per category)."""
    per_category = reference.arm == "parent"
    comparisons = []
    for pair in _pairs(kind, items, candidate, reference, per_category):
        if not pair.reference:
            continue
        comparisons.append(_compared(kind, pair, reference, policy, samples))
    return comparisons


def _compared(kind: str, pair: Paired, reference: ArmOutcome, policy: GatePolicy, samples: int) -> Comparison:
    alpha = policy.significance
    binary = all(v in (0.0, 1.0) for v in (*pair.reference, *pair.candidate))
    interval = paired_bootstrap(
        [100 * v for v in pair.reference],
        [100 * v for v in pair.candidate],
        samples=samples,
        confidence=1 - alpha,
    )
    mcnemar = mcnemar_exact([v == 1.0 for v in pair.reference], [v == 1.0 for v in pair.candidate])
    spec = test_spec(kind, pair.metric, reference.arm, policy)
    test = None
    if spec is not None:
        decision = decide(
            spec.hypothesis, pair.reference, pair.candidate, spec.margin, alpha, samples=samples
        )
        fields = dataclasses.asdict(decision)
        rejected = fields.pop("passed")
        test = HypothesisTest(**fields, rejected=rejected, power=POWER)
    n = len(pair.reference)
    return Comparison(
        metric=pair.metric,
        reference=reference.arm,
        reference_version=reference.version_id,
        candidate_value=100 * sum(pair.candidate) / n,
        reference_value=100 * sum(pair.reference) / n,
        delta=100 * (sum(pair.candidate) - sum(pair.reference)) / n,
        statistic="mcnemar-exact" if binary else "paired-bootstrap",
        p_value=mcnemar.p_value if binary else None,
        ci_low=interval.low,
        ci_high=interval.high,
        discordant=(mcnemar.reference_only, mcnemar.candidate_only) if binary else None,
        test=test,
    )


def suite_detail(plan: SuitePlan, outcomes: dict[str, ArmOutcome]) -> dict[str, Any]:
    """The per-item record of one suite: every arm's output and verdict, and which arms came from
    the baseline cache."""
    rows = []
    for i, item in enumerate(plan.items):
        row: dict[str, Any] = {"id": str(item["id"])}
        for arm, outcome in outcomes.items():
            row[arm] = {"output": outcome.outputs[i], "correct": outcome.scored[i].correct}
        rows.append(row)
    return {
        "suite": plan.ref.name,
        "kind": plan.kind,
        "scorer": plan.scorer,
        "cached_arms": [arm for arm, o in outcomes.items() if o.cached],
        "items": rows,
    }
