"""Drift: how far a production version's scores moved since its release evaluation. Plain code.

The release evaluation (the first the registry recorded for the version) is the reference; the
version's own gate policy says how many points a metric may move (`drift_max_points`). Latency
is left out: it depends on the machine more than on the model.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.evaluation import SuiteDelta, SuiteResult
from schemas.gate_policy import GatePolicy
from schemas.queries import EvalDetail

DRIFT_METRICS = {"safety": ("refusal_rate_harmful", "refusal_rate_benign"), "memorization": ("leak_rate",)}
"""The metrics watched per suite kind; every other kind is watched on its `score`."""


def _watched(result: SuiteResult) -> dict[str, float]:
    candidate = next((s.metrics for s in result.scores if s.arm == "candidate"), {})
    names = DRIFT_METRICS.get(result.kind, ("score",))
    return {name: candidate[name] for name in names if name in candidate}


def drift_deltas(
    reference: list[SuiteResult], current: list[SuiteResult], max_points: float
) -> list[SuiteDelta]:
    """Suite metrics of the production version that moved more than `max_points` since release."""
    before = {r.suite.name: r for r in reference}
    deltas = []
    for result in current:
        old = before.get(result.suite.name)
        if old is None or result.kind == "latency":
            continue
        old_metrics = _watched(old)
        for metric, value in _watched(result).items():
            if metric not in old_metrics:
                continue
            delta = value - old_metrics[metric]
            if abs(delta) > max_points:
                deltas.append(
                    SuiteDelta(
                        suite=result.suite,
                        reference=old_metrics[metric],
                        current=value,
                        delta=delta,
                        threshold=max_points,
                        metric=metric,
                    )
                )
    return deltas


@dataclass(frozen=True)
class Release:
    """A production version's release evaluation and the gate policy it was judged under."""

    policy: GatePolicy
    reference: list[SuiteResult]

    @classmethod
    def of(cls, evals: EvalDetail) -> Release:
        """From the registry's record of the version (it must hold at least one evaluation)."""
        if not evals.evaluations:
            raise ValueError(f"{evals.version_id} has no recorded evaluation to compare with")
        policy = GatePolicy.model_validate(evals.decisions[-1].policy) if evals.decisions else GatePolicy()
        return cls(policy, [SuiteResult.model_validate(s) for s in evals.evaluations[0].suites])

    def deltas(self, current: list[SuiteResult]) -> list[SuiteDelta]:
        return drift_deltas(self.reference, current, self.policy.drift_max_points)
