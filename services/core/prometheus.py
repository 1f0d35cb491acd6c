"""Prometheus metrics: one CollectorRegistry per service process, served on /metrics."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server


@dataclass
class ServiceMetrics:
    """The runtime's own counters; FastStream's middleware adds per-subject message metrics."""

    service: str
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.handled = Counter(
            "tuneline_events_handled",
            "Events handled, by type and outcome (ack, nak, dead-letter)",
            ["service", "event_type", "outcome"],
            registry=self.registry,
        )
        self.dead_letters = Counter(
            "tuneline_dead_letters",
            "Messages sent to the dead-letter subject, by reason kind",
            ["service", "subject", "kind"],
            registry=self.registry,
        )
        self.handler_seconds = Histogram(
            "tuneline_handler_seconds",
            "Handler duration",
            ["service", "event_type"],
            registry=self.registry,
        )
        self.published = Counter(
            "tuneline_events_published",
            "Events published, by type",
            ["service", "event_type"],
            registry=self.registry,
        )

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        """Expose /metrics on `port` (0 disables)."""
        if port:
            start_http_server(port, addr=addr, registry=self.registry)
