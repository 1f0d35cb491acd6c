"""Builds curation's FastStream app."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from faststream import FastStream

from services.core.artifacts import ArtifactStore
from services.core.runtime import ServiceRuntime, build_runtime
from services.curation.config import CurationSettings
from services.curation.handlers import SERVICE, CurationHandlers, register

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider


@dataclass
class Curation:
    runtime: ServiceRuntime
    handlers: CurationHandlers

    @property
    def app(self) -> FastStream:
        return self.runtime.app


def build_curation(settings: CurationSettings, *, tracer_provider: TracerProvider | None = None) -> Curation:
    runtime = build_runtime(SERVICE, settings.core, tracer_provider=tracer_provider)
    store = ArtifactStore(settings.core.artifact_root)
    handlers = CurationHandlers(settings, store, runtime.broker)
    register(runtime.broker, handlers, bus=runtime.bus, settings=settings, metrics=runtime.metrics)
    return Curation(runtime=runtime, handlers=handlers)


def create_app(settings: CurationSettings) -> FastStream:
    return build_curation(settings).app
