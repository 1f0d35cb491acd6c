"""The latency gate's measurement: per-token time of single-prompt generation, the arms
interleaved and each probe's median over rounds, so one stall is not the p95."""

from __future__ import annotations

import logging
import statistics
from typing import Any

from schemas.evaluation import ArmScore, Comparison, SuiteResult
from services.core.ml.suite_catalogue import Suite
from services.evaluation.engine import Engine
from services.evaluation.options import EvalOptions
from services.evaluation.stats import percentile

log = logging.getLogger(__name__)


def measure_latency(
    engine: Engine, suite: Suite, versions: dict[str, str], with_production: bool, options: EvalOptions
) -> tuple[SuiteResult, dict[str, Any]]:
    """Per-token time of single-prompt generation, base and candidate interleaved. Each probe is
    timed `latency_rounds` times per arm, the arms' order alternating; a probe's time is the
    median of its rounds, and p50/p95 are taken over the probes."""
    items = suite.items()[: options.latency_items]
    arms = ["candidate", "baseline"] + (["production"] if with_production else [])
    tokens = options.latency_tokens
    prompt0 = [{"role": "user", "content": str(items[0]["prompt"])}]
    for arm in arms:  # warm-up: first calls pay for allocation and kernel selection
        engine.time_per_token(arm, prompt0, tokens)
    rounds: dict[str, list[list[float]]] = {arm: [[] for _ in items] for arm in arms}
    for r in range(options.latency_rounds):
        for n, item in enumerate(items):
            prompt = [{"role": "user", "content": str(item["prompt"])}]
            order = arms if (n + r) % 2 == 0 else list(reversed(arms))
            for arm in order:
                rounds[arm][n].append(1000.0 * engine.time_per_token(arm, prompt, tokens))
    samples = {arm: [statistics.median(times) for times in per_item] for arm, per_item in rounds.items()}
    metrics = {
        arm: {
            "p50_ms_per_token": percentile(values, 50),
            "p95_ms_per_token": percentile(values, 95),
            "items": float(len(values)),
        }
        for arm, values in samples.items()
    }
    ratio = metrics["candidate"]["p95_ms_per_token"] / max(metrics["baseline"]["p95_ms_per_token"], 1e-9)
    comparison = Comparison(
        metric="p95_ms_per_token",
        reference="baseline",
        candidate_value=metrics["candidate"]["p95_ms_per_token"],
        reference_value=metrics["baseline"]["p95_ms_per_token"],
        delta=metrics["candidate"]["p95_ms_per_token"] - metrics["baseline"]["p95_ms_per_token"],
        statistic=f"ratio {ratio:.3f}",
    )
    result = SuiteResult(
        suite=suite.ref(),
        kind="latency",
        items=len(items),
        scores=tuple(ArmScore(arm=a, version_id=versions[a], metrics=metrics[a]) for a in arms),
        comparisons=(comparison,),
    )
    detail = {"suite": suite.name, "kind": "latency", "ms_per_token": samples, "rounds": rounds}
    return result, detail
