"""serving.window: what each serving replica measured per route and version in one window."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from schemas.events import Contract, Event
from schemas.refs import RouteAlias, Tenant


class RouteVersionWindow(Contract):
    route: RouteAlias
    version_id: str
    role: Literal["stable", "candidate", "shadow"]
    count: int = Field(ge=0)
    errors: int = Field(ge=0)
    latency_p50_ms: float | None = Field(default=None, ge=0)
    latency_p95_ms: float | None = Field(default=None, ge=0)
    schema_valid_rate: float | None = Field(default=None, ge=0, le=1)
    refusal_rate: float | None = Field(default=None, ge=0, le=1)


class ServingWindow(Event):
    event_type = "serving.window"

    replica: str
    window_start: float = Field(description="Unix seconds")
    window_end: float
    tenant: Tenant
    stats: tuple[RouteVersionWindow, ...] = ()

    def entity_id(self) -> str:
        return f"{self.replica}@{self.window_end:.0f}"
