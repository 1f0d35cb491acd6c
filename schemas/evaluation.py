"""Evaluation events: suite results, gate verdicts, drift checks."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from schemas.events import Contract, Event
from schemas.gate_policy import GatePolicy
from schemas.refs import ArtifactRef, EvalSuiteRef, ModelRef, RouteAlias, Tenant

Arm = Literal["candidate", "baseline", "few-shot", "production"]


class ArmScore(Contract):
    arm: Arm
    version_id: str
    metrics: dict[str, float]


class SuiteResult(Contract):
    suite: EvalSuiteRef
    kind: Literal["target", "capability", "safety", "format", "memorization", "latency", "custom"]
    items: int = Field(ge=0)
    scores: tuple[ArmScore, ...] = Field(min_length=1)


class EvalCompleted(Event):
    event_type = "eval.completed"

    candidate: ModelRef
    tenant: Tenant
    route: RouteAlias | None = None
    suites: tuple[SuiteResult, ...] = Field(min_length=1)
    report: ArtifactRef | None = None

    def entity_id(self) -> str:
        return self.candidate.version_id()


class GateResult(Contract):
    gate: str
    value: float
    threshold: float
    comparator: Literal[">=", "<=", "=="]
    statistic: str | None = Field(default=None, description="e.g. mcnemar-exact")
    p_value: float | None = Field(default=None, ge=0, le=1)
    ci_low: float | None = None
    ci_high: float | None = None
    passed: bool


class _GateVerdict(Event):
    candidate: ModelRef
    tenant: Tenant
    route: RouteAlias | None = None
    policy: GatePolicy
    gates: tuple[GateResult, ...] = Field(min_length=1)
    card: ArtifactRef | None = Field(default=None, description="The adaptation card")

    def entity_id(self) -> str:
        return self.candidate.version_id()


class GatesPassed(_GateVerdict):
    event_type = "gates.passed"


class GatesFailed(_GateVerdict):
    event_type = "gates.failed"


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


class DriftDetected(Event):
    event_type = "drift.detected"

    route: RouteAlias
    tenant: Tenant
    production_version: str
    deltas: tuple[SuiteDelta, ...] = Field(min_length=1)

    def entity_id(self) -> str:
        return self.route
