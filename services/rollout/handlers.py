"""Rollout's subscribers: gates.passed starts a rollout, serving.window drives it, operators steer it."""

from __future__ import annotations

from faststream.nats import NatsBroker

from schemas.evaluation import DriftDetected, GatesPassed
from schemas.rollout import (
    RolloutAbortRequested,
    RolloutPauseRequested,
    RolloutPromoteRequested,
    RolloutResumeRequested,
    RolloutRollbackRequested,
    _OperatorRequest,
)
from schemas.serving import ServingWindow
from schemas.slo import IncidentReported
from services.core.messaging.bus import EventBus
from services.core.messaging.delivery import HandlerContext, PermanentError, subscribe_event
from services.core.prometheus import ServiceMetrics
from services.core.settings import DeliverySettings
from services.rollout.controller import RolloutController
from services.rollout.release import ReleaseRefused

SERVICE = "rollout"
ACTIONS: dict[type[_OperatorRequest], str] = {
    RolloutPauseRequested: "pause",
    RolloutResumeRequested: "resume",
    RolloutAbortRequested: "abort",
    RolloutPromoteRequested: "promote",
    RolloutRollbackRequested: "rollback",
}


class RolloutHandlers:
    def __init__(self, controller: RolloutController) -> None:
        self.controller = controller

    async def on_gates_passed(self, event: GatesPassed, ctx: HandlerContext) -> None:
        try:
            await self.controller.start(event, ctx)
        except ReleaseRefused as refused:  # the record contradicts the verdict: never retried
            raise PermanentError(f"rollout refused: {refused}") from None

    async def on_window(self, event: ServingWindow, ctx: HandlerContext) -> None:
        await self.controller.on_window(event)

    async def on_incident(self, event: IncidentReported, ctx: HandlerContext) -> None:
        await self.controller.incident(event, ctx)

    async def on_drift(self, event: DriftDetected, ctx: HandlerContext) -> None:
        await self.controller.drift(event, ctx)

    async def on_operator(self, event: _OperatorRequest, ctx: HandlerContext) -> None:
        await self.controller.operate(event.route, event.tenant, ACTIONS[type(event)], event.reason, ctx)


def register(
    broker: NatsBroker,
    handlers: RolloutHandlers,
    *,
    bus: EventBus,
    delivery: DeliverySettings,
    metrics: ServiceMetrics | None,
) -> None:
    pairs = [
        (GatesPassed, handlers.on_gates_passed),
        (ServingWindow, handlers.on_window),
        (IncidentReported, handlers.on_incident),
        (DriftDetected, handlers.on_drift),
    ]
    pairs += [(cls, handlers.on_operator) for cls in ACTIONS]
    for event_cls, handler in pairs:
        subscribe_event(
            broker,
            event_cls,  # type: ignore[arg-type]
            handler,  # type: ignore[arg-type]
            service=SERVICE,
            bus=bus,
            delivery=delivery,
            metrics=metrics,
        )
