"""lm-evaluation-harness tasks scored on an arm of the engine (base or adapter), per document.

lm-eval is optional (`pip install 'tuneline[lm-eval]'`). The task comes from the suite's own
directory, checked by services.core.ml.lm_eval_tasks; no task code runs and nothing is downloaded.
The per-document metric (the task's first metric, e.g. acc) gives the paired per-item outcomes.
"""

from __future__ import annotations

import logging
from pathlib import Path

from services.core.ml import lm_eval_tasks
from services.evaluation.engine import Engine

log = logging.getLogger(__name__)


class HarnessMissing(RuntimeError):
    pass


def score_task(engine: Engine, arm: str, data: bytes, task: str, work: Path) -> tuple[str, list[float]]:
    """(metric name, per-document values in doc order) of `task` answered by `arm`."""
    try:
        from lm_eval import simple_evaluate
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise HarnessMissing(
            f"suite scorer lm-eval:{task} needs lm-evaluation-harness on the evaluation workers: "
            "pip install 'tuneline[lm-eval]'"
        ) from None
    include = lm_eval_tasks.unpack(data, task, work / f"lm-eval-{task}")
    manager = TaskManager(include_path=str(include), include_defaults=False)
    with engine.active(arm) as model:
        lm = HFLM(pretrained=model, tokenizer=engine.tokenizer, batch_size=engine.batch_size)
        results = simple_evaluate(
            model=lm, tasks=[task], task_manager=manager, log_samples=True, bootstrap_iters=0, use_cache=None
        )
    if results is None:
        raise RuntimeError(f"lm-eval returned no results for {task}")
    samples = sorted(results["samples"][task], key=lambda s: s["doc_id"])
    metrics = [m for m in samples[0]["metrics"]] if samples and samples[0].get("metrics") else []
    metric = metrics[0] if metrics else "acc"
    values = [float(sample[metric]) for sample in samples]
    log.info(
        "lm-eval %s on %s: %s %.3f over %d docs",
        task,
        arm,
        metric,
        sum(values) / max(1, len(values)),
        len(values),
    )
    return metric, values
