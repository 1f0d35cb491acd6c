"""Builds training's FastStream app."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from faststream import FastStream

from services.core.artifacts import ArtifactStore
from services.core.runtime import ServiceRuntime, build_runtime
from services.training.config import TrainingSettings
from services.training.control import KvRunControl
from services.training.handlers import SERVICE, TrainingHandlers, register

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider


@dataclass
class Training:
    runtime: ServiceRuntime
    handlers: TrainingHandlers

    @property
    def app(self) -> FastStream:
        return self.runtime.app


def build_training(settings: TrainingSettings, *, tracer_provider: TracerProvider | None = None) -> Training:
    runtime = build_runtime(SERVICE, settings.core, tracer_provider=tracer_provider)
    handlers = TrainingHandlers(settings, ArtifactStore(settings.core.artifact_root), runtime.broker)
    register(runtime.broker, handlers, bus=runtime.bus, settings=settings, metrics=runtime.metrics)

    @runtime.app.on_startup
    async def _open_run_control() -> None:  # after the runtime's own hook has connected
        await runtime.broker.connect()
        handlers.control = await KvRunControl.open(
            runtime.broker.connection.jetstream(), replicas=settings.core.stream.replicas
        )

    return Training(runtime=runtime, handlers=handlers)


def create_app(settings: TrainingSettings) -> FastStream:
    return build_training(settings).app
