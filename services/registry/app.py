"""Builds the registry's FastStream app: migrate the database, then consume and answer."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from faststream import FastStream

from schemas.serving import RouteEntry
from services.core.messaging.routes import NoRouteTable, RouteTable
from services.core.runtime import ServiceRuntime, build_runtime
from services.registry.config import RegistrySettings
from services.registry.database import create_registry_engine, migrate
from services.registry.handlers import SERVICE, RegistryHandlers, register
from services.registry.store import RegistryStore

log = logging.getLogger(__name__)

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

    dashboard: dict[str, Any] = {}
    if settings.http_port:

        @runtime.app.after_startup
        async def _serve_dashboard() -> None:
            import uvicorn

            from services.registry.dashboard import create_dashboard

            async def route_entries() -> list[RouteEntry]:
                """The route table as serving reads it (empty before the first rollout made it)."""
                try:
                    table = await RouteTable.open(runtime.broker.connection.jetstream(), create=False)
                except NoRouteTable:
                    return []
                return list((await table.entries()).values())

            config = uvicorn.Config(
                create_dashboard(store, settings.dashboard_keys_all(), route_entries),
                host=settings.http_host,
                port=settings.http_port,
                log_level="warning",
                lifespan="off",
            )
            server = uvicorn.Server(config)
            dashboard["server"], dashboard["task"] = server, asyncio.create_task(server.serve())
            log.info("dashboard on http://%s:%s/", settings.http_host, settings.http_port)

        @runtime.app.on_shutdown
        async def _stop_dashboard() -> None:
            if "server" in dashboard:
                dashboard["server"].should_exit = True
                await asyncio.gather(dashboard["task"], return_exceptions=True)

    @runtime.app.after_shutdown
    async def _close() -> None:
        handlers.writer.shutdown(wait=True)
        engine.dispose()

    return Registry(runtime=runtime, store=store, handlers=handlers)


def create_app(settings: RegistrySettings) -> FastStream:
    return build_registry(settings).app
