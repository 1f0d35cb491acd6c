"""A production route against its objectives, as the operator reads it (`tuneline routes health`,
the dashboard's overview): each objective's bound, the rate since its watch last started, the
error budget left and any open alert. Read from the route's entry, where the guardian keeps its watch.
"""

from __future__ import annotations

from typing import Any

from schemas.serving import RouteEntry
from schemas.slo import RouteObjectives
from services.core.route_watch import windows_to_alarm

DETECT_LIMIT = 10_000  # windows: beyond this a breach is stated as not detectable at this traffic


def breach_of(bound: float) -> float:
    """The breach an objective states it detects: ten times a rare-event bound (errors 0.1 % → 1 %),
    or a fifth of the way from a common-event bound to 1 (refusals 15 % → 32 %)."""
    return min(10 * bound, bound + 0.2 * (1 - bound))


def detection(
    bound: float, requests_per_window: float, objectives: RouteObjectives, window_s: float
) -> dict[str, Any]:
    """What the watch states it catches at the route's own traffic: the breach rate and the windows
    (and seconds) until its alarm along the mean path (route_watch.windows_to_alarm)."""
    rate = breach_of(bound)
    n = round(requests_per_window)
    if n < 1 or window_s <= 0:
        return {"rate": rate, "windows": None, "seconds": None}
    threshold = objectives.arl_days * 86_400 / window_s
    windows = windows_to_alarm(bound, rate, n, threshold, limit=DETECT_LIMIT)
    return {"rate": rate, "windows": windows, "seconds": windows * window_s if windows else None}


def health_rows(entry: RouteEntry) -> list[dict[str, Any]]:
    """Each objective of a production route: its bound, the rate since the watch last started (or,
    while an alert is open, over the alert's evidence), the error budget left
    (1 - events / (bound x requests)), the statistic and any open alert."""
    if entry.guard is None or entry.objectives is None:
        return []
    rows = []
    for objective, (bound, action) in entry.objectives.bounds(entry.release_refusal_rate).items():
        watch = entry.guard.watches.get(objective)
        alert = entry.guard.open_alerts.get(objective)
        # while an alert is open its watch restarts every window: the alert's evidence is the rate
        source: Any = watch if watch is not None and watch.requests else alert
        requests = source.requests if source is not None else 0
        events = source.events if source is not None else 0
        rows.append(
            {
                "objective": objective,
                "meaning": _meaning(objective, bound, entry),
                "bound": bound,
                "action": action,
                "rate": events / requests if requests else None,
                "events": events,
                "requests": requests,
                "windows": source.windows if source is not None else 0,
                "budget_left": 1 - events / (bound * requests) if requests else None,
                "statistic": source.statistic if source is not None else 0.0,
                "alert": alert.model_dump(mode="json") if alert else None,
                "detects": detection(
                    bound,
                    requests / source.windows if source is not None and source.windows else 0,
                    entry.objectives,
                    entry.guard.window_s,
                ),
            }
        )
    drift = entry.guard.open_alerts.get("drift")
    rows.append(
        {
            "objective": "drift",
            "meaning": "suite scores within the gate policy's drift_max_points of release",
            "bound": drift.bound if drift else None,
            "action": entry.objectives.drift_action,
            "rate": drift.value if drift else None,
            "events": drift.events if drift else 0,
            "requests": 0,
            "windows": 0,
            "budget_left": None,
            "statistic": drift.statistic if drift else 0.0,
            "alert": drift.model_dump(mode="json") if drift else None,
            "detects": None,
        }
    )
    return rows


def _meaning(objective: str, bound: float, entry: RouteEntry) -> str:
    """The objective as an operator states it."""
    assert entry.objectives is not None
    if objective == "error_rate":
        return f"errors <= {100 * bound:.3g} %"
    if objective == "latency_p95":
        limit = entry.objectives.latency_limit_ms(entry.release_latency_p95_ms)
        if limit < entry.objectives.latency_p95_ms_max:
            return f"p95 <= {limit:.0f} ms ({entry.objectives.latency_release_ratio:g}x release)"
        return f"p95 <= {limit:g} ms"
    if objective == "ttft_p95":
        return f"p95 first token <= {entry.objectives.ttft_p95_ms_max:g} ms (streamed)"
    if objective == "schema_valid_rate":
        return f"schema-valid >= {100 * (1 - bound):.3g} %"
    if objective == "refusal_rate_high":
        return f"refusals <= {100 * bound:.3g} %"
    return f"refusals >= {100 * (1 - bound):.3g} %"
