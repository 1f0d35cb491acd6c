"""The rollout controller's outbox on a real nats-server: a controller killed between writing the
route and publishing loses no decision, and the next writer publishes it once, under its own id."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from schemas.envelope import Envelope
from schemas.events import Event
from schemas.rollout import RolloutPolicy
from schemas.serving import RouteEntry
from schemas.slo import GuardState, IncidentReported, RouteObjectives
from services.core.messaging.bus import EventBus
from services.core.messaging.delivery import HandlerContext
from services.core.messaging.routes import RouteTable
from services.core.settings import CoreSettings
from services.rollout.controller import RolloutController, base_only
from tests.support.events import model_ref
from tests.support.rollout import verdict
from tests.support.services import operator_runtime, registry_app
from tests.support.stream import stored_events

pytestmark = pytest.mark.integration


class CrashingBus(EventBus):
    """A bus whose process dies as it starts to publish: the route write happened, the event not."""

    async def send(self, event: Event, envelope: Envelope, *, timeout: float = 5.0) -> Envelope:
        raise ConnectionError("killed before publishing")


def production_route() -> RouteEntry:
    production = model_ref("prod")
    return RouteEntry(
        route="support", tenant="acme", stable=production, rollback_target=base_only(production),
        objectives=RouteObjectives(), guard=GuardState(version_id=production.version_id()),
    )  # fmt: skip


async def test_a_decision_written_but_not_published_is_published_once_by_the_next_writer(
    core: CoreSettings, tmp_path: Path, running: Any
) -> None:
    await running(registry_app(core, tmp_path))  # it makes the streams
    async with operator_runtime(core) as operator:
        js = operator.broker.connection.jetstream()
        table = await RouteTable.open(js)
        await table.put(production_route(), 0)
        incident = IncidentReported(route="support", tenant="acme", severity="critical", reason="jailbreak")
        envelope = await operator.bus.publish(incident)
        ctx: Any = HandlerContext(envelope=envelope, bus=operator.bus, message=None, attempt=1)  # type: ignore[arg-type]

        crashing = RolloutController(table, CrashingBus(operator.broker, "rollout"), RolloutPolicy())
        with pytest.raises(ConnectionError):
            await crashing.incident(incident, ctx)
        entry, _ = await table.get("support")
        assert entry is not None and entry.stable == base_only(model_ref("prod")), "the rollback was written"
        [pending] = entry.outbox
        assert pending.envelope.type == "tuneline.rollout.rolled-back.v1"
        assert await stored_events(js, "rollout.rolled-back") == [], "and not published"

        # the incident is redelivered to a healthy controller: the outbox goes out first, then the
        # incident finds nothing left to roll back
        healthy = RolloutController(table, EventBus(operator.broker, "rollout"), RolloutPolicy())
        await healthy.incident(incident, ctx)
        await healthy.incident(incident, ctx)  # and once more
        [rolled] = await stored_events(js, "rollout.rolled-back")
        assert (
            rolled.id == pending.envelope.id
            and rolled.payload["candidate_version"] == model_ref("prod").version_id()
        )
        entry, _ = await table.get("support")
        assert entry is not None and entry.outbox == ()


async def test_a_rolled_back_canary_leaves_the_production_watch_in_place(
    core: CoreSettings, tmp_path: Path, running: Any
) -> None:
    """Starting a rollout on a watched route keeps its objectives and watch; an abort resumes it."""
    await running(registry_app(core, tmp_path))
    async with operator_runtime(core) as operator:
        js = operator.broker.connection.jetstream()
        table = await RouteTable.open(js)
        await table.put(production_route(), 0)
        controller = RolloutController(table, EventBus(operator.broker, "rollout"), RolloutPolicy())
        passed = verdict(model_ref("next"))
        envelope = await operator.bus.publish(passed)
        ctx: Any = HandlerContext(envelope=envelope, bus=operator.bus, message=None, attempt=1)  # type: ignore[arg-type]
        await controller.start(passed, ctx)
        entry, _ = await table.get("support")
        assert entry is not None and entry.rollout is not None and entry.guard is not None
        await controller.operate("support", "acme", "abort", "changed our mind", ctx)
        entry, _ = await table.get("support")
        assert entry is not None and entry.rollout is None and entry.objectives == RouteObjectives()
        assert entry.guard is not None and entry.guard.version_id == model_ref("prod").version_id()
        assert [e.type for e in await stored_events(js, "rollout.rolled-back")] == ["rollout.rolled-back"]
