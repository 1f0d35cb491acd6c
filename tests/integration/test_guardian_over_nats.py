"""The guardian on a real stack: after a real rollout promotes a version, faults injected into the
production version raise an alert and, per the route's objectives, roll it back or only page.

A real nats-server, the registry, the rollout controller and a serving replica answering HTTP
traffic from a generator; the objectives travel in the gate policy of the candidate's verdict.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from schemas.dataset import DatasetApproved
from schemas.evaluation import DriftDetected, SuiteDelta
from schemas.gate_policy import GatePolicy
from schemas.refs import EvalSuiteRef
from schemas.rollout import RolloutPolicy
from schemas.slo import RouteObjectives
from services.core.artifacts import ArtifactStore
from services.core.messaging.bus import EventBus
from services.core.route_watch import windows_to_alarm
from services.core.settings import CoreSettings
from services.curation.app import build_curation
from services.curation.config import CurationSettings
from services.rollout.app import create_app as rollout_app
from services.rollout.config import RolloutSettings
from services.rollout.controller import base_only
from services.serving.config import Fault
from tests.conftest import wait_until
from tests.support.rollout import event_of, generating, passed, route_now
from tests.support.services import operator_runtime, registry_app
from tests.support.serving import adapter_refs, start_serving
from tests.support.stream import stored_events
from tests.support.training import approved, recipe

pytestmark = pytest.mark.integration
POLICY = RolloutPolicy(
    shadow_min_requests=4, min_requests=3, min_seconds=0.3, latency_slack_ms=250, steps=(50.0, 100.0)
)


async def guarded_stack(
    core: CoreSettings, tmp_path: Path, tiny_model: Path, running: Any
) -> tuple[Any, Any, str]:
    """The registry, rollout and one serving replica; a candidate adapter to roll out."""
    store = ArtifactStore(core.artifact_root)
    candidate = adapter_refs(store, tiny_model, tmp_path, 1)[0]
    await running(registry_app(core, tmp_path))
    await running(rollout_app(RolloutSettings(core=core, policy=POLICY)))
    serving, url = await start_serving(
        running, core, tmp_path / "serving", window_s=0.3, api_keys={"key-acme": "acme"}
    )
    return candidate, serving, url


@pytest.mark.parametrize("action", ["rollback", "page"])
async def test_after_promotion_an_error_breach_raises_one_alert_and_acts_per_the_routes_policy(
    core: CoreSettings, tmp_path: Path, tiny_model: Path, running: Any, action: str
) -> None:
    candidate, serving, url = await guarded_stack(core, tmp_path, tiny_model, running)
    # a latency SLA a busy 2-core machine meets: the error objective is the one under test
    objectives = RouteObjectives(error_action=action, latency_p95_ms_max=60_000)  # type: ignore[arg-type]
    async with operator_runtime(core) as operator:
        await passed(operator, candidate, GatePolicy(objectives=objectives))
        async with generating(url) as traffic:
            await event_of(operator, "rollout.promoted")
            entry = await route_now(operator)
            assert entry.guard is not None and entry.guard.version_id == candidate.version_id()
            assert entry.objectives == objectives
            # the production version starts failing after its rollout ended
            serving.settings.faults[candidate.version_id()] = Fault(error_rate=1.0)
            raised = await event_of(operator, "route.alert-raised", timeout=60)
            if action == "rollback":
                rolled = await event_of(operator, "rollout.rolled-back", timeout=30)
        js = operator.broker.connection.jetstream()
        alert = raised["alert"]
        assert (alert["objective"], alert["action"]) == ("error_rate", action)
        assert alert["severity"] == ("critical" if action == "rollback" else "warning")
        assert alert["version_id"] == candidate.version_id() and alert["value"] > alert["bound"] == 0.001
        assert alert["statistic"] >= alert["threshold"] and alert["requests"] > 0
        assert "Shiryaev-Roberts" in alert["method"]
        # the route returned within the windows the objective states for a total failure at this
        # traffic, plus the window in which the fault began (part of it was still healthy)
        stated = windows_to_alarm(0.001, 1.0, alert["requests"] // alert["windows"], alert["threshold"])
        assert stated is not None and alert["windows"] <= stated + 1, (alert, stated)
        entry = await route_now(operator)
        if action == "rollback":
            assert rolled["reason"].startswith("slo-breach: error_rate"), rolled["reason"]
            assert rolled["candidate_version"] == candidate.version_id()
            assert entry.stable == base_only(candidate) and entry.rollback_target is None
            # the restored version is watched afresh
            assert entry.guard is not None and entry.guard.version_id == base_only(candidate).version_id()
            assert len(await stored_events(js, "rollout.rolled-back")) == 1
        else:
            assert entry.stable == candidate, "page only alerts"
            assert not await stored_events(js, "rollout.rolled-back")
        assert len(await stored_events(js, "route.alert-raised")) == 1, "one alert per breach"
        assert any(status != 200 for *_, status in traffic.answers)
        # the operator sees it from the CLI: the route's health and the alert
        health = json.loads(await cli(core, "routes", "health", "support", "--json"))["support"]
        listed = json.loads(await cli(core, "alerts", "--history", "5", "--json"))
        assert [e["objective"] for e in listed["events"]] == ["error_rate"]
        errors = next(row for row in health if row["objective"] == "error_rate")
        assert errors["bound"] == 0.001 and errors["action"] == action
        if action == "page":  # still failing: the alert stays open, the budget is spent
            assert errors["alert"]["objective"] == "error_rate"
            assert [a["objective"] for a in listed["open"]] == ["error_rate"]
            assert errors["budget_left"] is None or errors["budget_left"] < 0
        else:  # the restored base is watched afresh, with no alert open
            assert errors["alert"] is None and listed["open"] == []


async def cli(core: CoreSettings, *args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli", "--nats-url", core.nats.servers[0], *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return out.decode()


async def test_a_critical_incident_rolls_a_promoted_version_back_at_once_and_a_warning_does_not(
    core: CoreSettings, tmp_path: Path, tiny_model: Path, running: Any
) -> None:
    candidate, _, url = await guarded_stack(core, tmp_path, tiny_model, running)
    objectives = RouteObjectives(latency_p95_ms_max=60_000)  # incident_action: rollback, the default
    async with operator_runtime(core) as operator:
        await passed(operator, candidate, GatePolicy(objectives=objectives))
        async with generating(url):
            await event_of(operator, "rollout.promoted")
        js = operator.broker.connection.jetstream()
        await cli(
            core,
            "incident",
            "report",
            "support",
            "--tenant",
            "acme",
            "--severity",
            "warning",
            "--reason",
            "odd",
        )
        await cli(core, "incident", "report", "support", "--reason", "confirmed jailbreak")
        rolled = await event_of(operator, "rollout.rolled-back", timeout=20)
        assert rolled["reason"] == "incident (critical, by cli): confirmed jailbreak", rolled["reason"]
        assert rolled["candidate_version"] == candidate.version_id()
        assert (await route_now(operator)).stable == base_only(candidate)
        assert len(await stored_events(js, "incident.reported")) == 2
        assert len(await stored_events(js, "rollout.rolled-back")) == 1, "the warning rolled nothing back"


async def test_drift_on_production_asks_once_for_a_retrain_and_curation_resubmits_the_routes_dataset(
    core: CoreSettings, tmp_path: Path, tiny_model: Path, running: Any
) -> None:
    candidate, _, url = await guarded_stack(core, tmp_path, tiny_model, running)
    await running(build_curation(CurationSettings(core=core, work_dir=str(tmp_path / "curation"))).app)
    store = ArtifactStore(core.artifact_root)
    objectives = RouteObjectives(latency_p95_ms_max=60_000)  # drift_action: retrain, the default
    async with operator_runtime(core) as operator:
        # the route's dataset, as curation approved it (training is not running: it waits in the stream)
        dataset = approved(store, recipe("sft-lora"), route="support", seed=4)
        await EventBus(operator.broker, "curation").publish(dataset)
        await passed(operator, candidate, GatePolicy(objectives=objectives))
        async with generating(url):
            await event_of(operator, "rollout.promoted")
        # the evaluation service's drift check found the facts suite 20 points down
        evaluation = EventBus(operator.broker, "evaluation")
        moved = SuiteDelta(suite=EvalSuiteRef(name="facts", sha256="a" * 64), reference=80.0, current=60.0,
                           delta=-20.0, threshold=5.0)  # fmt: skip
        report = DriftDetected(
            route="support", tenant="acme", production_version=candidate.version_id(), deltas=(moved,)
        )
        first = await evaluation.publish(report)
        await evaluation.publish(report, event_id=first.id)  # redelivered
        await evaluation.publish(report)  # the next scheduled check finds the same drift
        js = operator.broker.connection.jetstream()

        async def resubmitted() -> list[Any]:
            found = await stored_events(js, "dataset.approved")
            return [e for e in found if e.payload["submission_id"] != dataset.submission_id]

        [again] = await wait_until(resubmitted, timeout=60, interval=0.3)
        await asyncio.sleep(2)  # anything doubled would have arrived by now
        [alert] = await stored_events(js, "route.alert-raised")
        [retrain] = await stored_events(js, "retrain.requested")
        assert (alert.payload["alert"]["objective"], alert.payload["alert"]["action"]) == ("drift", "retrain")
        assert (
            retrain.payload["trigger"] == "drift" and retrain.payload["version_id"] == candidate.version_id()
        )
        assert len(await stored_events(js, "dataset.approved")) == 2, "one resubmission"
        assert again.payload["submission_id"].startswith("retrain-")
        assert (
            DatasetApproved.model_validate(again.payload).model_copy(
                update={"submission_id": dataset.submission_id}
            )
            == dataset
        ), "the same dataset, recipe and gate policy"
        entry = await route_now(operator)
        assert entry.stable == candidate, "a retrain leaves production serving"
        # an operator may ask for one by hand
        await cli(core, "routes", "retrain", "support", "--reason", "new feedback")
        operators = await wait_until(lambda: _from_cli(js), timeout=20, interval=0.3)
        assert operators[0].payload["trigger"] == "operator"


async def _from_cli(js: Any) -> list[Any]:
    return [e for e in await stored_events(js, "retrain.requested") if e.payload["requested_by"] == "cli"]


async def test_slow_first_tokens_of_streamed_answers_page(
    core: CoreSettings, tmp_path: Path, tiny_model: Path, running: Any
) -> None:
    candidate, serving, url = await guarded_stack(core, tmp_path, tiny_model, running)
    objectives = RouteObjectives(latency_p95_ms_max=60_000, latency_release_ratio=1000, ttft_p95_ms_max=250)
    async with operator_runtime(core) as operator:
        await passed(operator, candidate, GatePolicy(objectives=objectives))
        async with generating(url, stream=True):
            await event_of(operator, "rollout.promoted")
            serving.settings.faults[candidate.version_id()] = Fault(delay_ms=600)
            raised = await event_of(operator, "route.alert-raised", timeout=60)
        alert = raised["alert"]
        assert (alert["objective"], alert["action"], alert["bound"]) == ("ttft_p95", "page", 0.05)
        assert (await route_now(operator)).stable == candidate, "page only alerts"
