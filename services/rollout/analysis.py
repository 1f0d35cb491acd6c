"""Rollout analysis: fold serving.window stats into a phase's totals, compare, and decide. No I/O."""

from __future__ import annotations

from typing import Literal

from schemas.rollout import (
    Judgement,
    MetricAnalysis,
    RoleTotals,
    RolloutPolicy,
    RolloutState,
    SequentialTest,
)
from schemas.serving import RouteVersionWindow, ServingWindow
from services.rollout import sequential

Action = Literal["hold", "advance", "promote", "rollback"]


JUDGED = ("error_rate", "refusal_rate", "schema_invalid_rate", "latency_slow_rate")
"""The metrics a sequential test judges; the false-alarm rate is split equally among them."""


_COUNTS = ("count", "errors", "schema_checked", "schema_valid", "refusals", "agreement_checked", "agreements")


def _add(totals: RoleTotals, stat: RouteVersionWindow) -> RoleTotals:
    counts = {name: getattr(totals, name) + getattr(stat, name) for name in _COUNTS}
    latency = totals.latency.merged(stat.latency) if stat.latency else totals.latency
    return totals.model_copy(update={**counts, "latency": latency})


def accumulate(state: RolloutState, route: str, window: ServingWindow) -> RolloutState:
    """The state with this window's stats for `route` counted once (per replica, by window end),
    and every sequential test updated with the window."""
    if window.window_end <= state.seen_windows.get(window.replica, 0.0):
        return state  # a redelivered or older window: already counted
    seen = {**state.seen_windows, window.replica: window.window_end}
    if window.window_end <= state.step_started_at:
        return state.model_copy(update={"seen_windows": seen})
    stable, candidate = RoleTotals(), RoleTotals()
    wanted_role = "shadow" if state.phase == "shadow" else "candidate"
    for stat in window.stats:
        if stat.route != route:
            continue
        if stat.role == "stable" and stat.version_id == state.stable_version:
            stable = _add(stable, stat)
        elif stat.role == wanted_role and stat.version_id == state.candidate_version:
            candidate = _add(candidate, stat)
    return state.model_copy(
        update={
            "stable": _merged(state.stable, stable),
            "candidate": _merged(state.candidate, candidate),
            "tests": _observed(state, stable, candidate),
            "latency_reference": state.latency_reference.merged(stable.latency),
            "seen_windows": seen,
        }
    )


def _merged(totals: RoleTotals, window: RoleTotals) -> RoleTotals:
    counts = {name: getattr(totals, name) + getattr(window, name) for name in _COUNTS}
    return totals.model_copy(update={**counts, "latency": totals.latency.merged(window.latency)})


def _events(
    state: RolloutState, stable: RoleTotals, candidate: RoleTotals
) -> dict[str, tuple[int, int, int, int]]:
    """Per judged metric, this window's (candidate events, candidate n, stable events, stable n)."""
    events = {
        "error_rate": (candidate.errors, candidate.count, stable.errors, stable.count),
        "refusal_rate": (
            candidate.refusals,
            candidate.count - candidate.errors,
            stable.refusals,
            stable.count - stable.errors,
        ),
        "schema_invalid_rate": (
            candidate.schema_checked - candidate.schema_valid,
            candidate.schema_checked,
            stable.schema_checked - stable.schema_valid,
            stable.schema_checked,
        ),
    }
    policy = state.policy
    # shadow copies run after the live answer, in their own batches: their latency is reported,
    # not judged; canary requests share batches with stable ones and are judged
    reference = state.latency_reference.quantile(policy.latency_quantile)
    if state.phase == "canary" and reference is not None:
        allowed = max(reference * policy.max_latency_p95_ratio, reference + policy.latency_slack_ms)
        events["latency_slow_rate"] = (
            candidate.latency.count_above(allowed),
            candidate.latency.count,
            stable.latency.count_above(reference),
            stable.latency.count,
        )
    return events


def _observed(state: RolloutState, stable: RoleTotals, candidate: RoleTotals) -> dict[str, SequentialTest]:
    tests = dict(state.tests)
    for metric, (x_c, n_c, x_s, n_s) in _events(state, stable, candidate).items():
        grid = sequential.EITHER_WAY if metric == "refusal_rate" else sequential.WORSE
        tests[metric] = sequential.observe(
            tests.get(metric, SequentialTest()),
            grid,
            candidate_events=x_c,
            candidate_n=n_c,
            stable_events=x_s,
            stable_n=n_s,
        )
    return tests


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _values(state: RolloutState, metric: str) -> tuple[float | None, float | None]:
    """(stable, candidate) over the current phase, as the operator reads them."""
    stable, cand = state.stable, state.candidate
    if metric == "error_rate":
        return _rate(stable.errors, stable.count), _rate(cand.errors, cand.count)
    if metric == "refusal_rate":
        return _rate(stable.refusals, stable.count - stable.errors), _rate(
            cand.refusals, cand.count - cand.errors
        )
    if metric == "schema_invalid_rate":
        return (
            _rate(stable.schema_checked - stable.schema_valid, stable.schema_checked),
            _rate(cand.schema_checked - cand.schema_valid, cand.schema_checked),
        )
    return stable.latency_p95_ms, cand.latency_p95_ms


