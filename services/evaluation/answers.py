"""Generating (or reusing) one arm's answers to one suite: the baseline cache.

The baseline and few-shot arms are cached in the artifact store by (base sha256, suite hash,
generation settings): a second candidate on the same base pays only for itself. Production's
and parents' answers are cached by their version id. `Evaluator` inherits this.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from services.core.artifacts import ArtifactNotFound, ArtifactStore
from services.core.ml.models import inference_dtype
from services.evaluation.comparisons import ArmOutcome
from services.evaluation.engine import Engine
from services.evaluation.harness import HarnessMissing, score_task
from services.evaluation.options import EvalOptions, EvaluationError
from services.evaluation.scoring import Scored
from services.evaluation.suite_plan import SuitePlan, content_hash

log = logging.getLogger(__name__)
CACHE_PREFIX = "refs/eval-cache"
ENGINE_VERSION = "greedy-v1"  # bump when generation changes: it invalidates every cached baseline


class CachedAnswers:
    store: ArtifactStore
    options: EvalOptions
    progress: Callable[[str], None]
    cache_hits: list[str]
    generated_items: int
    work_dir: Any

    def _dtype_name(self) -> str:
        """The weights' dtype the engine runs in, e.g. float32."""
        return str(inference_dtype(self.options.dtype, self.options.device)).removeprefix("torch.")

    def _cache_key(self, base_sha: str, plan: SuitePlan, arm: str, tag: str, tokenizer: str) -> str:
        settings = content_hash(
            ENGINE_VERSION,
            plan.max_new_tokens,
            plan.budgets,
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
        generations = engine.generate(arm, prompts, max_new_tokens=plan.budget())
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
