"""Evaluation events: suite results, gate verdicts, drift checks."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from schemas.events import Contract, Event
from schemas.gate_policy import GatePolicy
from schemas.refs import ArtifactRef, EvalSuiteRef, ModelRef, RouteAlias, Tenant

Arm = Literal["candidate", "baseline", "few-shot", "production", "parent"]


class HypothesisTest(Contract):
    """A gate's test on paired per-item outcomes: what it tests, how, on how many items, and what
    it could have detected. Effects are in points (percentage points, or scores in [0, 1] times 100)."""

    hypothesis: Literal["non-inferiority", "superiority"]
    method: str = Field(description="e.g. Tango score test, exact McNemar, paired bootstrap")
    n: int = Field(ge=0, description="Paired items")
    alpha: float = Field(gt=0, lt=1, description="One-sided significance level")
    margin: float = Field(
        ge=0, description="Non-inferiority: the largest loss allowed; superiority: the gain to beat"
    )
    estimate: float = Field(description="candidate − reference")
    bound: float = Field(description="One-sided (1 - alpha) lower confidence bound of candidate − reference")
    p_value: float = Field(ge=0, le=1)
    mde: float = Field(ge=0, description="Smallest effect detectable at `power`, at this n and spread")
    power: float = Field(default=0.8, gt=0, lt=1)
    underpowered: bool = Field(description="Non-inferiority: the margin is below the MDE")
    rejected: bool = Field(description="H0 rejected at alpha (the test's own verdict)")


class ArmScore(Contract):
    arm: Arm
    version_id: str
    metrics: dict[str, float]


class Comparison(Contract):
    """The candidate against one other arm on one suite, with paired statistics over the same items."""

    metric: str = Field(description="e.g. score, refusal_rate_harmful, p95_ms_per_token")
    reference: Arm
    candidate_value: float
    reference_value: float
    delta: float = Field(description="candidate − reference, in the metric's unit (points for rates)")
    statistic: str | None = Field(default=None, description="mcnemar-exact | bootstrap | none")
    p_value: float | None = Field(default=None, ge=0, le=1)
    ci_low: float | None = Field(default=None, description="Bootstrap CI of the delta")
    ci_high: float | None = None
    discordant: tuple[int, int] | None = Field(
        default=None,
        description="McNemar's discordant pairs: (only the reference right, only the candidate right)",
    )
    reference_version: str | None = Field(default=None, description="The reference arm's version id")
    test: HypothesisTest | None = Field(default=None, description="The gate's test on this comparison")


class SuiteResult(Contract):
    suite: EvalSuiteRef
    kind: Literal[
        "target", "capability", "safety", "format", "memorization", "latency", "quant-tail", "custom"
    ]
    items: int = Field(ge=0)
    scores: tuple[ArmScore, ...] = Field(min_length=1)
    comparisons: tuple[Comparison, ...] = ()


class EvalCompleted(Event):
    event_type = "eval.completed"

    candidate: ModelRef
    tenant: Tenant
    route: RouteAlias | None = None
    suites: tuple[SuiteResult, ...] = Field(min_length=1)
    report: ArtifactRef | None = None

    def entity_id(self) -> str:
        return self.candidate.version_id()


class EvalFailed(Event):
    """The candidate could not be evaluated at all (not a gate verdict): bad base, missing data."""

    event_type = "eval.failed"

    candidate: ModelRef
    tenant: Tenant
    route: RouteAlias | None = None
    reason: str = Field(description="e.g. base-mismatch, candidate-incompatible, dataset-unavailable")
    error: str

    def entity_id(self) -> str:
        return self.candidate.version_id()


class GateResult(Contract):
    """One gate. A tested gate's value is the confidence bound its test decides on (the loss's
    upper bound for non-inferiority, the gain's lower bound for superiority), never the point
    estimate; `test` says how it was obtained. Count and ratio gates (memorization, latency) have
    no test."""

    gate: str
    value: float
    threshold: float
    comparator: Literal[">=", "<=", "=="]
    statistic: str | None = Field(default=None, description="e.g. mcnemar-exact")
    p_value: float | None = Field(default=None, ge=0, le=1)
    ci_low: float | None = None
    ci_high: float | None = None
    reference: str | None = Field(default=None, description="What it is judged against: base, parent mv-…")
    test: HypothesisTest | None = None
    underpowered: bool = Field(
        default=False, description="The suite cannot see the margin; blocks unless the policy accepts it"
    )
    passed: bool


class _GateVerdict(Event):
    candidate: ModelRef
    tenant: Tenant
    route: RouteAlias | None = None
    policy: GatePolicy
    gates: tuple[GateResult, ...] = Field(min_length=1)
    card: ArtifactRef | None = Field(default=None, description="The adaptation card")
    notes: tuple[str, ...] = Field(default=(), description="Gates that did not apply, and why")

    def entity_id(self) -> str:
        return self.candidate.version_id()


class GatesPassed(_GateVerdict):
    """Every gate passed: the verdict that starts a rollout. One failed gate makes it invalid."""

    event_type = "gates.passed"

    @model_validator(mode="after")
    def _every_gate_passed(self) -> GatesPassed:
        failed = [g.gate for g in self.gates if not g.passed]
        if failed:
            raise ValueError(
                f"gates.passed names failed gates ({', '.join(failed)}): a verdict with any failed "
                "gate is gates.failed"
            )
        return self


class GatesFailed(_GateVerdict):
    """At least one gate failed."""

    event_type = "gates.failed"

    @model_validator(mode="after")
    def _a_gate_failed(self) -> GatesFailed:
        if all(g.passed for g in self.gates):
            raise ValueError("gates.failed names no failed gate: a verdict where all passed is gates.passed")
        return self


class DriftCheckRequested(Event):
    event_type = "drift.check-requested"

    route: RouteAlias
    tenant: Tenant
    requested_by: str = "scheduler"

    def entity_id(self) -> str:
        return self.route


class SuiteDelta(Contract):
    suite: EvalSuiteRef
    reference: float
    current: float
    delta: float
    threshold: float
    metric: str = "score"


class DriftDetected(Event):
    event_type = "drift.detected"

    route: RouteAlias
    tenant: Tenant
    production_version: str
    deltas: tuple[SuiteDelta, ...] = Field(min_length=1)

    def entity_id(self) -> str:
        return self.route
