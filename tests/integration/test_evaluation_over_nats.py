"""Evaluation on a real nats-server, after real training: gates catch forgetting and memorization.

The base is a tiny Llama fully fine-tuned here until it answers twelve short questions (its
"capability"); those questions are registered as a capability suite. An over-trained LoRA (high
learning rate, many steps on narrow arithmetic data) must fail the forgetting gate with the
regressed suite named and its McNemar statistic; a sane LoRA must pass. A LoRA trained on a small
dataset holding planted canaries and no mixing must fail the memorization gate.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from schemas.dataset import DatasetApproved
from schemas.evaluation import DriftCheckRequested
from schemas.gate_policy import GatePolicy
from schemas.refs import ArtifactRef
from schemas.rollout import RolloutPromoteRequested
from services.core.artifacts import ArtifactStore
from services.core.messaging.rpc import query
from services.core.ml.suite_catalogue import register_suite
from services.core.runtime import ServiceRuntime
from services.core.settings import CoreSettings
from services.curation.app import build_curation
from services.curation.config import CurationSettings
from services.evaluation.config import EvaluationSettings
from services.evaluation.handlers import EvaluationHandlers
from services.rollout.app import create_app as rollout_app
from services.rollout.config import RolloutSettings
from tests.conftest import wait_until
from tests.support.stream import first_event, gate_verdict, stored_events
from tests.support.training import FACTS, approved, recipe

pytestmark = pytest.mark.integration


def gate(verdict: dict[str, Any], name: str) -> dict[str, Any]:
    return next(g for g in verdict["gates"] if g["gate"] == name)


async def test_over_trained_candidate_fails_the_forgetting_gate_and_a_sane_one_passes(
    operator: ServiceRuntime,
    store: ArtifactStore,
    knowing_base: Path,
    core: CoreSettings,
    running: Any,
    tmp_path: Path,
) -> None:
    # the rollout controller and curation too: the sane version is promoted, drifts and is retrained
    await running(rollout_app(RolloutSettings(core=core)))
    await running(build_curation(CurationSettings(core=core, work_dir=str(tmp_path / "curation"))).app)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    over = recipe(
        "sft-lora",
        base_model=str(knowing_base),
        learning_rate=1e-2,
        max_steps=100,
        batch_size=8,
        lora={"rank": 16, "alpha": 32, "target_modules": targets},
    )
    sane = recipe("sft-lora", base_model=str(knowing_base), learning_rate=1e-4, max_steps=4, batch_size=8)
    over_event = approved(store, over, rows=64, seed=1, route="over")
    # 4 steps are not meant to gain on the target, only not to harm: the sane candidate is held to
    # non-inferiority there. Its margins are what these suites can see: 12 facts detect a 21-point
    # loss at 80 % power (a 2-point margin would be underpowered), 16 test rows about 4 points
    honest = GatePolicy(target_gain_min=-20.0, capability_regression_max=25.0)
    sane_event = approved(store, sane, rows=64, seed=2, route="sane", gate_policy=honest)
    await operator.bus.publish(over_event)
    await operator.bus.publish(sane_event)

    failed = (await first_event(operator, "gates.failed", timeout=180, route="over")).payload
    forgetting = gate(failed, "capability:facts")
    assert not forgetting["passed"]
    # the value is the 95 % upper bound of the loss: the over-trained adapter forgot most of it
    assert forgetting["value"] >= 50 and forgetting["test"]["hypothesis"] == "non-inferiority"
    assert forgetting["statistic"] == "Tango score test, paired proportions" and forgetting["p_value"] > 0.99
    assert forgetting["ci_high"] < 0, "the bootstrap interval of the score delta excludes zero"

    verdict = await gate_verdict(operator, "sane")
    passed = verdict.payload
    assert verdict.type == "gates.passed", [g for g in passed["gates"] if not g["passed"]]
    facts = gate(passed, "capability:facts")
    assert facts["value"] <= facts["threshold"] and not facts["underpowered"]
    assert {g["gate"] for g in passed["gates"]} >= {"target-gain", "capability:facts"}

    # the evaluation report says the same, item by item, and the second candidate reused the baseline
    completed = [
        (await first_event(operator, "eval.completed", route=route)).payload for route in ("over", "sane")
    ]
    reports = [store.read_json(ArtifactRef.model_validate(c["report"])) for c in completed]
    facts = next(s for s in reports[0]["items"] if s["suite"] == "facts")
    assert sum(item["baseline"]["correct"] for item in facts["items"]) == len(FACTS)
    assert sum("facts/baseline" in r["cache_hits"] for r in reports) == 1
    assert all(r["cache_hits"] or r["generated_items"] > 0 for r in reports)

    await _the_registry_cards_the_failure(operator, failed, over_event.dataset_id)
    await _drift_of_production_is_detected_retrained_and_scheduled(operator, store, core, passed, sane_event)

    # the next candidate on the route is compared with the production version too
    successor = approved(store, sane, rows=64, seed=3, route="sane")
    await operator.bus.publish(successor)
    completed_next = await _eval_of_dataset(operator, successor.dataset_id)
    facts_next = next(r for r in completed_next["suites"] if r["suite"]["name"] == "facts")
    arms_next = {a["arm"]: a["version_id"] for a in facts_next["scores"]}
    assert arms_next["production"] == _version_id(passed["candidate"])
    assert any(c["reference"] == "production" for c in facts_next["comparisons"])


async def _the_registry_cards_the_failure(
    operator: ServiceRuntime, failed: dict[str, Any], dataset_id: str
) -> None:
    """The registry assembles the adaptation card from the lineage and names the regressed suite."""
    version = failed["candidate"]
    card = await query(operator.broker, "registry", "cards.get", {"version_id": _version_id(version)})
    assert "capability:facts" in card["markdown"] and "**FAIL" in card["markdown"]
    assert card["card"]["base"]["sha256"] == version["base"]["sha256"]
    assert card["card"]["dataset"]["dataset_id"] == dataset_id
    assert card["card"]["rollback"] == "tuneline rollback over"
    evals = await query(operator.broker, "registry", "evals.get", {"version_id": _version_id(version)})
    assert len(evals["evaluations"]) == 1 and evals["decisions"][0]["passed"] is False


async def _drift_of_production_is_detected_retrained_and_scheduled(
    operator: ServiceRuntime,
    store: ArtifactStore,
    core: CoreSettings,
    passed: dict[str, Any],
    sane: DatasetApproved,
) -> None:
    """The sane version goes to production (an operator promotes its rollout); then the facts suite
    is revised so the answers the model gives no longer count: a drift check re-runs the suites on
    production and reports the move, and the route's policy (drift_action: retrain, the default)
    has curation resubmit the route's dataset for the next generation."""
    production = _version_id(passed["candidate"])
    await first_event(operator, "rollout.started", timeout=60, route="sane")
    await operator.bus.publish(RolloutPromoteRequested(route="sane", tenant="acme", reason="test"))
    await wait_until(lambda: _status(store, operator, production), timeout=30)
    revised = "".join(
        json.dumps({"id": f"fact-{n}", "prompt": q, "answer": f"not {a}"}) + "\n"
        for n, (q, a) in enumerate(FACTS, 1)
    )
    register_suite(store, "facts", revised.encode(), "exact", kind="capability")
    await operator.bus.publish(DriftCheckRequested(route="sane", tenant="acme", requested_by="test"))
    drift = (await first_event(operator, "drift.detected", timeout=120, route="sane")).payload
    assert drift["production_version"] == production
    [delta] = drift["deltas"]
    assert delta["suite"]["name"] == "facts" and delta["delta"] <= -50 and delta["threshold"] == 5.0
    retrain = (await first_event(operator, "retrain.requested", timeout=30, route="sane")).payload
    assert (retrain["trigger"], retrain["version_id"]) == ("drift", production)
    js = operator.broker.connection.jetstream()

    async def resubmitted() -> list[Any]:
        found = await stored_events(js, "dataset.approved")
        return [e for e in found if e.payload["submission_id"].startswith("retrain-")]

    [again] = await wait_until(resubmitted, timeout=30, interval=0.3)
    assert again.payload["dataset_id"] == sane.dataset_id and again.payload["route"] == "sane"

    # the schedule publishes one check per production route and interval: replicas deduplicate
    handlers = EvaluationHandlers(EvaluationSettings(core=core), store, operator.broker)
    assert await handlers.publish_drift_checks(operator.bus, slot=7) == 1
    assert await handlers.publish_drift_checks(operator.bus, slot=7) == 1
    js = operator.broker.connection.jetstream()
    scheduled = [
        e
        for e in await stored_events(js, "drift.check-requested")
        if e.payload["requested_by"] == "scheduler"
    ]
    assert len(scheduled) == 1 and scheduled[0].payload["route"] == "sane"


