"""Merge events: an operator asks to combine versions; merging refuses incompatible inputs."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator

from schemas.events import Contract, Event
from schemas.gate_policy import GatePolicy
from schemas.refs import RouteAlias, Tenant

MergeMethod = Literal[
    "merge-into-base",
    "linear",
    "cat",
    "svd",
    "ties",
    "dare_ties",
    "dare_linear",
    "magnitude_prune",
    "uniform-soup",
    "greedy-soup",
    "quantize-int8-dynamic",
    "quantize-bnb-8bit",
    "quantize-bnb-4bit",
]


class MergeRequested(Event):
    event_type = "merge.requested"

    request_id: str = Field(min_length=1)
    tenant: Tenant
    inputs: tuple[str, ...] = Field(min_length=1, description="Model version ids")
    method: MergeMethod
    weights: tuple[float, ...] = ()
    density: float | None = Field(default=None, gt=0, le=1)
    route: RouteAlias | None = None
    rank_by: str | None = Field(
        default=None,
        description="greedy-soup: the suite whose candidate score ranks members and decides each "
        "addition (default: the members' target suite, the dataset's held-out split)",
    )
    gate_policy: GatePolicy | None = Field(
        default=None,
        description="The release gates the merged candidate is judged by (default: the policy its "
        "first input was last judged by, else the defaults)",
    )

    @model_validator(mode="after")
    def _weights_match_inputs(self) -> Self:
        if self.weights and len(self.weights) != len(self.inputs):
            raise ValueError(
                f"{len(self.weights)} weights for {len(self.inputs)} inputs; give one weight per input"
            )
        return self

    def entity_id(self) -> str:
        return self.request_id


class Mismatch(Contract):
    attribute: str
    expected: str
    found: str
    version_id: str


class MergeFailed(Event):
    event_type = "merge.failed"

    request_id: str
    error: str = Field(min_length=1)
    mismatches: tuple[Mismatch, ...] = ()

    def entity_id(self) -> str:
        return self.request_id
