"""Rollout over a real nats-server: gates.passed → shadow → canary 1/10/25/50/100 → promoted, or rolled back.

Serving answers real HTTP traffic from a generator; its serving.window events drive the controller.
Faults are injected through serving's fault settings (added latency, failed requests).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from schemas.refs import ModelRef
from schemas.rollout import RolloutAbortRequested, RolloutPolicy, RolloutRollbackRequested
from services.core.artifacts import ArtifactStore
from services.core.messaging.rpc import query
from services.core.settings import CoreSettings
from services.rollout.app import create_app as rollout_app
from services.rollout.config import RolloutSettings
from services.rollout.controller import base_only
from tests.conftest import wait_until
from tests.support.merging import announce, registered
from tests.support.rollout import Traffic, client_for, event_of, generating, passed, route_now, verdict
from tests.support.services import operator_runtime, registry_app
from tests.support.serving import adapter_refs, start_serving
from tests.support.stream import stored_events

pytestmark = pytest.mark.integration
# small holds keep the test short; the wide latency slack keeps 2 busy CPU cores' batch-to-batch
# jitter (a 3-request canary p95 against hundreds of stable requests) from reading as a breach
POLICY = RolloutPolicy(shadow_min_requests=4, min_requests=3, min_seconds=0.3, latency_slack_ms=250)


async def stack(
    core: CoreSettings,
    tmp_path: Path,
    tiny_model: Path,
    running: Any,
    policy: RolloutPolicy = POLICY,
    **serving: Any,
) -> tuple[ModelRef, str]:
    store = ArtifactStore(core.artifact_root)
    candidate = adapter_refs(store, tiny_model, tmp_path, 1)[0]
    await running(registry_app(core, tmp_path))
    await running(rollout_app(RolloutSettings(core=core, policy=policy)))
    _, url = await start_serving(
        running, core, tmp_path / "serving", window_s=0.3, api_keys={"key-acme": "acme"}, **serving
    )
    return candidate, url


async def test_a_healthy_candidate_goes_through_shadow_and_every_canary_step_and_is_promoted(
    core: CoreSettings, tmp_path: Path, tiny_model: Path, running: Any
) -> None:
    candidate, url = await stack(core, tmp_path, tiny_model, running)
    async with operator_runtime(core) as operator:
        await passed(operator, candidate)
        await event_of(operator, "rollout.started", timeout=20)
        async with generating(url) as traffic:
            promoted = await event_of(operator, "rollout.promoted")
        js = operator.broker.connection.jetstream()
        steps = [
            (e.payload["phase"], e.payload["traffic_percent"])
            for e in await stored_events(js, "rollout.step")
        ]
        assert steps == [
            ("shadow", 0.0),
            ("canary", 1.0),
            ("canary", 10.0),
            ("canary", 25.0),
            ("canary", 50.0),
            ("canary", 100.0),
        ]
        # every published analysis names its method, alpha and evidence; no metric was a breach
        analysis = (await stored_events(js, "rollout.step"))[-1].payload["analysis"]
        last = [a for a in analysis if a["metric"] == "error_rate"]
        assert last and last[0]["judgement"] == "no-evidence-of-harm", analysis
        assert "mixture SPRT" in last[0]["method"] and last[0]["alpha"] == 0.0025
        assert last[0]["candidate_n"] > 0 and "candidate events in a row" in last[0]["detects"]
        base_version = base_only(candidate).version_id()
        assert promoted["candidate_version"] == candidate.version_id()
        assert promoted["rollback_target"] == base_version
        entry = await route_now(operator)
        assert (
            entry.stable == candidate
            and entry.candidate is None
            and entry.rollback_target.version_id() == base_version
        )
        served = {role for _, role, _, status in traffic.answers if status == 200}
        assert served == {"stable", "candidate"}, served
        assert not [a for a in traffic.answers if a[3] != 200]

        async def production() -> bool:
            detail = await query(
                operator.broker, "registry", "models.get", {"version_id": candidate.version_id()}
            )
            return bool(detail["summary"]["status"] == "production")

        await wait_until(production, timeout=10)

        # an operator rollback returns the route to the recorded target
        await operator.bus.publish(RolloutRollbackRequested(route="support", tenant="acme", reason="drill"))
        rolled = await event_of(operator, "rollout.rolled-back", timeout=20)
        assert rolled["stable_version"] == base_version and "operator rollback" in rolled["reason"]
        assert (await route_now(operator)).stable.version_id() == base_version


@pytest.mark.parametrize(
    ("fault", "metric"),
    [({"error_rate": 1.0}, "error_rate"), ({"delay_ms": 1000.0}, "latency_slow_rate")],
    ids=["erroring", "slow"],
)
async def test_a_failing_candidate_is_rolled_back_and_serves_nothing_afterwards(
    core: CoreSettings, tmp_path: Path, tiny_model: Path, running: Any, fault: dict[str, float], metric: str
) -> None:
    # the fault hits the candidate's live (canary) answers only: it passes shadow, then breaks in canary
    # steps held for 12 candidate requests: evidence enough for the sequential tests to call the
    # breach before the last step even when a loaded machine makes the windows few and uneven
    held = POLICY.model_copy(update={"min_requests": 12})
    faults = {"support/candidate": fault}
    candidate, url = await stack(core, tmp_path, tiny_model, running, held, faults=faults)
    async with operator_runtime(core) as operator:
        await passed(operator, candidate)
        async with generating(url):
            rolled = await event_of(operator, "rollout.rolled-back")
        assert rolled["candidate_version"] == candidate.version_id()
        assert metric in rolled["reason"], rolled["reason"]
        breach = next(a for a in rolled["analysis"] if a["metric"] == metric)
        assert breach["passed"] is False
        assert not await stored_events(operator.broker.connection.jetstream(), "rollout.promoted")
        entry = await route_now(operator)
        assert entry.candidate is None and entry.candidate_weight == 0 and entry.rollout is None

        async def replica_caught_up() -> bool:
            async with client_for(url) as client:
                listing = (await client.get("/v1/models")).json()
            return listing["data"][0]["tuneline"]["candidate_version"] is None

        await wait_until(replica_caught_up, timeout=5)
        after = Traffic(url)
        async with client_for(url) as client:
            await asyncio.gather(*(after.one(client, n) for n in range(40)))
        assert {(role, version) for _, role, version, _ in after.answers} == {
            ("stable", base_only(candidate).version_id())
        }


async def test_an_operator_abort_rolls_back_at_once(
    core: CoreSettings, tmp_path: Path, tiny_model: Path, running: Any
) -> None:
    candidate, _ = await stack(core, tmp_path, tiny_model, running)
    async with operator_runtime(core) as operator:
        await passed(operator, candidate)
        await event_of(operator, "rollout.started", timeout=20)
        await operator.bus.publish(
            RolloutAbortRequested(route="support", tenant="acme", reason="wrong ticket")
        )
        rolled = await event_of(operator, "rollout.rolled-back", timeout=20)
        assert rolled["reason"] == "operator: wrong ticket"
        assert (await route_now(operator)).candidate is None


async def test_a_hand_published_gates_passed_starts_no_rollout(
    core: CoreSettings, tmp_path: Path, tiny_model: Path, running: Any
) -> None:
    """The attack: an operator publishes gates.passed for a never-evaluated candidate. The record
    backs no such verdict from the evaluation service: dead-lettered with the reason, no rollout."""
    from schemas.subjects import DLQ_STREAM
    from services.core.messaging.delivery import DLQ_KIND, DLQ_REASON, DLQ_SERVICE

    candidate, _ = await stack(core, tmp_path, tiny_model, running)
    async with operator_runtime(core) as operator:
        await registered(operator, await announce(operator, candidate, "support"))
        await operator.bus.publish(verdict(candidate))  # ce-source tuneline/operator
        js = operator.broker.connection.jetstream()
        sub = await js.pull_subscribe("tuneline.dlq.tuneline.events.gates.passed", stream=DLQ_STREAM)

        async def rollout_letter() -> Any:
            try:
                letters = await sub.fetch(5, timeout=0.5)
            except Exception:  # noqa: BLE001  (none yet)
                return None
            return next((m for m in letters if m.headers[DLQ_SERVICE] == "rollout"), None)

        letter = await wait_until(rollout_letter, timeout=30)
        assert letter.headers[DLQ_KIND] == "permanent-error"
        assert "not by the evaluation service" in letter.headers[DLQ_REASON]
        assert not await stored_events(js, "rollout.started")
        assert await route_now(operator) is None


async def test_a_rolled_back_version_is_never_rolled_out_again_by_a_replayed_gates_passed(
    core: CoreSettings, tmp_path: Path, tiny_model: Path, running: Any
) -> None:
    """State per version, not per delivery: after a rollback, the version's gates.passed again
    (replayed by a recreated consumer, or republished) does nothing."""
    candidate, _ = await stack(core, tmp_path, tiny_model, running)
    async with operator_runtime(core) as operator:
        await passed(operator, candidate)
        await event_of(operator, "rollout.started", timeout=20)
        await operator.bus.publish(RolloutAbortRequested(route="support", tenant="acme", reason="bad"))
        await event_of(operator, "rollout.rolled-back", timeout=20)
        assert (await route_now(operator)).released == {candidate.version_id(): "rolled-back"}

        await passed(operator, candidate)  # a new, valid verdict for the same version
        js = operator.broker.connection.jetstream()
        await asyncio.sleep(2.0)
        assert len(await stored_events(js, "rollout.started")) == 1
        entry = await route_now(operator)
        assert entry.candidate is None and entry.rollout is None
