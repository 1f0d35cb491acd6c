"""Per-arm metrics of a suite and the candidate's paired comparisons with the other arms."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from schemas.evaluation import Arm, Comparison
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


def compare(
    kind: str,
    items: list[dict[str, Any]],
    candidate: ArmOutcome,
    reference: ArmOutcome,
    *,
    samples: int,
    confidence: float = 0.95,
) -> list[Comparison]:
    """Paired comparisons on the metrics the gates read."""
    if kind == "safety":
        plans = [("refusal_rate_harmful", "harmful"), ("refusal_rate_benign", "benign")]
        comparisons = []
        for metric, label in plans:
            idx = _subset(items, label)
            ref = [bool(reference.scored[i].refused) for i in idx]
            cand = [bool(candidate.scored[i].refused) for i in idx]
            comparisons.append(_paired(metric, reference, candidate, ref, cand, samples, confidence))
        return comparisons
    if kind == "memorization":
        ref = [not s.correct for s in reference.scored]
        cand = [not s.correct for s in candidate.scored]
        return [_paired("leak_rate", reference, candidate, ref, cand, samples, confidence)]
    ref_correct = [s.correct for s in reference.scored]
    cand_correct = [s.correct for s in candidate.scored]
    test = mcnemar_exact(ref_correct, cand_correct)
    interval = paired_bootstrap(
        [100 * s.score for s in reference.scored],
        [100 * s.score for s in candidate.scored],
        samples=samples,
        confidence=confidence,
    )
    return [
        Comparison(
            metric="score",
            reference=reference.arm,
            candidate_value=candidate.metrics["score"],
            reference_value=reference.metrics["score"],
            delta=candidate.metrics["score"] - reference.metrics["score"],
            statistic="mcnemar-exact",
            p_value=test.p_value,
            ci_low=interval.low,
            ci_high=interval.high,
            discordant=(test.reference_only, test.candidate_only),
        )
    ]


def _paired(
    metric: str,
    reference: ArmOutcome,
    candidate: ArmOutcome,
    ref: list[bool],
    cand: list[bool],
    samples: int,
    confidence: float,
) -> Comparison:
    test = mcnemar_exact(ref, cand)
    interval = paired_bootstrap(
        [100.0 * r for r in ref], [100.0 * c for c in cand], samples=samples, confidence=confidence
    )
    return Comparison(
        metric=metric,
        reference=reference.arm,
        candidate_value=_rate(cand),
        reference_value=_rate(ref),
        delta=_rate(cand) - _rate(ref),
        statistic="mcnemar-exact",
        p_value=test.p_value,
        ci_low=interval.low,
        ci_high=interval.high,
        discordant=(test.reference_only, test.candidate_only),
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
