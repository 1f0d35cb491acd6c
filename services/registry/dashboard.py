"""The registry's read-only dashboard: one HTML page (no build step, no CDN) and a JSON API.

The page draws everything from the registry's own records: each lineage as a timeline of its
events; a version's evaluation (candidate vs base vs few-shot vs production) as bar charts with
the gate thresholds drawn; each rollout's traffic share and analysed metrics over time; model
versions with their tuples and adaptation cards. Nothing here writes.
"""

from __future__ import annotations

import asyncio
from importlib import resources
from typing import Any

from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import HTMLResponse

from services.registry.store import NotFound, RegistryStore


def create_dashboard(store: RegistryStore) -> FastAPI:
    app = FastAPI(title="tuneline registry", docs_url=None, redoc_url=None, openapi_url="/api/openapi.json")
    page = resources.files("services.registry").joinpath("dashboard.html").read_text()

    async def call(fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except NotFound as error:
            raise HTTPException(status_code=404, detail=str(error)) from None

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> str:
        return page

    @app.get("/api/lineages")
    async def lineages(tenant: str | None = None, limit: int = Query(default=50, ge=1, le=500)) -> Any:
        return await call(store.lineages, tenant=tenant, limit=limit)

    @app.get("/api/lineages/{correlation_id}")
    async def lineage(correlation_id: str) -> Any:
        timeline = await call(store.timeline, correlation_id)
        if not timeline.entries:
            raise HTTPException(status_code=404, detail=f"no events recorded for lineage {correlation_id}")
        return timeline.model_dump(mode="json")

    @app.get("/api/models")
    async def models(
        tenant: str | None = None, route: str | None = None, limit: int = Query(default=100, ge=1, le=1000)
    ) -> Any:
        found = await call(store.list_versions, tenant=tenant, route=route, limit=limit)
        return {"versions": [summary.model_dump(mode="json") for summary in found]}

    @app.get("/api/models/{version_id}")
    async def model(version_id: str) -> Any:
        return (await call(store.get_version, version_id)).model_dump(mode="json")

    @app.get("/api/models/{version_id}/evals")
    async def evals(version_id: str) -> Any:
        return (await call(store.get_evals, version_id)).model_dump(mode="json")

    @app.get("/api/models/{version_id}/card")
    async def card(version_id: str) -> Any:
        return (await call(store.card, version_id)).model_dump(mode="json")

    @app.get("/api/rollouts")
    async def rollouts(limit: int = Query(default=500, ge=1, le=5000)) -> Any:
        """rollout.* events grouped by rollout id: traffic share and analysis over time."""
        events = await call(store.events_of_types, "tuneline.rollout.", limit=limit)
        grouped: dict[str, dict[str, Any]] = {}
        for event in events:
            payload = event["payload"]
            rollout_id = payload.get("rollout_id")
            if not rollout_id:
                continue  # operator requests carry no rollout id
            entry = grouped.setdefault(
                rollout_id,
                {
                    "rollout_id": rollout_id,
                    "route": payload.get("route"),
                    "candidate_version": payload.get("candidate_version"),
                    "stable_version": payload.get("stable_version"),
                    "points": [],
                    "outcome": "running",
                },
            )
            kind = event["type"].removeprefix("tuneline.rollout.").removesuffix(".v1")
            share = payload.get("traffic_percent")
            if kind == "promoted":
                entry["outcome"], share = "promoted", 100.0
            elif kind == "rolled-back":
                entry["outcome"], share = "rolled-back", 0.0
            elif kind == "started":
                share = 0.0
            entry["points"].append(
                {
                    "time": event["time"],
                    "event": kind,
                    "phase": payload.get("phase"),
                    "traffic_percent": share,
                    "analysis": payload.get("analysis", []),
                    "reason": payload.get("reason"),
                }
            )
        return list(grouped.values())

    @app.get("/api/health", include_in_schema=False)
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app
