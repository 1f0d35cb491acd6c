"""Builds merging's FastStream app."""

from __future__ import annotations

from faststream import FastStream

from services.core.artifacts import ArtifactStore
from services.core.runtime import build_runtime
from services.merging.config import MergingSettings
from services.merging.handlers import SERVICE, MergingHandlers, register


def create_app(settings: MergingSettings) -> FastStream:
    runtime = build_runtime(SERVICE, settings.core)
    handlers = MergingHandlers(settings, ArtifactStore(settings.core.artifact_root), runtime.broker)
    register(runtime.broker, handlers, bus=runtime.bus, settings=settings, metrics=runtime.metrics)
    return runtime.app
