"""Serving's Prometheus metrics (on the internal metrics port: their labels name every route)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class ServingMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "tuneline_serving_requests", "Requests answered, by route, role and HTTP status",
            ["route", "role", "status"], registry=registry,
        )  # fmt: skip
        self.seconds = Histogram(
            "tuneline_serving_request_seconds", "Request latency", ["route", "role"], registry=registry
        )
        self.tokens = Counter(
            "tuneline_serving_completion_tokens", "Generated tokens", ["route", "role"], registry=registry
        )
        self.refused = Counter(
            "tuneline_serving_refused_requests", "Requests refused before generation, by status and code",
            ["status", "code"], registry=registry,
        )  # fmt: skip
