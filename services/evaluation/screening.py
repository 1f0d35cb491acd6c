"""Screening a run's checkpoints against the base: training's checkpoint choice by guardrails.

Each checkpoint answers a seeded sample of the capability suite and of a safety suite's harmful
prompts; the base answers the same items once (and from the baseline cache after that). A
checkpoint fails its screen only when the sample shows harm beyond the margin: the base's
superiority by more than the margin, tested one-sided at α (exact McNemar at margin 0, Tango's
score test above it, the paired bootstrap for non-binary scores). So a checkpoint that loses
nothing is dropped at most α of the time per test, and one whose true loss is margin + MDE is
dropped at least 80 % of the time. The samples use their own seed, and the release gates leave
the screened items out of the same suites (`Evaluator.run(held_out=...)`): the items that chose
the checkpoint never judge it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from schemas.checkpoints import (
    CheckpointScreen,
    CheckpointScreenRequest,
    CheckpointSelection,
    ScreenCandidate,
    ScreenedCheckpoint,
)
from schemas.evaluation import HypothesisTest
from services.evaluation.comparisons import score_outputs
from services.evaluation.decisions import POWER, decide
from services.evaluation.engine import Engine
from services.evaluation.evaluate import Evaluator, token_counter
from services.evaluation.options import EvaluationError
from services.evaluation.suite_plan import SuitePlan, catalogue_plan, labelled, sampled

SEED = "checkpoint-screen:"


def screen_plans(evaluator: Evaluator, selection: CheckpointSelection) -> dict[str, SuitePlan]:
    """The capability sample and the harmful-prompt sample (keys: `capability`, `safety`)."""
    wanted: dict[str, tuple[str, int, str | None]] = {
        "capability": (selection.capability_suite, selection.capability_items, None)
    }
    if selection.safety_suite is not None:
        wanted["safety"] = (selection.safety_suite, selection.safety_items, "harmful")
    suites = {s.name: s for s in evaluator._all_suites()}
    plans = {}
    for role, (name, size, label) in wanted.items():
        suite = suites.get(name)
        if suite is None or suite.harness_task is not None:
            raise EvaluationError(
                "suite-unknown",
                f"checkpoint_selection names {name!r} as its {role} suite; it must be one of the "
                f"catalogue's item suites: {', '.join(sorted(s for s in suites if s != 'latency'))}",
            )
        plan = catalogue_plan(suite)
        if label is not None:
            plan = labelled(plan, label)
        if size * 2 > len(plan.items):
            raise EvaluationError(
                "screen-too-large",
                f"checkpoint_selection screens {size} items of {name!r}, which has {len(plan.items)}"
                f"{' ' + label if label else ''}: at most half, so the release gates keep the rest; "
                "lower the recipe's item count",
            )
        plans[role] = sampled(plan, size, SEED)
    return plans


def _values(plan: SuitePlan, outputs: list[str], role: str) -> list[float]:
    scored, _ = score_outputs(plan.kind, plan.scorer, plan.items, outputs)
    if role == "safety":
        return [float(bool(s.refused)) for s in scored]
    return [s.score for s in scored]


def harm_test(base: list[float], checkpoint: list[float], margin: float, alpha: float) -> HypothesisTest:
    """Is the base better than the checkpoint by more than `margin` points? (rejected: harm shown;
    the estimate is base − checkpoint)."""
    decision = decide("superiority", checkpoint, base, margin, alpha)
    fields = dataclasses.asdict(decision)
    rejected = fields.pop("passed")
    return HypothesisTest(**fields, rejected=rejected, power=POWER)


def screen(evaluator: Evaluator, request: CheckpointScreenRequest) -> CheckpointScreen:
    selection = request.selection
    bases = {c.candidate.base.sha256 for c in request.checkpoints}
    if len(bases) != 1:
        raise EvaluationError("base-mismatch", "the checkpoints of one run must share one base model")
    plans = screen_plans(evaluator, selection)
    margins = {"capability": selection.capability_max_loss, "safety": selection.safety_max_loss}
    base_values: dict[str, list[float]] = {}
    rows = []
    for checkpoint in request.checkpoints:
        # one engine per checkpoint: full-weight checkpoints are each a model; memory stays bounded
        engine = evaluator._engine(checkpoint.candidate, None, base_arms=True)
        tests: dict[str, Any] = {}
        for role, plan in plans.items():
            evaluator.budget(plan, token_counter(engine))
            if role not in base_values:
                base_values[role] = _values(plan, _base_outputs(evaluator, engine, plan, checkpoint), role)
            outputs, _ = evaluator._outputs(engine, plan, "candidate", None)
            values = _values(plan, outputs, role)
            tests[role] = harm_test(base_values[role], values, margins[role], selection.significance)
        rows.append(
            ScreenedCheckpoint(
                step=checkpoint.step,
                version_id=checkpoint.candidate.version_id(),
                capability=tests["capability"],
                safety=tests.get("safety"),
                passed=not any(t.rejected for t in tests.values()),
            )
        )
        evaluator.progress(
            f"checkpoint {checkpoint.step}: screen {'passed' if rows[-1].passed else 'FAILED'}"
        )
    items = {plan.ref.name: tuple(str(i["id"]) for i in plan.items) for plan in plans.values()}
    return CheckpointScreen(checkpoints=tuple(rows), screened_items=items)


def _base_outputs(
    evaluator: Evaluator, engine: Engine, plan: SuitePlan, checkpoint: ScreenCandidate
) -> list[str]:
    ref = checkpoint.candidate
    key = evaluator._cache_key(ref.base.sha256, plan, "baseline", "baseline", ref.tokenizer.tokenizer_sha256)
    return evaluator._outputs(engine, plan, "baseline", key)[0]
