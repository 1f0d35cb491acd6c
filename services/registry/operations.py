"""The dashboard's operational views: production routes and their health, training runs and their
loss curves.

Routes come from the route table every serving replica reads (the NATS KV bucket, where the
guardian keeps its watch), read through `RoutesReader`; incidents, retrains and rollbacks come from
the registry's record of events. A tenant's key sees its own routes and runs only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request

from schemas.serving import RouteEntry
from services.core.route_health import health_rows
from services.registry.dashboard_access import Seen, Store, call

RoutesReader = Callable[[], Awaitable[list[RouteEntry]]]
router = APIRouter()
RECENT = 5  # incidents and actions shown per route


def _version(ref: Any) -> str | None:
    return ref.version_id() if ref is not None else None


def _recent(events: list[dict[str, Any]], route: str) -> list[dict[str, Any]]:
    mine = [e for e in events if e["payload"].get("route") == route]
    return [
        {"time": e["time"], "type": e["type"].removeprefix("tuneline.").removesuffix(".v1"), **e["payload"]}
        for e in mine[-RECENT:]
    ][::-1]


def route_view(
    entry: RouteEntry, incidents: list[dict[str, Any]], actions: list[dict[str, Any]]
) -> dict[str, Any]:
    rollout = entry.rollout
    return {
        "route": entry.route,
        "tenant": entry.tenant,
        "stable_version": _version(entry.stable),
        "rollback_target": _version(entry.rollback_target),
        "candidate_version": _version(entry.candidate),
        "candidate_weight": entry.candidate_weight,
        "phase": None if rollout is None else rollout.phase + (" (paused)" if rollout.paused else ""),
        "watched_version": entry.guard.version_id if entry.guard else None,
        "arl_days": entry.objectives.arl_days if entry.objectives else None,
        "objectives": health_rows(entry),
        "open_alerts": [
            a.model_dump(mode="json") for a in (entry.guard.open_alerts.values() if entry.guard else [])
        ],
        "incidents": _recent(incidents, entry.route),
        "actions": _recent(actions, entry.route),
    }


@router.get("/api/routes")
async def routes(request: Request, who: Seen, store: Store) -> Any:
    """Every route the viewer may see, with its objectives' health, open alerts, recent incidents
    and the guardian's recent actions (rollbacks, retrains)."""
    reader: RoutesReader | None = request.app.state.routes
    if reader is None:
        return {"available": False, "routes": [], "why": "this registry does not read the route table"}
    entries = [e for e in await reader() if who.may_see(e.tenant)]
    incidents = await call(store.events_of_types, "tuneline.incident.", limit=500)
    rolled = await call(store.events_of_types, "tuneline.rollout.rolled-back", limit=500)
    retrains = await call(store.events_of_types, "tuneline.retrain.", limit=500)
    actions = sorted(rolled + retrains, key=lambda e: e["time"])
    # each objective's statement of what it detects is a loop of up to DETECT_LIMIT windows: off the loop
    views = await asyncio.to_thread(
        lambda: [route_view(e, incidents, actions) for e in sorted(entries, key=lambda e: e.route)]
    )
    return {"available": True, "routes": views}


@router.get("/api/runs")
async def runs(who: Seen, store: Store, limit: int = Query(default=50, ge=1, le=500)) -> Any:
    found = await call(store.list_runs, tenant=who.scope(None), limit=limit)
    return {"runs": [run.model_dump(mode="json") for run in found]}


@router.get("/api/runs/{run_id}")
async def run(who: Seen, store: Store, run_id: str) -> Any:
    """The run's summary and history, and its loss and eval-loss curve (training.progress)."""
    detail = await call(store.get_run, run_id)
    if not who.may_see(detail.summary.tenant):
        raise HTTPException(status_code=404, detail=f"no training run {run_id}")
    return {**detail.model_dump(mode="json"), "curve": await call(store.curve, detail.summary.run_id)}
