"""Service-level objectives of a production route, and the state of their continuous watch.

Defaults follow common monitoring practice for adapted models: errors at most 0.1 %, p95 latency
under an absolute SLA, schema-valid answers at least 98 % where a schema is asked for, refusals
within a band around the rate measured at release. Each objective names what happens when it is
breached: `page` (alert only), `rollback` (back to the route's rollback target at once) or
`retrain` (resubmit the route's last approved dataset with its recipe).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from schemas.events import Contract

SloAction = Literal["page", "rollback", "retrain"]


class RouteObjectives(Contract):
    error_rate_max: float = Field(default=0.001, gt=0, lt=1, description="Share of requests that fail")
    error_action: SloAction = "rollback"
    latency_p95_ms_max: float = Field(
        default=2000.0, gt=0, description="Absolute SLA on the p95 request latency"
    )
    latency_action: SloAction = "page"
    schema_valid_min: float = Field(
        default=0.98, gt=0, lt=1, description="Share of schema-checked answers that meet the schema"
    )
    schema_action: SloAction = "rollback"
    refusal_band: float = Field(
        default=0.05, gt=0, lt=1, description="Refusal rate within this many points (as a share) of release's"
    )
    refusal_action: SloAction = "page"
    arl_days: float = Field(
        default=30.0,
        gt=0,
        description="A route meeting its objectives raises a false alarm on average no more than once in "
        "this many days, per objective (the watch's average run length)",
    )


class WatchState(Contract):
    """One objective's Shiryaev-Roberts mixture (services/rollout/watch.py) since its last reset."""

    statistics: tuple[float, ...] = Field(default=(), description="R per alternative rate")
    windows: int = 0
    events: int = 0
    requests: int = 0
