"""One evaluation: every suite on the candidate, the base, the few-shot base and production.

Plain code (no broker): the handler calls `Evaluator.run` in a worker thread. The baseline and
few-shot arms are cached in the artifact store by (base sha256, suite hash, generation settings):
a second candidate on the same base pays only for itself. The production arm is cached by its
version id. Latency is never cached: it is measured here, interleaving base and candidate probes,
because it belongs to this machine at this moment.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from schemas.evaluation import ArmScore, Comparison, SuiteResult
from schemas.gate_policy import GatePolicy
from schemas.refs import ArtifactRef, ModelRef
from services.core.artifacts import ArtifactError, ArtifactNotFound, ArtifactStore
from services.core.ml.bases import resolve_exact_base
from services.core.ml.models import BaseMismatch, ModelResolutionError, inference_dtype
from services.core.ml.suite_catalogue import Suite, all_suites
from services.evaluation.comparisons import ArmOutcome, compare, score_outputs, suite_detail
from services.evaluation.engine import Engine, EngineError
from services.evaluation.gates import evaluate_gates
from services.evaluation.harness import HarnessMissing, score_task
from services.evaluation.latency import measure_latency
from services.evaluation.options import EvalOptions, EvaluationError, Outcome
from services.evaluation.scoring import Scored
from services.evaluation.suite_plan import (
    PlanError,
    SuitePlan,
    catalogue_plan,
    content_hash,
    memorization_plan,
    target_plan,
)

log = logging.getLogger(__name__)
CACHE_PREFIX = "refs/eval-cache"
ENGINE_VERSION = "greedy-v1"  # bump when generation changes: it invalidates every cached baseline


class Evaluator:
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

    def plan(self, ref: ModelRef, policy: GatePolicy, engine: Engine) -> list[SuitePlan]:
        manifest, eval_split = self._dataset(ref)
        plans: list[SuitePlan] = []
        answer_tokens = _token_counter(engine)
        if eval_split:
            try:
                plans.append(target_plan(eval_split, str(manifest.get("format", "sft")), policy))
            except PlanError as error:
                raise EvaluationError("target-suite-invalid", str(error)) from None
        memorization = memorization_plan(list(manifest.get("canaries") or []))
        if memorization is not None:
            plans.append(memorization)
        plans += [catalogue_plan(suite) for suite in self._catalogue(ref) if suite.kind != "latency"]
        for plan in plans:  # answers get room for the longest reference answer, and some slack
            if plan.max_new_tokens == 0 and plan.harness is None:
                plan.max_new_tokens = min(self.options.max_new_tokens, answer_tokens(plan.items) + 16)
        return plans

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
    def _dtype_name(self) -> str:
        """The weights' dtype the engine runs in, e.g. float32."""
        return str(inference_dtype(self.options.dtype, self.options.device)).removeprefix("torch.")

    def _cache_key(self, base_sha: str, plan: SuitePlan, arm: str, tag: str, tokenizer: str) -> str:
        settings = content_hash(
            ENGINE_VERSION,
            plan.max_new_tokens,
            plan.few_shot if arm == "few-shot" else 0,
            tokenizer,
            self._dtype_name(),
        )
        return f"{CACHE_PREFIX}/{base_sha}/{plan.ref.sha256}/{tag}-{settings[:16]}.json"

    def _outputs(
        self, engine: Engine, plan: SuitePlan, arm: str, cache_key: str | None
    ) -> tuple[list[str], bool]:
        cached = self._cached(cache_key, [str(i["id"]) for i in plan.items])
        if cached is not None and "outputs" in cached:
            self.cache_hits.append(f"{plan.ref.name}/{arm}")
            return list(cached["outputs"]), True
        if arm == "few-shot":
            prompts = [plan.few_shot_messages(i) for i in range(len(plan.items))]
        else:
            prompts = [plan.messages(item) for item in plan.items]
        started = time.perf_counter()
        generations = engine.generate(arm, prompts, max_new_tokens=plan.max_new_tokens)
        self.generated_items += len(prompts)
        self.progress(
            f"{plan.ref.name}: {arm} answered {len(prompts)} items in {time.perf_counter() - started:.1f} s"
        )
        outputs = [g.text for g in generations]
        if cache_key and self.options.cache:
            self.store.put_named_json(
                cache_key, {"ids": [str(i["id"]) for i in plan.items], "outputs": outputs}
            )
        return outputs, False

    def _harness_outcome(
        self, engine: Engine, plan: SuitePlan, arm: str, version: str, cache_key: str | None
    ) -> ArmOutcome:
        """An lm-eval task on one arm: per-document metric values as the paired outcomes."""
        assert plan.harness is not None and plan.harness.harness_task is not None
        task = plan.harness.harness_task
        cached = self._cached(cache_key, None)
        if cached is not None and "values" in cached:
            self.cache_hits.append(f"{plan.ref.name}/{arm}")
            metric, values = str(cached["metric"]), [float(v) for v in cached["values"]]
        else:
            started = time.perf_counter()
            try:
                metric, values = score_task(engine, arm, plan.harness.data, task, self.work_dir)
            except HarnessMissing as error:
                raise EvaluationError("lm-eval-missing", str(error)) from None
            self.generated_items += len(values)
            self.progress(
                f"{plan.ref.name}: {arm} ran lm-eval {task} ({len(values)} docs) in "
                f"{time.perf_counter() - started:.1f} s"
            )
            if cache_key and self.options.cache:
                self.store.put_named_json(cache_key, {"metric": metric, "values": values})
        plan.items = [{"id": f"doc-{i}"} for i in range(len(values))]
        scored = [Scored(v, v >= 0.5) for v in values]
        metrics = {
            "score": 100.0 * sum(values) / max(1, len(values)),
            "accuracy": 100.0 * sum(s.correct for s in scored) / max(1, len(scored)),
        }
        outputs = [f"{metric}={v:g}" for v in values]
        return ArmOutcome(arm, version, outputs, scored, metrics, cached is not None)  # type: ignore[arg-type]

    def _cached(self, cache_key: str | None, ids: list[str] | None) -> dict[str, Any] | None:
        if not (cache_key and self.options.cache):
            return None
        try:
            cached = self.store.read_named_json(cache_key)
        except (ArtifactNotFound, ValueError):
            return None
        if not isinstance(cached, dict) or (ids is not None and cached.get("ids") != ids):
            return None
        return cached

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
        tag = versions["production"] if arm == "production" else arm
        key = None if arm == "candidate" else self._cache_key(base_sha, plan, arm, tag, tokenizer)
        if plan.harness is not None:
            return self._harness_outcome(engine, plan, arm, versions[arm], key)
        outputs, cached = self._outputs(engine, plan, arm, key)
        scored, metrics = score_outputs(plan.kind, plan.scorer, plan.items, outputs)
        return ArmOutcome(arm, versions[arm], outputs, scored, metrics, cached)  # type: ignore[arg-type]

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

    def run(self, candidate: ModelRef, policy: GatePolicy, production: ModelRef | None = None) -> Outcome:
        timings: dict[str, float] = {}
        started = time.perf_counter()
        engine = self._engine(candidate, production, base_arms=True)
        timings["load_s"] = time.perf_counter() - started
        plans = self.plan(candidate, policy, engine)
        base = f"base:{candidate.base.sha256[:16]}"
        versions = {"candidate": candidate.version_id(), "baseline": base, "few-shot": f"{base}+few-shot"}
        if production is not None:
            versions["production"] = production.version_id()
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


def _token_counter(engine: Engine) -> Callable[[list[dict[str, Any]]], int]:
    def longest(items: list[dict[str, Any]]) -> int:
        answers = [str(i["answer"]) for i in items if "answer" in i]
        if not answers:
            return 32
        return max(len(engine.tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers)

    return longest
