"""Builds the registry's FastStream app: migrate the database, then consume and answer."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

from faststream import FastStream

from services.core.runtime import ServiceRuntime, build_runtime
from services.registry.config import RegistrySettings
from services.registry.database import create_registry_engine, migrate
from services.registry.handlers import SERVICE, RegistryHandlers, register
from services.registry.store import RegistryStore

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter


@dataclass
class Registry:
    runtime: ServiceRuntime
    store: RegistryStore
    handlers: RegistryHandlers

    @property
    def app(self) -> FastStream:
        return self.runtime.app


def build_registry(
    settings: RegistrySettings,
    *,
    span_exporter: SpanExporter | None = None,
    tracer_provider: TracerProvider | None = None,
) -> Registry:
    runtime = build_runtime(
        SERVICE, settings.core, span_exporter=span_exporter, tracer_provider=tracer_provider
    )
    engine = create_registry_engine(settings.database_url, pool_size=settings.db_pool_size)
    store = RegistryStore(engine)
    handlers = RegistryHandlers(store)
    register(
        runtime.broker,
        handlers,
        bus=runtime.bus,
        delivery=settings.core.delivery,
        metrics=runtime.metrics,
    )

    @runtime.app.on_startup
    async def _migrate() -> None:
        await asyncio.to_thread(migrate, engine)

    @runtime.app.after_shutdown
    async def _close() -> None:
        handlers.writer.shutdown(wait=True)
        engine.dispose()

    return Registry(runtime=runtime, store=store, handlers=handlers)


def create_app(settings: RegistrySettings) -> FastStream:
    return build_registry(settings).app
