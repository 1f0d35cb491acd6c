"""The guardian's judgement of a production route, window after window (no I/O).

Each objective of the route (schemas.slo.RouteObjectives) is a rate bound on one kind of event
among the production version's requests; `watch.observe` updates its statistic with the window,
and an alarm raises an alert carrying its evidence and the objective's action. After an alarm the
objective's watch starts again; the alert resolves after `RESOLVE_WINDOWS` windows in a row at or
below the objective. The caller (the controller) stores the returned state in the route's KV entry
with compare-and-set, so replicas and redeliveries act once.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from schemas.serving import RouteVersionWindow, ServingWindow
from schemas.sketch import LatencySketch
from schemas.slo import Alert, GuardState, Objective, RouteObjectives, SloAction, WatchState, severity_of
from services.core import route_watch as watch

RESOLVE_WINDOWS = 12
"""Windows in a row at or below the objective before an alert resolves (a minute at 5 s windows)."""


@dataclass(frozen=True)
class Judged:
    state: GuardState
    raised: tuple[Alert, ...] = ()
    resolved: tuple[tuple[Alert, int], ...] = ()

    @property
    def actions(self) -> tuple[SloAction, ...]:
        """What the raised alerts ask for, most drastic first (rollback, retrain, page)."""
        order = {"rollback": 0, "retrain": 1, "page": 2}
        return tuple(sorted({a.action for a in self.raised}, key=order.__getitem__))


def _totals(stats: list[RouteVersionWindow]) -> RouteVersionWindow | None:
    if not stats:
        return None
    first = stats[0]
    sketches = {}
    for name in ("latency", "ttft"):
        found = [getattr(s, name) for s in stats if getattr(s, name) is not None]
        sketches[name] = functools.reduce(LatencySketch.merged, found) if found else None
    fields = ("count", "errors", "schema_checked", "schema_valid", "refusals")
    return first.model_copy(update={**{f: sum(getattr(s, f) for s in stats) for f in fields}, **sketches})


@dataclass(frozen=True)
class Release:
    """What the production version measured at release: the references of the relative objectives."""

    refusal_rate: float | None = None
    latency_p95_ms: float | None = None


def _events(
    stat: RouteVersionWindow, objectives: RouteObjectives, release: Release
) -> dict[Objective, tuple[int, int, float, SloAction]]:
    """Per objective: (events, requests, the rate bound, its action) in this window."""
    answered = stat.count - stat.errors
    counted: dict[Objective, tuple[int, int]] = {"error_rate": (stat.errors, stat.count)}
    if stat.latency is not None and stat.latency.count:
        limit = objectives.latency_limit_ms(release.latency_p95_ms)
        counted["latency_p95"] = (stat.latency.count_above(limit), stat.latency.count)
    if stat.ttft is not None and stat.ttft.count:
        counted["ttft_p95"] = (stat.ttft.count_above(objectives.ttft_p95_ms_max), stat.ttft.count)
    if stat.schema_checked:
        counted["schema_valid_rate"] = (stat.schema_checked - stat.schema_valid, stat.schema_checked)
    if answered:
        counted["refusal_rate_high"] = (stat.refusals, answered)
        counted["refusal_rate_low"] = (answered - stat.refusals, answered)
    return {
        objective: (*counted[objective], bound, action)
        for objective, (bound, action) in objectives.bounds(release.refusal_rate).items()
        if objective in counted
    }


def judge(
    state: GuardState,
    window: ServingWindow,
    route: str,
    objectives: RouteObjectives,
    *,
    window_s: float,
    release: Release = Release(),
) -> Judged:
    """The route's guard after one serving window of its production (stable) version."""
    if window.window_end <= state.seen_windows.get(window.replica, 0.0):
        return Judged(state)  # already counted
    seen = {**state.seen_windows, window.replica: window.window_end}
    stats = [
        s
        for s in window.stats
        if s.route == route and s.role == "stable" and s.version_id == state.version_id
    ]
    stat = _totals(stats)
    if stat is None:
        return Judged(state.model_copy(update={"seen_windows": seen}))
    threshold = objectives.arl_days * 86_400 / window_s
    watches, open_alerts, healthy = dict(state.watches), dict(state.open_alerts), dict(state.healthy_windows)
    raised: list[Alert] = []
    resolved: list[tuple[Alert, int]] = []
    for objective, (events, n, bound, action) in _events(stat, objectives, release).items():
        current = watch.observe(watches.get(objective, WatchState()), events, n, bound)
        if objective in open_alerts:
            # while an alert is open its evidence is not carried over: the watch restarts each
            # window, and judges afresh once the alert resolves
            healthy[objective] = healthy.get(objective, 0) + 1 if n and events / n <= bound else 0
            if healthy[objective] >= RESOLVE_WINDOWS:
                resolved.append((open_alerts.pop(objective), healthy.pop(objective)))
            watches[objective] = watch.reset(current)
            continue
        if watch.alarmed(current, threshold):
            alert = Alert(
                objective=objective,
                severity=severity_of(action),
                action=action,
                version_id=state.version_id,
                value=current.events / current.requests if current.requests else 0.0,
                bound=bound,
                events=current.events,
                requests=current.requests,
                windows=current.windows,
                window_s=window_s,
                statistic=watch.statistic(current),
                threshold=threshold,
            )
            raised.append(alert)
            open_alerts[objective] = alert
            healthy[objective] = 0
            current = watch.reset(current)
        watches[objective] = current
    new = state.model_copy(
        update={
            "watches": watches,
            "open_alerts": open_alerts,
            "healthy_windows": healthy,
            "seen_windows": seen,
            "window_s": window_s,
        }
    )
    return Judged(new, tuple(raised), tuple(resolved))
