"""Builds rollout's FastStream app: the route table is opened at startup, then events drive it."""

from __future__ import annotations

from faststream import FastStream

from schemas.queries import EVALS_GET, EvalDetail, EvalsQuery
from services.core.messaging.routes import RouteTable
from services.core.messaging.rpc import RpcError, ask
from services.core.runtime import build_runtime
from services.rollout.config import RolloutSettings
from services.rollout.controller import RolloutController
from services.rollout.handlers import SERVICE, RolloutHandlers, register
from services.rollout.release import ReleaseNotRecorded, check_release


def create_app(settings: RolloutSettings) -> FastStream:
    runtime = build_runtime(SERVICE, settings.core)
    table = RouteTable()  # opened at startup, once connected

    async def verify(version: str, verdict_id: str) -> None:
        try:
            answer: EvalDetail | None = await ask(runtime.broker, EVALS_GET, EvalsQuery(version_id=version))
        except RpcError as error:
            if error.code != "not-found":
                raise ReleaseNotRecorded(f"could not ask the registry about {version}: {error}") from None
            answer = None
        check_release(answer, version, verdict_id)

    controller = RolloutController(table, runtime.bus, settings.policy, verify=verify)
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