def _judged(state: RolloutState, metric: str) -> MetricAnalysis:
    policy = state.policy
    alpha = policy.false_alarm_rate / len(JUDGED)
    test = state.tests.get(metric)
    stable_value, cand_value = _values(state, metric)
    grid = sequential.EITHER_WAY if metric == "refusal_rate" else sequential.WORSE
    unchecked = metric == "schema_invalid_rate" and (test is None or test.candidate_n + test.stable_n == 0)
    if unchecked or (metric == "latency_slow_rate" and state.phase == "shadow"):
        # no request asked for a schema; shadow copies run in their own batches: shown, not judged
        judgement: Judgement = "reported"
    elif test is not None and sequential.breached(test, alpha):
        judgement = "breach"
    elif state.candidate.count < required_requests(policy, state) or test is None:
        judgement = "insufficient-data"
    else:
        judgement = "no-evidence-of-harm"
    share = test.candidate_n / (test.candidate_n + test.stable_n) if test and test.stable_n else None
    floor = sequential.events_to_call(grid, alpha, share) if share and 0 < share < 1 else None
    direction = "higher or lower" if metric == "refusal_rate" else "higher"
    return MetricAnalysis(
        metric=metric,
        stable=stable_value,
        candidate=cand_value,
        threshold=1 / alpha,
        passed=judgement != "breach",
        judgement=judgement,
        method=f"mixture SPRT on the candidate's share of events (rate ratio {direction} than stable's), "
        "conditional on each window's exposure; Ville's inequality",
        alpha=alpha,
        statistic=test.statistic if test else None,
        p_value=sequential.always_valid_p(test) if test else None,
        candidate_n=test.candidate_n if test else 0,
        stable_n=test.stable_n if test else 0,
        candidate_events=test.candidate_events if test else 0,
        stable_events=test.stable_events if test else 0,
        detects=f"a breach needs at least {floor} candidate events in a row at its exposure share {share:.3f}"
        if floor
        else "no exposure yet",
    )


def _shadow_agreement(state: RolloutState) -> MetricAnalysis:
    agreement = _rate(state.candidate.agreements, state.candidate.agreement_checked)
    minimum = state.policy.min_shadow_agreement
    return MetricAnalysis(
        metric="shadow_agreement",
        stable=None,
        candidate=agreement,
        threshold=minimum if minimum is not None else 0.0,
        passed=minimum is None or agreement is None or agreement >= minimum,
    )


def analyse(state: RolloutState) -> tuple[MetricAnalysis, ...]:
    """Every judged metric's sequential test, and (in shadow) the answers' agreement."""
    analysis = [_judged(state, metric) for metric in JUDGED]
    if state.phase == "shadow":
        analysis.append(_shadow_agreement(state))
    return tuple(analysis)


def required_requests(policy: RolloutPolicy, state: RolloutState) -> int:
    return policy.shadow_min_requests if state.phase == "shadow" else policy.min_requests


def decide(state: RolloutState, now: float) -> tuple[Action, tuple[MetricAnalysis, ...]]:
    """Roll back as soon as a test calls a breach; else advance when the step has held for its
    requests and seconds ("insufficient data" holds; it never passes)."""
    analysis = analyse(state)
    policy = state.policy
    if not all(a.passed for a in analysis):
        return "rollback", analysis
    held = (
        state.candidate.count >= required_requests(policy, state)
        and now - state.step_started_at >= policy.min_seconds
        and state.stable.count + state.candidate.count > 0
    )
    if state.paused or not held:
        return "hold", analysis
    if state.phase == "canary" and state.step_index == len(policy.steps) - 1:
        return "promote", analysis
    return "advance", analysis


def advanced(state: RolloutState, now: float) -> RolloutState:
    """The next phase: shadow → first canary step → … → 100 %; totals start again."""
    return state.model_copy(
        update={
            "phase": "canary",
            "step_index": state.step_index + 1,
            "step_started_at": now,
            "stable": RoleTotals(),
            "candidate": RoleTotals(),
        }
    )


def breaches(analysis: tuple[MetricAnalysis, ...]) -> str:
    failed = [a for a in analysis if not a.passed]
    return "; ".join(_breach(a) for a in failed)


def _breach(a: MetricAnalysis) -> str:
    values = f"{a.metric}: candidate {_fmt(a.candidate)} vs stable {_fmt(a.stable)}"
    if a.statistic is None:
        return f"{values} (limit {a.threshold:g})"
    return (
        f"{values}; {a.candidate_events} of {a.candidate_n} candidate requests vs {a.stable_events} of "
        f"{a.stable_n} stable, likelihood ratio {_fmt(a.statistic)} >= {a.threshold:g} "
        f"(alpha {a.alpha:g}, p {_fmt(a.p_value)})"
    )


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.4g}"
