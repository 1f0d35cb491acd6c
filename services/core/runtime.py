"""What every service process shares: one broker, bus, tracer and metrics, built from settings."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from faststream import FastStream
from faststream.middlewares import AckPolicy
from faststream.nats import NatsBroker

from schemas.subjects import rpc_subject
from services.core.messaging.bus import EventBus, build_broker, client_inbox, ensure_streams
from services.core.prometheus import ServiceMetrics
from services.core.security.access import tenant_of_user
from services.core.settings import CoreSettings
from services.core.telemetry import build_tracer_provider

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter


@dataclass
class ServiceRuntime:
    service: str
    settings: CoreSettings
    broker: NatsBroker
    bus: EventBus
    metrics: ServiceMetrics
    tracer_provider: TracerProvider
    app: FastStream = field(init=False)

    def __post_init__(self) -> None:
        self.app = FastStream(self.broker, logger=logging.getLogger(f"tuneline.{self.service}"))
        started = time.time()

        async def health(body: object) -> dict[str, object]:
            consumers = await self.bus.consumers.health(self.broker.connection.jetstream())
            return {
                "service": self.service,
                # a durable that vanished or was altered means work silently stops: not ok
                "status": "unhealthy" if consumers["consumer_problems"] else "ok",
                "pid": os.getpid(),
                "uptime_s": round(time.time() - started, 3),
                **consumers,
            }

        # core request/reply in a queue group; `tuneline up` waits on it, Kubernetes probes can too
        self.broker.subscriber(
            rpc_subject(self.service, "health"),
            queue=self.service,
            ack_policy=AckPolicy.MANUAL,
            title=f"{self.service}:rpc:health",
        )(health)

        @self.app.on_startup
        async def _declare_streams() -> None:
            await self.broker.connect()
            await ensure_streams(self.broker.connection.jetstream(), self.settings.stream)

        @self.app.after_startup
        async def _serve_metrics() -> None:
            self.metrics.serve(self.settings.telemetry.metrics_port)

        @self.app.after_startup
        async def _guard_consumers() -> None:
            self.bus.consumers.interval_s = self.settings.delivery.consumer_check_s
            self.bus.consumers.start(self.broker.connection.jetstream())

        @self.app.on_shutdown
        async def _stop_guard() -> None:
            await self.bus.consumers.stop()

        @self.app.after_shutdown
        async def _flush_traces() -> None:
            self.tracer_provider.shutdown()


def build_runtime(
    service: str,
    settings: CoreSettings,
    *,
    span_exporter: SpanExporter | None = None,
    tracer_provider: TracerProvider | None = None,
    max_reconnect_attempts: int = -1,
) -> ServiceRuntime:
    provider = tracer_provider or build_tracer_provider(
        service, otlp_endpoint=settings.telemetry.otlp_endpoint, exporter=span_exporter
    )
    metrics = ServiceMetrics(service)
    broker = build_broker(
        settings,
        service,
        tracer_provider=provider,
        metrics=metrics,
        max_reconnect_attempts=max_reconnect_attempts,
    )
    bus = EventBus(
        broker,
        service,
        default_tenant=settings.tenant,
        metrics=metrics,
        inbox=client_inbox(settings.nats, service),
    )
    bus.sources_bound = settings.nats.per_user
    bus.tenant_scope = tenant_of_user(settings.nats.user)
    return ServiceRuntime(
        service=service,
        settings=settings,
        broker=broker,
        bus=bus,
        metrics=metrics,
        tracer_provider=provider,
    )


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
