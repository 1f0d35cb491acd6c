"""Rollout events: phases of a shadow + canary rollout and operators' requests to steer it."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from schemas.events import Contract, Event
from schemas.refs import RouteAlias, Tenant
from schemas.sketch import LatencySketch
from schemas.slo import RouteObjectives

Phase = Literal["shadow", "canary", "promoted", "rolled-back", "paused"]


Judgement = Literal["insufficient-data", "no-evidence-of-harm", "breach", "reported"]


class SequentialTest(Contract):
    """A mixture sequential probability ratio test on the candidate's share of one kind of event
    (errors, refusals, schema-invalid answers, slow requests), conditional on each window's
    exposure; see services/rollout/sequential.py. Kept across the rollout's phases."""

    log_lr: tuple[float, ...] = Field(default=(), description="log likelihood ratio per alternative ρ")
    statistic: float = Field(default=1.0, ge=0, description="The mixture likelihood ratio now")
    max_statistic: float = Field(default=1.0, ge=0, description="Its largest value so far")
    candidate_events: int = 0
    candidate_n: int = 0
    stable_events: int = 0
    stable_n: int = 0
    looks: int = Field(default=0, description="Windows looked at")


class MetricAnalysis(Contract):
    """One metric's verdict: the values, the test, its sample and what it can see."""

    metric: str
    stable: float | None
    candidate: float | None
    threshold: float
    passed: bool
    judgement: Judgement = Field(
        default="reported",
        description="insufficient-data: fewer candidate requests than the step needs (not a pass); "
        "no-evidence-of-harm: the test has not called a breach; breach; reported: shown, not judged",
    )
    method: str = ""
    alpha: float | None = Field(default=None, description="This metric's share of the false-alarm rate")
    statistic: float | None = Field(default=None, description="Mixture likelihood ratio (breach at 1/alpha)")
    p_value: float | None = Field(default=None, description="Always-valid p-value: 1 / the largest statistic")
    candidate_n: int = Field(default=0, description="Candidate requests the test has seen")
    stable_n: int = 0
    candidate_events: int = 0
    stable_events: int = 0
    detects: str = Field(default="", description="What the test can see at this exposure")


class RolloutPolicy(Contract):
    """How a rollout proceeds and what counts as a breach (`TUNELINE_ROLLOUT_POLICY__<FIELD>`)."""

    steps: tuple[float, ...] = Field(
        default=(1.0, 10.0, 25.0, 50.0, 100.0), min_length=1, description="Canary traffic percents, in order"
    )
    shadow_percent: float = Field(default=100.0, gt=0, le=100, description="Share of requests mirrored")
    shadow_min_requests: int = Field(
        default=5000,
        ge=1,
        description="Mirrored requests before canary: 5,000 let the error test see a 1 % error rate against "
        "stable's 0.1 % before any user gets the candidate (bench/canary.py); lower it on quiet routes, "
        "and the analysis states how many events its test still needs",
    )
    min_requests: int = Field(default=20, ge=1, description="Candidate requests each canary step holds for")
    min_seconds: float = Field(default=60.0, ge=0, description="Seconds each phase holds for, at least")
    false_alarm_rate: float = Field(
        default=0.01,
        gt=0,
        lt=1,
        description="Chance that a candidate no worse than stable is rolled back, over the whole rollout "
        "and every judged metric (split equally among them; sequential tests, so looking after every "
        "window does not inflate it)",
    )
    max_latency_p95_ratio: float = Field(
        default=1.15, gt=0, description="Candidate latency may be this many times stable's"
    )
    latency_slack_ms: float = Field(
        default=25.0, ge=0, description="... or this many ms slower, whichever is more"
    )
    latency_quantile: float = Field(
        default=0.75,
        gt=0,
        lt=1,
        description="A request is slow above stable's latency at this quantile (earlier windows); the "
        "latency test compares the arms' shares of slow requests",
    )
    objectives: RouteObjectives = Field(
        default_factory=RouteObjectives,
        description="What the guardian holds the route to after promotion (a recipe's gates.objectives "
        "replaces these for its route)",
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
    latency: LatencySketch = Field(default_factory=LatencySketch, description="Answered requests' latencies")
    schema_checked: int = 0
    schema_valid: int = 0
    refusals: int = 0
    agreement_checked: int = 0
    agreements: int = 0

    @property
    def latency_p95_ms(self) -> float | None:
        """The true p95 over every window and replica (within the sketch's 1 %)."""
        return self.latency.quantile(0.95)


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
    tests: dict[str, SequentialTest] = Field(
        default_factory=dict, description="metric → its sequential test, over the whole rollout"
    )
    latency_reference: LatencySketch = Field(
        default_factory=LatencySketch, description="Stable's latencies in the windows counted so far"
    )

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
