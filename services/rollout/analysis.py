"""Rollout analysis: fold serving.window stats into a phase's totals, compare, and decide. No I/O."""

from __future__ import annotations

from typing import Literal

from schemas.rollout import MetricAnalysis, RoleTotals, RolloutPolicy, RolloutState
from schemas.serving import RouteVersionWindow, ServingWindow

Action = Literal["hold", "advance", "promote", "rollback"]


def _add(totals: RoleTotals, stat: RouteVersionWindow) -> RoleTotals:
    answered = stat.count - stat.errors
    p95 = stat.latency_p95_ms
    return totals.model_copy(
        update={
            "count": totals.count + stat.count,
            "errors": totals.errors + stat.errors,
            "latency_p95_weighted": totals.latency_p95_weighted
            + (p95 * answered if p95 is not None else 0.0),
            "latency_counted": totals.latency_counted + (answered if p95 is not None else 0),
            "schema_checked": totals.schema_checked + stat.schema_checked,
            "schema_valid": totals.schema_valid + stat.schema_valid,
            "refusals": totals.refusals + stat.refusals,
            "agreement_checked": totals.agreement_checked + stat.agreement_checked,
            "agreements": totals.agreements + stat.agreements,
        }
    )


def accumulate(state: RolloutState, route: str, window: ServingWindow) -> RolloutState:
    """The state with this window's stats for `route` counted once (per replica, by window end)."""
    if window.window_end <= state.seen_windows.get(window.replica, 0.0):
        return state  # a redelivered or older window: already counted
    if window.window_end <= state.step_started_at:
        return state.model_copy(
            update={"seen_windows": {**state.seen_windows, window.replica: window.window_end}}
        )
    stable, candidate = state.stable, state.candidate
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
            "stable": stable,
            "candidate": candidate,
            "seen_windows": {**state.seen_windows, window.replica: window.window_end},
        }
    )


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _error_rate(state: RolloutState) -> MetricAnalysis:
    stable, cand = state.stable, state.candidate
    stable_errors, cand_errors = _rate(stable.errors, stable.count), _rate(cand.errors, cand.count)
    limit = (stable_errors or 0.0) + state.policy.max_error_rate_delta
    return MetricAnalysis(
        metric="error_rate",
        stable=stable_errors,
        candidate=cand_errors,
        threshold=round(limit, 6),
        passed=cand_errors is None or cand_errors <= limit,
    )


def _latency(state: RolloutState) -> MetricAnalysis:
    policy, stable_p95, cand_p95 = state.policy, state.stable.latency_p95_ms, state.candidate.latency_p95_ms
    ratio = cand_p95 / stable_p95 if stable_p95 and cand_p95 is not None else None
    return MetricAnalysis(
        metric="latency_p95_ratio",
        stable=stable_p95,
        candidate=cand_p95,
        threshold=policy.max_latency_p95_ratio,
        # shadow copies run after the live answer, in their own batches: their latency is
        # reported, not judged; canary requests share batches with stable ones and are judged
        passed=state.phase == "shadow"
        or ratio is None
        or ratio <= policy.max_latency_p95_ratio
        or (cand_p95 or 0.0) - (stable_p95 or 0.0) <= policy.latency_slack_ms,
    )


def _schema_valid(state: RolloutState) -> MetricAnalysis:
    stable, cand = state.stable, state.candidate
    stable_valid = _rate(stable.schema_valid, stable.schema_checked)
    cand_valid = _rate(cand.schema_valid, cand.schema_checked)
    floor = (stable_valid if stable_valid is not None else 1.0) - state.policy.max_schema_valid_drop
    return MetricAnalysis(
        metric="schema_valid_rate",
        stable=stable_valid,
        candidate=cand_valid,
        threshold=round(floor, 6),
        passed=cand_valid is None or cand_valid >= floor,
    )


def _refusals(state: RolloutState) -> MetricAnalysis:
    stable, cand, band = state.stable, state.candidate, state.policy.max_refusal_rate_delta
    stable_refusals = _rate(stable.refusals, stable.count - stable.errors)
    cand_refusals = _rate(cand.refusals, cand.count - cand.errors)
    return MetricAnalysis(
        metric="refusal_rate_delta",
        stable=stable_refusals,
        candidate=cand_refusals,
        threshold=band,
        passed=cand_refusals is None
        or stable_refusals is None
        or abs(cand_refusals - stable_refusals) <= band,
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
    """Candidate against stable on every metric the policy bounds; a metric with no data passes."""
    metrics = [_error_rate, _latency, _schema_valid, _refusals]
    if state.phase == "shadow":
        metrics.append(_shadow_agreement)
    return tuple(metric(state) for metric in metrics)


def required_requests(policy: RolloutPolicy, state: RolloutState) -> int:
    return policy.shadow_min_requests if state.phase == "shadow" else policy.min_requests


def decide(state: RolloutState, now: float) -> tuple[Action, tuple[MetricAnalysis, ...]]:
    """Roll back on any breach once enough candidate requests were seen; else advance when held."""
    analysis = analyse(state)
    policy = state.policy
    if state.candidate.count >= policy.analysis_min_requests and not all(a.passed for a in analysis):
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
    return "; ".join(
        f"{a.metric}: candidate {_fmt(a.candidate)} vs stable {_fmt(a.stable)} (limit {a.threshold:g})"
        for a in failed
    )


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.4g}"