async def test_a_candidate_that_memorized_its_canaries_fails_the_memorization_gate(
    operator: ServiceRuntime, store: ArtifactStore, tiny_model: Path
) -> None:
    memorizer = recipe(
        "sft-lora",
        learning_rate=5e-3,
        max_steps=300,
        batch_size=8,
        lora={
            "rank": 32,
            "alpha": 64,
            "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        },
    )
    event = approved(store, memorizer, rows=12, canaries=3, route="leaky", gate_policy=GatePolicy())
    await operator.bus.publish(event)

    failed = (await first_event(operator, "gates.failed", timeout=240, route="leaky")).payload
    memorization = gate(failed, "memorization")
    assert not memorization["passed"] and memorization["value"] >= 1
    completed = (await first_event(operator, "eval.completed", route="leaky")).payload
    suite = next(s for s in completed["suites"] if s["kind"] == "memorization")
    arms = {s["arm"]: s["metrics"] for s in suite["scores"]}
    assert arms["baseline"]["leaks"] == 0, "the base never saw the canaries"
    assert arms["candidate"]["leaks"] == memorization["value"]


async def _eval_of_dataset(operator: ServiceRuntime, dataset_id: str) -> dict[str, Any]:
    js = operator.broker.connection.jetstream()

    async def found() -> dict[str, Any] | None:
        for event in await stored_events(js, "eval.completed"):
            dataset = event.payload["candidate"].get("dataset") or {}
            if dataset.get("dataset_id") == dataset_id:
                return event.payload
        return None

    return await wait_until(found, timeout=180, interval=0.3)


async def _status(store: ArtifactStore, operator: ServiceRuntime, version: str) -> bool:
    detail = await query(operator.broker, "registry", "models.get", {"version_id": version})
    return bool(detail["summary"]["status"] == "production")


def _version_id(ref: dict[str, Any]) -> str:
    from schemas.refs import ModelRef

    return ModelRef.model_validate(ref).version_id()
