"""candidate.ready: a trained or merged model version, ready for evaluation."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from schemas.checkpoints import CheckpointChoice
from schemas.events import Event
from schemas.gate_policy import GatePolicy
from schemas.refs import Lineage, ModelRef, RouteAlias, Tenant


class CandidateReady(Event):
    event_type = "candidate.ready"

    candidate: ModelRef
    lineage: Lineage
    produced_by: Literal["training", "merging"]
    tenant: Tenant
    route: RouteAlias | None = Field(default=None, description="Route it would be rolled out on")
    gate_policy: GatePolicy = GatePolicy()
    checkpoint_choice: CheckpointChoice | None = Field(
        default=None,
        description="The run's checkpoints screened by guardrails and the one chosen (recipe opt-in)",
    )

    def entity_id(self) -> str:
        return self.candidate.version_id()
