"""Rollout events: phases of a shadow + canary rollout and operators' requests to steer it."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from schemas.events import Contract, Event
from schemas.refs import RouteAlias, Tenant

Phase = Literal["shadow", "canary", "promoted", "rolled-back", "paused"]


class MetricAnalysis(Contract):
    metric: str
    stable: float | None
    candidate: float | None
    threshold: float
    passed: bool


class RolloutPolicy(Contract):
    """How a rollout proceeds and what counts as a breach (`TUNELINE_ROLLOUT_POLICY__<FIELD>`)."""

    steps: tuple[float, ...] = Field(
        default=(1.0, 10.0, 50.0, 100.0), min_length=1, description="Canary traffic percents, in order"
    )
    shadow_percent: float = Field(default=100.0, gt=0, le=100, description="Share of requests mirrored")
    shadow_min_requests: int = Field(default=20, ge=1, description="Mirrored requests before canary")
    min_requests: int = Field(default=20, ge=1, description="Candidate requests each canary step holds for")
    min_seconds: float = Field(default=60.0, ge=0, description="Seconds each phase holds for, at least")
    analysis_min_requests: int = Field(
        default=5, ge=1, description="Candidate requests before a breach can be called"
    )
    max_error_rate_delta: float = Field(
        default=0.02, ge=0, le=1, description="Candidate error rate may exceed stable's by this much"
    )
    max_latency_p95_ratio: float = Field(default=1.15, gt=0, description="Candidate p95 ÷ stable p95")
    latency_slack_ms: float = Field(
        default=25.0, ge=0, description="A p95 ratio breach also needs the p95s this many ms apart"
    )
    max_schema_valid_drop: float = Field(
        default=0.0, ge=0, le=1, description="Schema-valid rate may be lower than stable's by this much"
    )
    max_refusal_rate_delta: float = Field(
        default=0.05, ge=0, le=1, description="|candidate refusal rate − stable's| allowed"
    )
    min_shadow_agreement: float | None = Field(
        default=None, ge=0, le=1, description="Shadow answers identical to stable's, at least (None: report)"
    )

    @model_validator(mode="after")
    def _steps_end_at_100(self) -> RolloutPolicy:
        if list(self.steps) != sorted(self.steps) or self.steps[-1] != 100.0:
            raise ValueError(f"rollout steps {list(self.steps)}: give increasing percents ending at 100")
        return self


class RoleTotals(Contract):
    """What serving measured for one role of a route since the current phase began."""

    count: int = 0
    errors: int = 0
    latency_p95_weighted: float = Field(default=0.0, description="Σ window p95 × window count")
    latency_counted: int = 0
    schema_checked: int = 0
    schema_valid: int = 0
    refusals: int = 0
    agreement_checked: int = 0
    agreements: int = 0

    @property
    def latency_p95_ms(self) -> float | None:
        return self.latency_p95_weighted / self.latency_counted if self.latency_counted else None


class RolloutState(Contract):
    """The controller's state, kept in the route's KV entry so a restarted controller resumes."""

    rollout_id: str
    candidate_version: str
    stable_version: str | None
    origin_event_id: str = Field(description="ce-id of the gates.passed that started it")
    correlation_id: str
    phase: Literal["shadow", "canary"] = "shadow"
    step_index: int = Field(default=-1, description="-1 in shadow, then the index into policy.steps")
    step_started_at: float
    paused: bool = False
    policy: RolloutPolicy = RolloutPolicy()
    stable: RoleTotals = RoleTotals()
    candidate: RoleTotals = RoleTotals()
    seen_windows: dict[str, float] = Field(
        default_factory=dict, description="replica → last window_end counted (no double counting)"
    )
    last_analysis: tuple[MetricAnalysis, ...] = ()

    @property
    def traffic_percent(self) -> float:
        return 0.0 if self.phase == "shadow" else self.policy.steps[self.step_index]


class _RolloutEvent(Event):
    route: RouteAlias
    tenant: Tenant
    candidate_version: str
    stable_version: str | None = None

    def entity_id(self) -> str:
        return self.route


class RolloutStarted(_RolloutEvent):
    event_type = "rollout.started"

    rollout_id: str


class RolloutStep(_RolloutEvent):
    event_type = "rollout.step"

    rollout_id: str
    phase: Phase
    traffic_percent: float = Field(ge=0, le=100)
    analysis: tuple[MetricAnalysis, ...] = ()


class RolloutPromoted(_RolloutEvent):
    event_type = "rollout.promoted"

    rollout_id: str
    rollback_target: str | None = Field(default=None, description="Previous production version")


class RolloutRolledBack(_RolloutEvent):
    event_type = "rollout.rolled-back"

    rollout_id: str
    reason: str
    analysis: tuple[MetricAnalysis, ...] = ()


class RolloutPaused(_RolloutEvent):
    event_type = "rollout.paused"

    rollout_id: str
    reason: str = ""


class _OperatorRequest(Event):
    route: RouteAlias
    tenant: Tenant
    requested_by: str = "operator"
    reason: str = ""

    def entity_id(self) -> str:
        return self.route


class RolloutPauseRequested(_OperatorRequest):
    event_type = "rollout.pause-requested"


class RolloutResumeRequested(_OperatorRequest):
    event_type = "rollout.resume-requested"


class RolloutAbortRequested(_OperatorRequest):
    event_type = "rollout.abort-requested"


class RolloutPromoteRequested(_OperatorRequest):
    event_type = "rollout.promote-requested"


class RolloutRollbackRequested(_OperatorRequest):
    """Return the route to its recorded rollback target (after a promotion), or abort a live rollout."""

    event_type = "rollout.rollback-requested"
