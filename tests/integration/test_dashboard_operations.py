"""The dashboard as an operator looks at it, on a real registry service and nats-server, rendered by
headless Chromium: the overview leads with the production routes and their health (objectives,
error budget, open alerts, incidents, the guardian's actions) read from the real route table, then
the recent lineages, with telemetry windows left out; a training run shows its loss and eval-loss
curves; a tenant sees its own routes only."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from schemas.serving import RouteEntry, RouteVersionWindow, ServingWindow
from schemas.slo import GuardState, IncidentReported, RetrainRequested, RouteObjectives
from schemas.training import TrainingProgress, TrainingStarted
from services.core.messaging.nats_server import free_port
from services.core.messaging.routes import RouteTable
from services.core.settings import CoreSettings
from services.registry.app import build_registry
from services.registry.config import RegistrySettings
from services.rollout.controller import base_only
from services.rollout.guarding import guarded
from tests.conftest import wait_until
from tests.support.browser import dump_dom
from tests.support.events import candidate, model_ref, sha
from tests.support.services import operator_runtime

pytestmark = pytest.mark.integration
ACME, GLOBEX = "dk-acme", "dk-globex"
WINDOWS = 30


def failing_route() -> RouteEntry:
    """A production route whose guardian has watched real windows: errors breached, paged."""
    production = model_ref("prod")
    entry = RouteEntry(
        route="support", tenant="acme", stable=production, rollback_target=base_only(production),
        objectives=RouteObjectives(error_action="page"), guard=GuardState(version_id=production.version_id()),
        release_refusal_rate=0.1,
    )  # fmt: skip
    for t in range(1, 6):
        stat = RouteVersionWindow(route="support", version_id=production.version_id(), role="stable",
                                  count=200, errors=6, refusals=20)  # fmt: skip
        window = ServingWindow(replica="r1", window_start=t - 5, window_end=t, tenant="acme", stats=(stat,))
        entry = guarded(entry, "support", window)[0] or entry
    assert entry.guard is not None and "error_rate" in entry.guard.open_alerts
    return entry


async def populate(operator: Any) -> None:
    bus = operator.bus
    run = "run-1"
    await bus.publish(
        TrainingStarted(run_id=run, dataset_id=sha("d"), method="sft-lora", base=model_ref().base,
                        recipe_sha256=sha("r")), correlation_id="lineage-run", tenant="acme",
    )  # fmt: skip
    for step in range(1, 11):
        progress = TrainingProgress(
            run_id=run, step=step, total_steps=10, epoch=step / 10, loss=2.0 - 0.15 * step,
            eval_loss=(1.9 - 0.1 * step) if step % 5 == 0 else None,
        )  # fmt: skip
        await bus.publish(progress, correlation_id="lineage-run", tenant="acme")
    await bus.publish(candidate(run_id=run), correlation_id="lineage-run")
    for n in range(WINDOWS):  # telemetry: one correlation each, as serving publishes them
        await bus.publish(ServingWindow(replica="r1", window_start=n, window_end=n + 1, tenant="acme"))
    await bus.publish(IncidentReported(route="support", tenant="acme", severity="critical",
                                       reason="confirmed jailbreak", reported_by="cli"))  # fmt: skip
    await bus.publish(RetrainRequested(route="support", tenant="acme", trigger="drift",
                                       reason="drift: facts:score -20.0"))  # fmt: skip


@pytest.fixture
async def dashboard(core: CoreSettings, tmp_path: Path, running: Any) -> str:
    port = free_port()
    settings = RegistrySettings(
        database_url=f"sqlite:///{tmp_path / 'r.db'}", core=core, http_port=port,
        dashboard_keys={ACME: "acme", GLOBEX: "globex"},
    )  # fmt: skip
    await running(build_registry(settings).app)
    async with operator_runtime(core) as operator:
        table = await RouteTable.open(operator.broker.connection.jetstream())
        await table.put(failing_route(), 0)
        await table.put(RouteEntry(route="billing", tenant="globex", stable=base_only(model_ref())), 0)
        await populate(operator)
    url = f"http://127.0.0.1:{port}"

    async def recorded() -> bool:
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {ACME}"}) as client:
            reply = await client.get("/api/runs/run-1")
            routes = (await client.get("/api/routes")).json() if reply.status_code == 200 else {}
            done = reply.status_code == 200 and len(reply.json()["curve"]) == 10
            return done and bool(routes.get("routes")) and bool(routes["routes"][0]["actions"])

    await wait_until(recorded, timeout=30, interval=0.3)
    return url


async def test_the_overview_leads_with_routes_and_their_health_and_lists_no_telemetry(
    dashboard: str, tmp_path: Path
) -> None:
    async with httpx.AsyncClient(base_url=dashboard, headers={"Authorization": f"Bearer {ACME}"}) as client:
        answer = (await client.get("/api/routes")).json()
        lineages = (await client.get("/api/lineages?limit=500")).json()
    [route] = answer["routes"]
    assert route["route"] == "support" and route["stable_version"] == model_ref("prod").version_id()
    errors = next(o for o in route["objectives"] if o["objective"] == "error_rate")
    assert errors["alert"]["severity"] == "warning" and errors["budget_left"] < 0
    # what the watch states it catches at this route's 200 requests a 5 s window: 1 % errors in 6
    assert errors["detects"] == {"rate": 0.01, "windows": 6, "seconds": 30.0}
    assert [i["reason"] for i in route["incidents"]] == ["confirmed jailbreak"]
    assert [a["type"] for a in route["actions"]] == ["retrain.requested"]
    assert all(lineage["latest"] != "tuneline.serving.window.v1" for lineage in lineages)
    assert len(lineages) == 3, "the run's lineage, the incident's and the retrain's; no windows"
    async with httpx.AsyncClient(base_url=dashboard, headers={"Authorization": f"Bearer {GLOBEX}"}) as client:
        assert [r["route"] for r in (await client.get("/api/routes")).json()["routes"]] == ["billing"]

    # the dashboard answers from this test's event loop: Chromium runs off it
    dom = await asyncio.to_thread(dump_dom, f"{dashboard}/?key={ACME}#/", tmp_path)
    assert 'data-ready="overview"' in dom, dom[-3000:]
    headings = re.findall(r"<section><h2>([^<]+)</h2>", dom)
    assert headings[:2] == ["routes and their health", "recent lineages"]
    rows = dict(re.findall(r'class="objective-row" data-objective="([^"]+)" data-alert="([^"]*)"', dom))
    assert rows["error_rate"] == "warning" and rows["latency_p95"] == "" and "drift" in rows
    assert dom.count('class="incident"') == 1 and dom.count('class="action"') == 1
    assert "0.0100 in ~6 windows (30 s)" in dom and "1 alert(s) open" in dom
    assert "serving.window" not in dom and "billing" not in dom


async def test_a_run_shows_its_loss_and_eval_loss_curves(dashboard: str, tmp_path: Path) -> None:
    async with httpx.AsyncClient(base_url=dashboard, headers={"Authorization": f"Bearer {ACME}"}) as client:
        run = (await client.get("/api/runs/run-1")).json()
        assert (
            await client.get("/api/runs/run-1", headers={"Authorization": f"Bearer {GLOBEX}"})
        ).status_code == 404
    assert [p["step"] for p in run["curve"]] == list(range(1, 11))
    dom = await asyncio.to_thread(dump_dom, f"{dashboard}/?key={ACME}#/run/run-1", tmp_path)
    assert 'data-ready="run"' in dom, dom[-3000:]
    losses = re.findall(r'class="loss-point" data-step="(\d+)" data-value="([^"]+)"', dom)
    assert [(int(s), round(float(v), 3)) for s, v in losses] == [
        (s, round(2.0 - 0.15 * s, 3)) for s in range(1, 11)
    ]
    evals = re.findall(r'class="eval-loss-point" data-step="(\d+)" data-value="([^"]+)"', dom)
    assert [(int(s), round(float(v), 3)) for s, v in evals] == [(5, 1.4), (10, 0.9)]
    assert 'class="loss-line"' in dom and 'class="eval-loss-line"' in dom
