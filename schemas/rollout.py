"""Rollout events: phases of a shadow + canary rollout and operators' requests to steer it."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from schemas.events import Contract, Event
from schemas.refs import RouteAlias, Tenant

Phase = Literal["shadow", "canary", "promoted", "rolled-back", "paused"]


class MetricAnalysis(Contract):
    metric: str
    stable: float | None
    candidate: float | None
    threshold: float
    passed: bool


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
