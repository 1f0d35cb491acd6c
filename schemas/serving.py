"""Serving's contracts: serving.window (what a replica measured) and the route table entries."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from schemas.envelope import Envelope
from schemas.events import Contract, Event
from schemas.refs import ModelRef, RouteAlias, Tenant
from schemas.rollout import RolloutState
from schemas.sketch import LatencySketch
from schemas.slo import GuardState, RouteObjectives


class RouteVersionWindow(Contract):
    route: RouteAlias
    version_id: str
    role: Literal["stable", "candidate", "shadow"]
    count: int = Field(ge=0)
    errors: int = Field(ge=0)
    latency_p50_ms: float | None = Field(default=None, ge=0)
    latency_p95_ms: float | None = Field(default=None, ge=0)
    latency: LatencySketch | None = Field(
        default=None, description="Answered requests' latencies, mergeable across windows and replicas"
    )
    ttft: LatencySketch | None = Field(
        default=None, description="Streamed answers' times to first token, ms (mergeable like latency)"
    )
    schema_valid_rate: float | None = Field(default=None, ge=0, le=1)
    refusal_rate: float | None = Field(default=None, ge=0, le=1)
    schema_checked: int = Field(default=0, ge=0, description="Responses that had a schema to meet")
    schema_valid: int = Field(default=0, ge=0, description="Of those, responses that met it")
    refusals: int = Field(default=0, ge=0, description="Responses that were refusals")
    agreement_checked: int = Field(default=0, ge=0, description="shadow: answers compared with stable's")
    agreements: int = Field(default=0, ge=0, description="shadow: identical to the stable answer")


class ServingWindow(Event):
    event_type = "serving.window"

    replica: str
    window_start: float = Field(description="Unix seconds")
    window_end: float
    tenant: Tenant
    stats: tuple[RouteVersionWindow, ...] = ()

    def entity_id(self) -> str:
        return f"{self.replica}@{self.window_end:.0f}"


Role = Literal["stable", "candidate", "shadow"]


class PendingEvent(Contract):
    """An event the controller decided in the same write as the route change, not yet known to be
    published (the route's outbox): whoever next writes the route publishes it first, under the
    same id, so a controller killed between its write and its publish loses no decision."""

    envelope: Envelope
    payload: dict[str, Any]


class RouteEntry(Contract):
    """One key of the `tuneline_routes` KV bucket: what a route serves, written by rollout alone.

    Every serving replica watches the bucket, so all replicas agree on every change.
    """

    route: RouteAlias
    tenant: Tenant
    stable: ModelRef | None = Field(default=None, description="What the route serves by default")
    candidate: ModelRef | None = Field(default=None, description="The version being rolled out")
    candidate_weight: float = Field(
        default=0.0, ge=0, le=100, description="Percent of live requests the candidate answers"
    )
    shadow: bool = Field(default=False, description="Mirror requests to the candidate, never return it")
    shadow_percent: float = Field(default=100.0, ge=0, le=100, description="Share of requests mirrored")
    rollback_target: ModelRef | None = Field(
        default=None, description="The previous production version, restored by `tuneline rollback`"
    )
    updated_at: float = Field(default=0.0, description="Unix seconds of the last write")
    rollout: RolloutState | None = Field(
        default=None, description="The rollout controller's own state (serving ignores it)"
    )
    released: dict[str, str] = Field(
        default_factory=dict,
        description="Versions whose gates.passed this route has acted on, and how that ended "
        "(started | promoted | rolled-back | superseded): a replayed gates.passed never rolls one "
        "out again. The controller keeps the latest 256.",
    )

    objectives: RouteObjectives | None = Field(
        default=None, description="The production version's service-level objectives (set at promotion)"
    )
    guard: GuardState | None = Field(
        default=None, description="The guardian's watch of the production version"
    )
    release_refusal_rate: float | None = Field(
        default=None, ge=0, le=1, description="The refusal rate measured at release (the last canary step)"
    )
    release_latency_p95_ms: float | None = Field(
        default=None, ge=0, description="The p95 latency measured at release (the last canary step)"
    )

    outbox: tuple[PendingEvent, ...] = Field(
        default=(), description="Events decided with the last write and not yet confirmed published"
    )

    def version_of(self, role: Role) -> ModelRef | None:
        return self.stable if role == "stable" else self.candidate


class DecisionRecord(Contract):
    """One answered request on `tuneline.decisions.<route>`: which exact tuple and settings produced it.

    Prompts and answers are not kept, only their sha256, so the log can say which weights produced an
    answer someone holds without storing users' text.
    """

    decision_id: str
    time: float = Field(description="Unix seconds the request arrived")
    replica: str
    tenant: Tenant
    route: RouteAlias
    role: Role
    version_id: str
    model: ModelRef
    backend: str
    system_fingerprint: str
    sampling: dict[str, object]
    prompt_sha256: str
    completion_sha256: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float
    status: int = Field(description="HTTP status returned (shadow: what would have been returned)")
    error: str | None = None
    shadow_of: str | None = Field(default=None, description="shadow: the decision it mirrored")
