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

from schemas.events import Contract, Event
from schemas.refs import RouteAlias, Tenant

SloAction = Literal["page", "rollback", "retrain"]
Trigger = Literal["slo", "drift", "incident", "operator"]


def severity_of(action: SloAction) -> Literal["warning", "critical"]:
    """An alert is critical when its action rolls the route back, a warning otherwise."""
    return "critical" if action == "rollback" else "warning"


Objective = Literal[
    "error_rate",
    "latency_p95",
    "ttft_p95",
    "schema_valid_rate",
    "refusal_rate_high",
    "refusal_rate_low",
    "drift",
]


class RouteObjectives(Contract):
    error_rate_max: float = Field(default=0.001, gt=0, lt=1, description="Share of requests that fail")
    error_action: SloAction = "rollback"
    latency_p95_ms_max: float = Field(
        default=2000.0, gt=0, description="Absolute SLA on the p95 request latency"
    )
    latency_release_ratio: float = Field(
        default=1.15,
        gt=1,
        description="The p95 latency also stays within this multiple of the p95 measured at release "
        "(the candidate's over its last canary step)",
    )
    latency_action: SloAction = "page"
    ttft_p95_ms_max: float = Field(
        default=1000.0, gt=0, description="SLA on the p95 time to first token of streamed answers"
    )
    ttft_action: SloAction = "page"
    schema_valid_min: float = Field(
        default=0.98, gt=0, lt=1, description="Share of schema-checked answers that meet the schema"
    )
    schema_action: SloAction = "rollback"
    refusal_band: float = Field(
        default=0.05, gt=0, lt=1, description="Refusal rate within this many points (as a share) of release's"
    )
    refusal_action: SloAction = "page"
    drift_action: SloAction = Field(
        default="retrain",
        description="What `drift.detected` on the production version does (a suite score moved more than "
        "the gate policy's drift_max_points since release)",
    )
    incident_action: SloAction = Field(
        default="rollback",
        description="What a critical incident reported on the route does (common practice: any confirmed "
        "jailbreak rolls back at once)",
    )
    arl_days: float = Field(
        default=30.0,
        gt=0,
        description="A route meeting its objectives raises a false alarm on average no more than once in "
        "this many days, per objective (the watch's average run length)",
    )

    def bounds(self, release_refusal_rate: float | None) -> dict[Objective, tuple[float, SloAction]]:
        """Each objective as a rate bound on its events, with its action. The latency SLA bounds
        the share of requests slower than it (a p95 within the SLA: at most 5 %); the refusal band
        is two bounds, on refusals above it and on answers below it."""
        found: dict[Objective, tuple[float, SloAction]] = {
            "error_rate": (self.error_rate_max, self.error_action),
            "latency_p95": (0.05, self.latency_action),
            "ttft_p95": (0.05, self.ttft_action),
            "schema_valid_rate": (1 - self.schema_valid_min, self.schema_action),
        }
        if release_refusal_rate is not None:
            high = release_refusal_rate + self.refusal_band
            low = release_refusal_rate - self.refusal_band
            if high < 1:
                found["refusal_rate_high"] = (high, self.refusal_action)
            if low > 0:
                found["refusal_rate_low"] = (1 - low, self.refusal_action)
        return found

    def latency_limit_ms(self, release_p95_ms: float | None) -> float:
        """The p95 latency a request is held to: the SLA, and within `latency_release_ratio` of the
        p95 measured at release when there is one."""
        if release_p95_ms is None or release_p95_ms <= 0:
            return self.latency_p95_ms_max
        return min(self.latency_p95_ms_max, self.latency_release_ratio * release_p95_ms)


class WatchState(Contract):
    """One objective's Shiryaev-Roberts mixture (services/core/route_watch.py) since its last reset."""

    statistics: tuple[float, ...] = Field(default=(), description="R per alternative rate")
    windows: int = 0
    events: int = 0
    requests: int = 0

    @property
    def statistic(self) -> float:
        """The mixture: the average of the per-alternative statistics (0 before any window)."""
        return sum(self.statistics) / len(self.statistics) if self.statistics else 0.0


class Alert(Contract):
    """One objective's breach as the watch called it: what, how much, on what evidence."""

    objective: Objective
    severity: Literal["warning", "critical"] = Field(
        description="critical: the objective's action rolls back"
    )
    action: SloAction
    version_id: str = Field(description="The production version that breached")
    value: float = Field(description="The observed rate over the windows the watch read (events / requests)")
    bound: float = Field(description="The objective, as a rate")
    events: int
    requests: int
    windows: int
    window_s: float = Field(description="Seconds per serving window")
    statistic: float = Field(description="The Shiryaev-Roberts mixture when it alarmed")
    threshold: float = Field(
        description="Alarm threshold A: the average run length to a false alarm, windows"
    )
    method: str = (
        "Shiryaev-Roberts mixture over rates 2-20x the objective; ARL to false alarm >= threshold windows"
    )


class GuardState(Contract):
    """A production route's watch, kept in its route entry: each objective's statistic, the alerts
    open, and the windows already counted per replica (a redelivered window counts once)."""

    version_id: str = Field(description="The version watched; a new production version starts afresh")
    watches: dict[str, WatchState] = Field(default_factory=dict)
    open_alerts: dict[str, Alert] = Field(default_factory=dict)
    healthy_windows: dict[str, int] = Field(
        default_factory=dict, description="Windows in a row at or below the objective, per open alert"
    )
    seen_windows: dict[str, float] = Field(default_factory=dict)
    window_s: float = Field(default=0.0, ge=0, description="Seconds per serving window, as last seen")


class _RouteEvent(Event):
    """An event about one route: its alias is the event's subject."""

    route: RouteAlias
    tenant: Tenant

    def entity_id(self) -> str:
        return self.route


class RouteAlertRaised(_RouteEvent):
    event_type = "route.alert-raised"

    alert: Alert


class RouteAlertResolved(_RouteEvent):
    event_type = "route.alert-resolved"

    alert: Alert
    healthy_windows: int = Field(description="Windows in a row at or below the objective before resolving")


class IncidentReported(_RouteEvent):
    """An operator's report of trouble on a route (only the platform operator may publish it)."""

    event_type = "incident.reported"

    severity: Literal["info", "warning", "critical"]
    reason: str = Field(min_length=1, description="What happened, for the record")
    reported_by: str = "operator"


class RetrainRequested(_RouteEvent):
    """Train the route's next generation: curation resubmits the route's last approved dataset with
    its recipe (a `dataset.approved` caused by this event), and training starts a run on it."""

    event_type = "retrain.requested"

    version_id: str | None = Field(default=None, description="The production version that asked for it")
    trigger: Trigger
    reason: str = Field(min_length=1)
    requested_by: str = "guardian"
