"""Builds rollout's FastStream app: the route table is opened at startup, then events drive it."""

from __future__ import annotations

from faststream import FastStream

from services.core.routes import RouteTable
from services.core.runtime import build_runtime
from services.rollout.config import RolloutSettings
from services.rollout.controller import RolloutController
from services.rollout.handlers import SERVICE, RolloutHandlers, register


class _LazyTable(RouteTable):
    """The table object exists before the connection does; `open` fills it in at startup."""

    def __init__(self) -> None:
        self.kv = None  # type: ignore[assignment]


def create_app(settings: RolloutSettings) -> FastStream:
    runtime = build_runtime(SERVICE, settings.core)
    table = _LazyTable()
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
        opened = await RouteTable.open(
            runtime.broker.connection.jetstream(), replicas=settings.core.stream.replicas
        )
        table.kv = opened.kv

    return runtime.app
