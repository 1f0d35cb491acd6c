"""Builds evaluation's FastStream app: subscribers, suite RPCs and the drift schedule."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from faststream import FastStream

from services.core.artifacts import ArtifactStore
from services.core.messaging.rpc import RpcError
from services.core.runtime import ServiceRuntime, build_runtime
from services.evaluation.config import EvaluationSettings
from services.evaluation.handlers import SERVICE, EvaluationHandlers, register

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

log = logging.getLogger(__name__)


@dataclass
class Evaluation:
    runtime: ServiceRuntime
    handlers: EvaluationHandlers
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def app(self) -> FastStream:
        return self.runtime.app


async def drift_schedule(handlers: EvaluationHandlers, runtime: ServiceRuntime, interval_s: float) -> None:
    """Every interval, one drift.check-requested per production route (deduplicated across replicas)."""
    while True:
        await asyncio.sleep(interval_s - time.time() % interval_s)
        slot = int(time.time() // interval_s)
        try:
            count = await handlers.publish_drift_checks(runtime.bus, slot)
            log.info("drift schedule: requested %d checks (slot %d)", count, slot)
        except (RpcError, TimeoutError) as error:
            log.warning("drift schedule: could not list production routes: %s", error)


def build_evaluation(
    settings: EvaluationSettings, *, tracer_provider: TracerProvider | None = None
) -> Evaluation:
    runtime = build_runtime(SERVICE, settings.core, tracer_provider=tracer_provider)
    handlers = EvaluationHandlers(settings, ArtifactStore(settings.core.artifact_root), runtime.broker)
    register(runtime.broker, handlers, bus=runtime.bus, settings=settings, metrics=runtime.metrics)
    service = Evaluation(runtime=runtime, handlers=handlers)

    if settings.drift_interval_s > 0:

        @runtime.app.after_startup
        async def _start_schedule() -> None:
            service.tasks.append(
                asyncio.create_task(drift_schedule(handlers, runtime, settings.drift_interval_s))
            )

        @runtime.app.on_shutdown
        async def _stop_schedule() -> None:
            for task in service.tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    return service


def create_app(settings: EvaluationSettings) -> FastStream:
    return build_evaluation(settings).app
