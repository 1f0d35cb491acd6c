"""One evaluation: every suite on the candidate, the base, the few-shot base and production.

Plain code (no broker): the handler calls `Evaluator.run` in a worker thread. Answers other than
the candidate's are cached (`answers.CachedAnswers`): a second candidate on the same base pays
only for itself. Latency is never cached: it is measured here, interleaving base and candidate probes,
because it belongs to this machine at this moment.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from schemas.evaluation import ArmScore, Comparison, SuiteResult
from schemas.gate_policy import GatePolicy
from schemas.refs import ArtifactRef, EvalSuiteRef, ModelRef
from services.core.artifacts import ArtifactError, ArtifactStore
from services.core.ml.bases import resolve_exact_base
from services.core.ml.models import BaseMismatch, ModelResolutionError
from services.core.ml.suite_catalogue import Suite, all_suites
from services.evaluation.answers import CachedAnswers
from services.evaluation.comparisons import ArmOutcome, compare, score_outputs, suite_detail
from services.evaluation.engine import Engine, EngineError
from services.evaluation.gates import evaluate_gates
from services.evaluation.latency import measure_latency
from services.evaluation.options import EvalOptions, EvaluationError, Outcome
from services.evaluation.parents import Roles, arm_name, roles
from services.evaluation.suite_plan import (
    PlanError,
    SuitePlan,
    catalogue_plan,
    memorization_plan,
    sampled,
    target_plan,
    without,
)

log = logging.getLogger(__name__)


class Evaluator(CachedAnswers):
    def __init__(
        self,
        store: ArtifactStore,
        options: EvalOptions,
        *,
        model_cache: str,
        work_dir: Path,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.store = store
        self.options = options
        self.model_cache = model_cache
        self.work_dir = work_dir
        self.progress = progress or (lambda message: log.info("%s", message))
        self.cache_hits: list[str] = []
        self._suites: list[Suite] | None = None
        self.generated_items = 0
        self.parents: list[ModelRef] = []
        self.roles = Roles()
        self.held_out: dict[str, tuple[str, ...]] = {}  # suite → items a checkpoint screen read

    # -- preparation ----------------------------------------------------------------------------
    def _base_dir(self, ref: ModelRef) -> Path:
        try:
            return resolve_exact_base(ref.base, self.model_cache, self.store)
        except BaseMismatch as error:
            raise EvaluationError(
                "base-mismatch", f"{error}; evaluate it against the exact base it was trained on"
            ) from None
        except ModelResolutionError as error:
            raise EvaluationError(
                "base-model-unavailable", f"candidate base {ref.base.name}: {error}"
            ) from None

    def _fetch(self, ref: ArtifactRef, name: str) -> Path:
        target = self.work_dir / name
        shutil.rmtree(target, ignore_errors=True)
        try:
            return self.store.fetch_tree(ref, target)
        except ArtifactError as error:
            raise EvaluationError("artifact-unavailable", f"{name} weights {ref.key}: {error}") from None

    def _attach(self, engine: Engine, arm: str, ref: ModelRef) -> None:
        if ref.adapter is not None:
            engine.add_adapter_arm(arm, self._fetch(ref.adapter.artifact, arm), ref.quantization)
        elif ref.weights is not None:
            engine.add_weights_arm(arm, self._fetch(ref.weights, arm), ref.quantization)
        else:
            raise EvaluationError("candidate-invalid", "the ModelRef has neither an adapter nor weights")

    def _dataset(self, ref: ModelRef) -> tuple[dict[str, Any], bytes | None]:
        if ref.dataset is None:
            return {}, None
        try:
            manifest = self.store.read_json(ref.dataset.manifest)
            splits = manifest.get("splits") or {}
            # `test` is the gates' own split; `eval` is its name in datasets curated before there
            # was a validation split (training read it then: the report says so)
            split = splits.get("test") or splits.get("eval")
            data = self.store.read_bytes(ArtifactRef.model_validate(_ref_fields(split))) if split else None
        except (ArtifactError, ValueError) as error:
            raise EvaluationError(
                "dataset-unavailable", f"dataset {ref.dataset.dataset_id[:12]}: {error}"
            ) from None
        return manifest, data

    def _target(self, ref: ModelRef, policy: GatePolicy) -> tuple[dict[str, Any], SuitePlan | None]:
        """The dataset's manifest and its test split as the target suite (None without one)."""
        manifest, test_split = self._dataset(ref)
        if not test_split:
            return manifest, None
        try:
            return manifest, target_plan(test_split, str(manifest.get("format", "sft")), policy)
        except PlanError as error:
            raise EvaluationError("target-suite-invalid", str(error)) from None

    def _parent_tasks(self, policy: GatePolicy) -> list[SuitePlan]:
        """Each combined parent's target suite, compared with that parent."""
        plans = []
        for index in self.roles.tasks_of:
            parent = self.parents[index]
            _, plan = self._target(parent, policy)
            if plan is not None:
                plan.ref = EvalSuiteRef(name=f"target:{parent.version_id()}", sha256=plan.ref.sha256)
                plan.parent, plan.few_shot = index, 0
                plans.append(plan)
        return plans

    def plan(self, ref: ModelRef, policy: GatePolicy, engine: Engine) -> list[SuitePlan]:
        manifest, target = self._target(ref, policy)
        plans = [target] if target is not None else []
        plans += self._parent_tasks(policy)
        answer_tokens = token_counter(engine)
        memorization = memorization_plan(list(manifest.get("canaries") or []))
        if memorization is not None:
            plans.append(memorization)
        unknown = sorted(set(policy.suite_items) - {s.name for s in self._all_suites()})
        if unknown:
            raise EvaluationError(
                "suite-unknown",
                f"gates.suite_items names {', '.join(unknown)}; known: "
                f"{', '.join(sorted(s.name for s in self._all_suites()))}",
            )
        for suite in self._catalogue(ref):
            if suite.kind != "latency":
                plan = catalogue_plan(suite)
                if suite.name in self.held_out and plan.harness is None:
                    plan = without(plan, set(self.held_out[suite.name]))
                size = policy.suite_items.get(suite.name)
                plans.append(sampled(plan, size) if size and plan.harness is None else plan)
        for plan in plans:
            if self.roles.quantized_from is not None:
                plan.parent = self.roles.quantized_from
            self.budget(plan, answer_tokens)
        return plans

    def budget(self, plan: SuitePlan, answer_tokens: Callable[[list[dict[str, Any]]], int]) -> None:
        """Answers get room for their reference answer, and some slack."""
        if plan.max_new_tokens == 0 and plan.harness is None:
            budgets = [min(self.options.max_new_tokens, answer_tokens([i]) + 16) for i in plan.items]
            plan.max_new_tokens = max(budgets, default=16)
            # the catalogue's suites mix 2-token and 30-token answers: each item gets its own
            # budget (rounded up to 8 tokens, so few batches differ); the target keeps one
            if plan.kind != "target":
                plan.budgets = [min(plan.max_new_tokens, -(-b // 8) * 8) for b in budgets]

    def _all_suites(self) -> list[Suite]:
        """The catalogue, read once per evaluation (shipped files and the store's registrations)."""
        if self._suites is None:
            self._suites = all_suites(self.store)
        return self._suites

    def _catalogue(self, ref: ModelRef) -> list[Suite]:
        suites = self._all_suites()
        if self.options.suites:
            known = {s.name for s in suites}
            unknown = [n for n in self.options.suites if n not in known]
            if unknown:
                raise EvaluationError(
                    "suite-unknown",
                    f"TUNELINE_EVALUATION_SUITES names {', '.join(unknown)}; "
                    f"known: {', '.join(sorted(known))}",
                )
            suites = [s for s in suites if s.name in self.options.suites]
        quantized = ref.quantization.method != "none"
        return [s for s in suites if s.kind != "quant-tail" or quantized]

    def latency_suite(self) -> Suite | None:
        if self.options.latency_items == 0:
            return None
        return next((s for s in self._all_suites() if s.kind == "latency"), None)

    # -- running --------------------------------------------------------------------------------
    def _engine(self, candidate: ModelRef, production: ModelRef | None, *, base_arms: bool) -> Engine:
        base_dir = self._base_dir(candidate)
        try:
            engine = Engine(
                base_dir,
                device=self.options.device,
                batch_size=self.options.batch_size,
                dtype=self.options.dtype,
            )
            if base_arms:
                engine.add_base_arm("baseline")
                engine.add_base_arm("few-shot")
            self._attach(engine, "candidate", candidate)
            if production is not None:
                self._attach(engine, "production", production)
            for index in self.roles.arms:
                self._attach(engine, arm_name(index), self.parents[index])
        except EngineError as error:
            raise EvaluationError("candidate-incompatible", str(error)) from None
        return engine

    def score_suite(self, candidate: ModelRef, policy: GatePolicy, suite: str) -> float:
        """The candidate's score on one suite, measured as `run` measures it (greedy-soup trials)."""
        engine = self._engine(candidate, None, base_arms=False)
        plan = next((p for p in self.plan(candidate, policy, engine) if p.ref.name == suite), None)
        if plan is None:
            raise EvaluationError("suite-unknown", f"suite {suite!r} does not apply to this candidate")
        if plan.harness is not None:
            outcome = self._harness_outcome(engine, plan, "candidate", candidate.version_id(), None)
            return float(outcome.metrics["score"])
        outputs, _ = self._outputs(engine, plan, "candidate", None)
        return float(score_outputs(plan.kind, plan.scorer, plan.items, outputs)[1]["score"])

    def _arm(
        self, engine: Engine, plan: SuitePlan, arm: str, versions: dict[str, str], ref: ModelRef
    ) -> ArmOutcome:
        """One arm's outputs and scores on one suite; the base's arms (and production's) are cached."""
        base_sha, tokenizer = ref.base.sha256, ref.tokenizer.tokenizer_sha256
        own_version = arm == "production" or arm.startswith("parent-")
        tag = versions[arm] if own_version else arm
        key = None if arm == "candidate" else self._cache_key(base_sha, plan, arm, tag, tokenizer)
        role = "parent" if arm.startswith("parent-") else arm
        if plan.harness is not None:
            outcome = self._harness_outcome(engine, plan, arm, versions[arm], key)
            return dataclasses.replace(outcome, arm=role)  # type: ignore[arg-type]
        outputs, cached = self._outputs(engine, plan, arm, key)
        scored, metrics = score_outputs(plan.kind, plan.scorer, plan.items, outputs)
        return ArmOutcome(role, versions[arm], outputs, scored, metrics, cached)  # type: ignore[arg-type]

    def _suite(
        self,
        engine: Engine,
        plan: SuitePlan,
        candidate: ModelRef,
        policy: GatePolicy,
        versions: dict[str, str],
    ) -> tuple[SuiteResult, dict[str, Any]]:
        """Every arm of one suite, and the candidate compared with each of the others."""
        arms = ["candidate", "baseline"]
        if plan.kind == "target" and plan.few_shot > 0 and len(plan.items) > 1 and plan.harness is None:
            arms.append("few-shot")
        if "production" in versions:
            arms.append("production")
        if plan.parent is not None:
            arms.append(arm_name(plan.parent))
        outcomes = {arm: self._arm(engine, plan, arm, versions, candidate) for arm in arms}
        comparisons: list[Comparison] = []
        for arm in arms[1:]:
            comparisons += compare(
                plan.kind,
                plan.items,
                outcomes["candidate"],
                outcomes[arm],
                policy=policy,
                samples=self.options.bootstrap_samples,
            )
        scores = tuple(
            ArmScore(arm=o.arm, version_id=o.version_id, metrics=o.metrics) for o in outcomes.values()
        )
        result = SuiteResult(
            suite=plan.ref,
            kind=plan.kind,
            items=len(plan.items),
            scores=scores,
            comparisons=tuple(comparisons),
        )
        return result, suite_detail(plan, outcomes)

    def run(
        self,
        candidate: ModelRef,
        policy: GatePolicy,
        production: ModelRef | None = None,
        parents: Sequence[ModelRef] = (),
        held_out: dict[str, tuple[str, ...]] | None = None,
    ) -> Outcome:
        """Every suite on every arm, the comparisons and the gates. `parents` are the candidate's
        lineage parents (merging's inputs): see `parents.roles` for when they are references.
        `held_out`: items a checkpoint screen chose this candidate on, left out of their suites."""
        self.parents = list(parents)
        self.held_out = dict(held_out or {})
        self.roles = roles(candidate, self.parents)
        timings: dict[str, float] = {}
        started = time.perf_counter()
        engine = self._engine(candidate, production, base_arms=True)
        timings["load_s"] = time.perf_counter() - started
        plans = self.plan(candidate, policy, engine)
        base = f"base:{candidate.base.sha256[:16]}"
        versions = {"candidate": candidate.version_id(), "baseline": base, "few-shot": f"{base}+few-shot"}
        if production is not None:
            versions["production"] = production.version_id()
        for index in self.roles.arms:
            versions[arm_name(index)] = self.parents[index].version_id()
        generation_started = time.perf_counter()
        suites = [self._suite(engine, plan, candidate, policy, versions) for plan in plans]
        results, details = [r for r, _ in suites], [d for _, d in suites]
        timings["generation_s"] = time.perf_counter() - generation_started
        latency = self.latency_suite()
        if latency is not None:
            measured_at = time.perf_counter()
            result, detail = measure_latency(engine, latency, versions, production is not None, self.options)
            results.append(result)
            details.append(detail)
            timings["latency_s"] = time.perf_counter() - measured_at
        gates, notes = evaluate_gates(results, policy)
        timings["total_s"] = time.perf_counter() - started
        report = {
            "kind": "tuneline.eval-report/v1",
            "candidate": candidate.model_dump(mode="json"),
            "production": production.model_dump(mode="json") if production else None,
            "policy": policy.model_dump(mode="json"),
            "suites": [r.model_dump(mode="json") for r in results],
            "items": details,
            "gates": [g.model_dump(mode="json") for g in gates],
            "passed": all(g.passed for g in gates),
            "notes": notes,
            "cache_hits": self.cache_hits,
            "generated_items": self.generated_items,
            "timings": timings,
            "device": self.options.device,
            "dtype": self._dtype_name(),
        }
        return Outcome(results, gates, notes, report, timings)


def _ref_fields(split: dict[str, Any]) -> dict[str, Any]:
    return {k: split[k] for k in ("key", "sha256", "size_bytes", "media_type") if k in split}


def token_counter(engine: Engine) -> Callable[[list[dict[str, Any]]], int]:
    def longest(items: list[dict[str, Any]]) -> int:
        answers = [str(i["answer"]) for i in items if "answer" in i]
        if not answers:
            return 32
        return max(len(engine.tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers)

    return longest
