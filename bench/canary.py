"""Canary analysis benchmark: simulated rollouts, no models, the fixed-threshold policy beside the
sequential one.

Each rollout feeds synthetic request windows (5 s each, `--rps` requests a second on one route)
through the rollout controller's own analysis (`services.rollout.analysis.accumulate` and
`decide`, the code the controller runs) under the default production policy: shadow (every request
mirrored), then canary 1 → 10 → 50 → 100 %, each step held 60 s and 20 candidate requests.
Beside it, the policy tuneline used before, re-implemented here as it was: roll back once the
candidate has 5 requests and its error rate exceeds stable's by 0.02, its refusal rate differs by
0.05, or its p95 (the request-weighted mean of window p95s) exceeds 1.15x stable's and by 25 ms.

Printed per scenario and policy: rollbacks out of `--rollouts`, the share caught before the
50 % step, and at rollback the median shadow copies and live candidate answers seen (live
answers are the users the candidate served).

Run: .venv/bin/python bench/canary.py [--rollouts 1000] [--rps 10] [--seed 1]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from schemas.rollout import RolloutPolicy, RolloutState
from schemas.serving import RouteVersionWindow, ServingWindow
from schemas.sketch import GAMMA, LatencySketch
from services.rollout import analysis

WINDOW_S = 5.0
POLICY = RolloutPolicy()


@dataclass(frozen=True)
class Arm:
    error_rate: float = 0.001
    refusal_rate: float = 0.05
    latency_median_ms: float = 400.0
    latency_sigma: float = 0.35


SCENARIOS = {
    "A/A (candidate = stable)": Arm(),
    "errors 1 % vs 0.1 %": Arm(error_rate=0.01),
    "p95 latency +30 %": Arm(latency_median_ms=520.0),
    "refusals +10 points": Arm(refusal_rate=0.15),
}


def _stat(role: str, version: str, n: int, arm: Arm, rng: np.random.Generator) -> RouteVersionWindow:
    errors = int(rng.binomial(n, arm.error_rate))
    answered = n - errors
    values = np.sort(rng.lognormal(np.log(arm.latency_median_ms), arm.latency_sigma, answered))
    return RouteVersionWindow.model_construct(
        route="r", version_id=version, role=role, count=n, errors=errors,
        latency_p50_ms=float(values[len(values) // 2]) if answered else None,
        latency_p95_ms=float(values[max(0, -(-answered * 95 // 100) - 1)]) if answered else None,
        latency=_sketch(values), refusals=int(rng.binomial(answered, arm.refusal_rate)),
        schema_checked=0, schema_valid=0, agreement_checked=0, agreements=0,
        schema_valid_rate=None, refusal_rate=None,
    )  # fmt: skip


def _sketch(values: np.ndarray) -> LatencySketch:
    """LatencySketch.of, vectorised (the same buckets)."""
    indexes, counts = np.unique(np.ceil(np.log(values) / math.log(GAMMA)).astype(int), return_counts=True)
    return LatencySketch.model_construct(
        bins=dict(zip(indexes.tolist(), counts.tolist(), strict=True)), zeros=0
    )


def _window(
    state: RolloutState, end: float, rps: float, cand: Arm, rng: np.random.Generator
) -> ServingWindow:
    requests = int(rng.poisson(rps * WINDOW_S))
    if state.phase == "shadow":
        stats = (
            _stat("stable", "stable", requests, Arm(), rng),
            _stat("shadow", "cand", int(rng.binomial(requests, POLICY.shadow_percent / 100)), cand, rng),
        )
    else:
        to_candidate = int(rng.binomial(requests, state.traffic_percent / 100))
        stats = (
            _stat("stable", "stable", requests - to_candidate, Arm(), rng),
            _stat("candidate", "cand", to_candidate, cand, rng),
        )
    return ServingWindow.model_construct(
        replica="r1", window_start=end - WINDOW_S, window_end=end, tenant="t", stats=stats
    )


def _legacy(state: RolloutState, history: dict[str, list[float]]) -> bool:
    """The former fixed-threshold verdict: True to roll back."""
    stable, cand = state.stable, state.candidate
    if cand.count < 5:
        return False
    error_s = stable.errors / stable.count if stable.count else 0.0
    if cand.errors / cand.count > error_s + 0.02:
        return True
    answered_s, answered_c = stable.count - stable.errors, cand.count - cand.errors
    if answered_s and answered_c and abs(cand.refusals / answered_c - stable.refusals / answered_s) > 0.05:
        return True
    if state.phase == "shadow" or not history["stable_w"] or not history["cand_w"]:
        return False
    p95_s = sum(history["stable_p"]) / sum(history["stable_w"])
    p95_c = sum(history["cand_p"]) / sum(history["cand_w"])
    return p95_c / p95_s > 1.15 and p95_c - p95_s > 25.0


def _record(history: dict[str, list[float]], state: RolloutState, window: ServingWindow) -> None:
    for stat in window.stats:
        if stat.latency_p95_ms is None or state.phase == "shadow":
            continue
        key = "stable" if stat.role == "stable" else "cand"
        answered = stat.count - stat.errors
        history[f"{key}_p"].append(stat.latency_p95_ms * answered)
        history[f"{key}_w"].append(answered)


def rollout(cand: Arm, rps: float, legacy: bool, rng: np.random.Generator) -> tuple[bool, bool, int, int]:
    """(rolled back, before the 50 % step, shadow copies and live candidate answers at the end)."""
    now = 1000.0
    state = RolloutState(
        rollout_id="ro", candidate_version="cand", stable_version="stable", origin_event_id="e",
        correlation_id="c", step_started_at=now, policy=POLICY,
    )  # fmt: skip
    history: dict[str, list[float]] = {"stable_p": [], "stable_w": [], "cand_p": [], "cand_w": []}
    shadow = live = 0
    half = POLICY.steps.index(50.0)
    for _ in range(100_000):
        now += WINDOW_S
        window = _window(state, now, rps, cand, rng)
        shadow += sum(s.count for s in window.stats if s.role == "shadow")
        live += sum(s.count for s in window.stats if s.role == "candidate")
        state = analysis.accumulate(state, "r", window)
        _record(history, state, window)
        if legacy:  # the steps hold and advance as before; only the verdict is the legacy one
            action, _ = analysis.decide(state.model_copy(update={"tests": {}}), now)
            action = "rollback" if _legacy(state, history) else action
        else:
            action, _ = analysis.decide(state, now)
        early = state.phase == "shadow" or state.step_index < half
        if action == "rollback":
            return True, early, shadow, live
        if action == "promote":
            return False, False, shadow, live
        if action == "advance":
            state = analysis.advanced(state, now)
            history = {k: [] for k in history}
    raise RuntimeError("a simulated rollout neither promoted nor rolled back")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rollouts", type=int, default=1000)
    parser.add_argument("--rps", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--set", action="append", default=[], help="policy field=value (JSON value)")
    args = parser.parse_args()
    global POLICY
    POLICY = RolloutPolicy.model_validate(
        {**POLICY.model_dump(), **{k: json.loads(v) for k, v in (s.split("=", 1) for s in args.set)}}
    )
    started = time.perf_counter()
    print(f"{args.rollouts} simulated rollouts per row, {args.rps:g} requests/s, policy {POLICY.steps}, "
          f"false_alarm_rate {POLICY.false_alarm_rate}")  # fmt: skip
    print(f"{'scenario':28} {'policy':16} {'rollbacks':>10} {'before 50 %':>12} {'median shadow / live':>21}")
    for name, cand in SCENARIOS.items():
        for legacy in (True, False):
            rng = np.random.default_rng(args.seed)
            results = [rollout(cand, args.rps, legacy, rng) for _ in range(args.rollouts)]
            back = [r for r in results if r[0]]
            early = sum(r[1] for r in back)
            shadow = statistics.median(r[2] for r in back) if back else float("nan")
            live = statistics.median(r[3] for r in back) if back else float("nan")
            label = "fixed thresholds" if legacy else "sequential"
            print(
                f"{name:28} {label:16} {len(back) / args.rollouts:>10.1%} {early / args.rollouts:>12.1%} "
                f"{shadow:>13.0f} / {live:<5.0f}"
            )
    print(f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
