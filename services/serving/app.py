"""Builds serving: the NATS side (route watcher, serving.window, decision log) and the HTTP server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn

from services.core.artifacts import ArtifactStore
from services.core.messaging.routes import RouteTable
from services.core.runtime import ServiceRuntime, build_runtime
from services.serving.api import create_http_app
from services.serving.config import ServingSettings
from services.serving.generation import Backend
from services.serving.service import ServingService

SERVICE = "serving"
log = logging.getLogger(__name__)


def build_backend(settings: ServingSettings, store: ArtifactStore) -> Backend:
    work_dir = Path(settings.work_dir)
    if settings.backend == "vllm":
        from services.serving.vllm_backend import VllmBackend

        return VllmBackend(
            store, model_cache=settings.core.model_cache, work_dir=work_dir,
            max_loras=settings.max_resident_adapters,
        )  # fmt: skip
    from services.serving.transformers_backend import TransformersBackend

    return TransformersBackend(
        store,
        model_cache=settings.core.model_cache,
        work_dir=work_dir,
        device=settings.device,
        dtype=settings.dtype,
        max_batch_size=settings.max_batch_size,
        batch_wait_ms=settings.batch_wait_ms,
        max_resident_adapters=settings.max_resident_adapters,
        max_resident_models=settings.max_resident_models,
    )


@dataclass
class Serving:
    runtime: ServiceRuntime
    service: ServingService
    settings: ServingSettings
    server: uvicorn.Server | None = None
    server_task: asyncio.Task[Any] | None = None
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    routes_ready: asyncio.Event = field(default_factory=asyncio.Event)
    started: float = field(default_factory=time.time)

    @property
    def port(self) -> int | None:
        # uvicorn sets `servers` only once it listens: before that, no port yet
        if self.server is None or not getattr(self.server, "servers", None):
            return None
        return int(self.server.servers[0].sockets[0].getsockname()[1])

    def health(self) -> dict[str, Any]:
        connected = (
            self.runtime.broker._connection is not None and self.runtime.broker._connection.is_connected
        )
        ok = connected and self.routes_ready.is_set()
        return {
            "service": SERVICE,
            "status": "ok" if ok else "starting",
            "nats_connected": connected,
            "routes": len(self.service.book.routes),
            "replica": self.settings.replica,
            "uptime_s": round(time.time() - self.started, 3),
            "backend": self.service.backend.status(),
        }


def build_serving(settings: ServingSettings) -> Serving:
    runtime = build_runtime(SERVICE, settings.core)
    store = ArtifactStore(settings.core.artifact_root)
    backend = build_backend(settings, store)
    service = ServingService(
        settings, backend, broker=runtime.broker, bus=runtime.bus, registry=runtime.metrics.registry
    )
    serving = Serving(runtime, service, settings)

    @runtime.app.after_startup
    async def _start() -> None:
        table = await RouteTable.open(
            runtime.broker.connection.jetstream(), replicas=settings.core.stream.replicas
        )
        await backend.start()
        serving.tasks.append(asyncio.create_task(table.watch(service.book.apply, serving.routes_ready)))
        serving.tasks.append(asyncio.create_task(_windows(service, settings.window_s)))
        await asyncio.wait_for(serving.routes_ready.wait(), 30)
        http = create_http_app(service, serving.health)
        config = uvicorn.Config(
            http, host=settings.host, port=settings.port, log_level="warning", lifespan="off"
        )
        serving.server = uvicorn.Server(config)
        serving.server_task = asyncio.create_task(serving.server.serve())
        while not serving.server.started:
            await asyncio.sleep(0.05)
        log.info("serving on http://%s:%s (%s backend)", settings.host, serving.port, backend.name)

    @runtime.app.on_shutdown
    async def _stop() -> None:
        if serving.server is not None:
            serving.server.should_exit = True  # finishes the requests in flight, then returns
        for task in serving.tasks:
            task.cancel()
        await asyncio.gather(*serving.tasks, *filter(None, [serving.server_task]), return_exceptions=True)
        with contextlib.suppress(Exception):
            await service.publish_window()  # the last partial window
        await service.drain()
        await backend.stop()

    return serving


async def _windows(service: ServingService, period: float) -> None:
    while True:
        await asyncio.sleep(period)
        try:
            await service.publish_window()
        except Exception:
            log.exception("could not publish serving.window")


def create_app(settings: ServingSettings) -> Any:
    return build_serving(settings).runtime.app
