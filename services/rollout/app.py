"""Builds rollout's FastStream app: the route table is opened at startup, then events drive it."""

from __future__ import annotations

from faststream import FastStream

from services.core.routes import RouteTable
from services.core.runtime import build_runtime
from services.rollout.config import RolloutSettings
from services.rollout.controller import RolloutController
from services.rollout.handlers import SERVICE, RolloutHandlers, register


def create_app(settings: RolloutSettings) -> FastStream:
    runtime = build_runtime(SERVICE, settings.core)
    table = RouteTable()  # opened at startup, once connected
    controller = RolloutController(table, runtime.bus, settings.policy)
    register(
        runtime.broker,
        RolloutHandlers(controller),
        bus=runtime.bus,
        delivery=settings.core.delivery,
        metrics=runtime.metrics,
    )

    @runtime.app.on_startup
    async def _open_routes() -> None:
        await runtime.broker.connect()
        table.attach(
            await RouteTable.open(
                runtime.broker.connection.jetstream(), replicas=settings.core.stream.replicas
            )
        )

    return runtime.app
