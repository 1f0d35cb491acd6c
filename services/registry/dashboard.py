"""The registry's read-only dashboard: one HTML page (no build step, no CDN) and a JSON API.

The page draws everything from the registry's own records: each lineage as a timeline of its
events; a version's evaluation (candidate vs base vs few-shot vs production) as bar charts with
the gate thresholds drawn; each rollout's traffic share and analysed metrics over time; model
versions with their tuples and adaptation cards. Nothing here writes.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from fastapi import APIRouter, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from services.registry import operations
from services.registry.dashboard_access import COOKIE, Seen, Store, Viewer, call, tenant_of, viewer
from services.registry.operations import RoutesReader
from services.registry.store import RegistryStore

router = APIRouter()


async def visible_version(store: RegistryStore, who: Viewer, version_id: str) -> Any:
    """The version's detail, or 404 also when another tenant's (never say whose)."""
    detail = await call(store.get_version, version_id)
    if not who.may_see(detail.summary.tenant):
        raise HTTPException(status_code=404, detail=f"no model version {version_id}")
    return detail


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def index(request: Request, key: str | None = None) -> Response:
    if key is not None:
        if tenant_of(request.app.state.dashboard_keys, key) is None:
            return HTMLResponse("<h1>401</h1><p>unknown dashboard key</p>", status_code=401)
        to_page = RedirectResponse("/", status_code=303)  # the key leaves the address bar
        to_page.set_cookie(COOKIE, key, httponly=True, samesite="strict", max_age=8 * 3600)
        return to_page
    viewer(request)  # 401 without a key
    return HTMLResponse(request.app.state.page)


@router.get("/api/lineages")
async def lineages(
    who: Seen, store: Store, tenant: str | None = None, limit: int = Query(default=50, ge=1, le=500)
) -> Any:
    return await call(store.lineages, tenant=who.scope(tenant), limit=limit)


@router.get("/api/lineages/{correlation_id}")
async def lineage(who: Seen, store: Store, correlation_id: str) -> Any:
    timeline = await call(store.timeline, correlation_id)
    if not timeline.entries or not all(who.may_see(e.tenant) for e in timeline.entries):
        raise HTTPException(status_code=404, detail=f"no events recorded for lineage {correlation_id}")
    return timeline.model_dump(mode="json")


@router.get("/api/models")
async def models(
    who: Seen,
    store: Store,
    tenant: str | None = None,
    route: str | None = None,
    limit: int = Query(default=100, ge=1, le=1000),
) -> Any:
    found = await call(store.list_versions, tenant=who.scope(tenant), route=route, limit=limit)
    return {"versions": [summary.model_dump(mode="json") for summary in found]}


@router.get("/api/models/{version_id}")
async def model(who: Seen, store: Store, version_id: str) -> Any:
    return (await visible_version(store, who, version_id)).model_dump(mode="json")


@router.get("/api/models/{version_id}/evals")
async def evals(who: Seen, store: Store, version_id: str) -> Any:
    await visible_version(store, who, version_id)
    return (await call(store.get_evals, version_id)).model_dump(mode="json")


@router.get("/api/models/{version_id}/card")
async def card(who: Seen, store: Store, version_id: str) -> Any:
    await visible_version(store, who, version_id)
    return (await call(store.card, version_id)).model_dump(mode="json")


def _point(event: dict[str, Any]) -> dict[str, Any]:
    """One rollout event as a point of its traffic-share timeline."""
    payload = event["payload"]
    kind = event["type"].removeprefix("tuneline.rollout.").removesuffix(".v1")
    share = {"promoted": 100.0, "rolled-back": 0.0, "started": 0.0}.get(kind, payload.get("traffic_percent"))
    return {
        "time": event["time"],
        "event": kind,
        "phase": payload.get("phase"),
        "traffic_percent": share,
        "analysis": payload.get("analysis", []),
        "reason": payload.get("reason"),
    }


def group_rollouts(events: list[dict[str, Any]], who: Viewer) -> list[dict[str, Any]]:
    """rollout.* events grouped by rollout id, each with its points and outcome so far."""
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
        point = _point(event)
        if point["event"] in ("promoted", "rolled-back"):
            entry["outcome"] = point["event"]
        entry["points"].append(point)
    return list(grouped.values())


@router.get("/api/rollouts")
async def rollouts(who: Seen, store: Store, limit: int = Query(default=500, ge=1, le=5000)) -> Any:
    """rollout.* events grouped by rollout id: traffic share and analysis over time."""
    return group_rollouts(await call(store.events_of_types, "tuneline.rollout.", limit=limit), who)


@router.get("/api/health", include_in_schema=False)
async def health() -> dict[str, str]:
    return {"status": "ok"}


def create_dashboard(
    store: RegistryStore, keys: dict[str, str], routes: RoutesReader | None = None
) -> FastAPI:
    """`keys`: dashboard key → tenant (`*`: admin). Without keys nothing is shown to anyone.
    `routes` reads the route table (the registry service passes the NATS KV bucket's).

    A key arrives as `Authorization: Bearer <key>` (API clients) or once as `/?key=<key>`, which
    sets an HttpOnly cookie for the page's own requests.
    """
    app = FastAPI(title="tuneline registry", docs_url=None, redoc_url=None, openapi_url="/api/openapi.json")
    app.state.store = store
    app.state.dashboard_keys = keys
    app.state.routes = routes
    app.state.page = resources.files("services.registry").joinpath("dashboard.html").read_text()
    app.include_router(router)
    app.include_router(operations.router)
    return app
