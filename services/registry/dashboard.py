"""The registry's read-only dashboard: one HTML page (no build step, no CDN) and a JSON API.

The page draws everything from the registry's own records: each lineage as a timeline of its
events; a version's evaluation (candidate vs base vs few-shot vs production) as bar charts with
the gate thresholds drawn; each rollout's traffic share and analysed metrics over time; model
versions with their tuples and adaptation cards. Nothing here writes.
"""

from __future__ import annotations

import asyncio
import hmac
from dataclasses import dataclass
from importlib import resources
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from services.registry.store import NotFound, RegistryStore

ADMIN = "*"  # the tenant of a key that sees every tenant
COOKIE = "tuneline_dashboard"


@dataclass(frozen=True)
class Viewer:
    """Who is looking: one tenant, or an admin (tenant None) who sees them all."""

    tenant: str | None

    def may_see(self, tenant: str | None) -> bool:
        return self.tenant is None or tenant == self.tenant

    def scope(self, asked: str | None) -> str | None:
        """The tenant a listing is filtered by: a tenant's own, whatever it asked for."""
        return asked if self.tenant is None else self.tenant


def tenant_of(keys: dict[str, str], key: str | None) -> str | None:
    """The tenant a dashboard key is for (compared in constant time), or None."""
    found = None
    for known, tenant in keys.items():
        if key is not None and hmac.compare_digest(known.encode(), key.encode()):
            found = tenant
    return found


def viewer(request: Request) -> Viewer:
    """Who sent this request: its bearer key or the page's cookie; 401 without a known key."""
    keys: dict[str, str] = request.app.state.dashboard_keys
    header = request.headers.get("authorization", "")
    key = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else None
    tenant = tenant_of(keys, key or request.cookies.get(COOKIE))
    if tenant is None:
        fix = (
            "send `Authorization: Bearer <dashboard key>` or open /?key=<dashboard key>"
            if keys
            else "this dashboard has no keys: set TUNELINE_REGISTRY_DASHBOARD_KEYS"
        )
        raise HTTPException(status_code=401, detail=f"a dashboard key is required: {fix}")
    return Viewer(None if tenant == ADMIN else tenant)


Seen = Annotated[Viewer, Depends(viewer)]


def create_dashboard(store: RegistryStore, keys: dict[str, str]) -> FastAPI:
    """`keys`: dashboard key → tenant (`*`: admin). Without keys nothing is shown to anyone.

    A key arrives as `Authorization: Bearer <key>` (API clients) or once as `/?key=<key>`, which
    sets an HttpOnly cookie for the page's own requests.
    """
    app = FastAPI(title="tuneline registry", docs_url=None, redoc_url=None, openapi_url="/api/openapi.json")
    page = resources.files("services.registry").joinpath("dashboard.html").read_text()

    app.state.dashboard_keys = keys

    async def call(fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except NotFound as error:
            raise HTTPException(status_code=404, detail=str(error)) from None

    async def visible_version(who: Viewer, version_id: str) -> Any:
        """The version's summary, or 404 also when another tenant's (never say whose)."""
        detail = await call(store.get_version, version_id)
        if not who.may_see(detail.summary.tenant):
            raise HTTPException(status_code=404, detail=f"no model version {version_id}")
        return detail

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index(request: Request, key: str | None = None) -> Response:
        if key is not None:
            if tenant_of(keys, key) is None:
                return HTMLResponse("<h1>401</h1><p>unknown dashboard key</p>", status_code=401)
            to_page = RedirectResponse("/", status_code=303)  # the key leaves the address bar
            to_page.set_cookie(COOKIE, key, httponly=True, samesite="strict", max_age=8 * 3600)
            return to_page
        viewer(request)  # 401 without a key
        return HTMLResponse(page)

    @app.get("/api/lineages")
    async def lineages(
        who: Seen, tenant: str | None = None, limit: int = Query(default=50, ge=1, le=500)
    ) -> Any:
        return await call(store.lineages, tenant=who.scope(tenant), limit=limit)

    @app.get("/api/lineages/{correlation_id}")
    async def lineage(who: Seen, correlation_id: str) -> Any:
        timeline = await call(store.timeline, correlation_id)
        if not timeline.entries or not all(who.may_see(e.tenant) for e in timeline.entries):
            raise HTTPException(status_code=404, detail=f"no events recorded for lineage {correlation_id}")
        return timeline.model_dump(mode="json")

    @app.get("/api/models")
    async def models(
        who: Seen,
        tenant: str | None = None,
        route: str | None = None,
        limit: int = Query(default=100, ge=1, le=1000),
    ) -> Any:
        found = await call(store.list_versions, tenant=who.scope(tenant), route=route, limit=limit)
        return {"versions": [summary.model_dump(mode="json") for summary in found]}

    @app.get("/api/models/{version_id}")
    async def model(who: Seen, version_id: str) -> Any:
        return (await visible_version(who, version_id)).model_dump(mode="json")

    @app.get("/api/models/{version_id}/evals")
    async def evals(who: Seen, version_id: str) -> Any:
        await visible_version(who, version_id)
        return (await call(store.get_evals, version_id)).model_dump(mode="json")

    @app.get("/api/models/{version_id}/card")
    async def card(who: Seen, version_id: str) -> Any:
        await visible_version(who, version_id)
        return (await call(store.card, version_id)).model_dump(mode="json")

    @app.get("/api/rollouts")
    async def rollouts(who: Seen, limit: int = Query(default=500, ge=1, le=5000)) -> Any:
        """rollout.* events grouped by rollout id: traffic share and analysis over time."""
        events = await call(store.events_of_types, "tuneline.rollout.", limit=limit)
        grouped: dict[str, dict[str, Any]] = {}
        for event in events:
            payload = event["payload"]
            rollout_id = payload.get("rollout_id")
            if not rollout_id or not who.may_see(payload.get("tenant")):
                continue  # operator requests carry no rollout id; other tenants' are not shown
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
