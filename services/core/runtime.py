"""What every service process shares: one broker, bus, tracer and metrics, built from settings."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from faststream import FastStream
from faststream.nats import NatsBroker

from services.core.bus import EventBus, build_broker, ensure_streams
from services.core.metrics import ServiceMetrics
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

        @self.app.on_startup
        async def _declare_streams() -> None:
            await self.broker.connect()
            await ensure_streams(self.broker.connection.jetstream(), self.settings.stream)

        @self.app.after_startup
        async def _serve_metrics() -> None:
            self.metrics.serve(self.settings.telemetry.metrics_port)

        @self.app.after_shutdown
        async def _flush_traces() -> None:
            self.tracer_provider.shutdown()


def build_runtime(
    service: str,
    settings: CoreSettings,
    *,
    span_exporter: SpanExporter | None = None,
    tracer_provider: TracerProvider | None = None,
) -> ServiceRuntime:
    provider = tracer_provider or build_tracer_provider(
        service, otlp_endpoint=settings.telemetry.otlp_endpoint, exporter=span_exporter
    )
    metrics = ServiceMetrics(service)
    broker = build_broker(settings, service, tracer_provider=provider, metrics=metrics)
    bus = EventBus(broker, service, default_tenant=settings.tenant, metrics=metrics)
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
