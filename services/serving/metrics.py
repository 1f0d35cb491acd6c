"""Serving's Prometheus metrics (on the internal metrics port: their labels name every route)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from services.core.alert_rules import (  # the alerting rules read these names
    FIRST_TOKEN_SECONDS,
    REFUSALS,
    REQUEST_SECONDS,
    REQUESTS,
    SCHEMA_CHECKED,
)

BUCKETS_S = (0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0)
"""Latency buckets (seconds): the common SLAs are bucket edges, so alerting rules read them exactly."""


class ServingMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            REQUESTS, "Requests answered, by route, role and HTTP status",
            ["route", "role", "status"], registry=registry,
        )  # fmt: skip
        self.seconds = Histogram(
            REQUEST_SECONDS, "Request latency", ["route", "role"],
            buckets=BUCKETS_S, registry=registry,
        )  # fmt: skip
        self.first_token_seconds = Histogram(
            FIRST_TOKEN_SECONDS, "Time to the first token of streamed answers",
            ["route", "role"], buckets=BUCKETS_S, registry=registry,
        )  # fmt: skip
        self.schema_checked = Counter(
            SCHEMA_CHECKED, "Answers that had a JSON schema, by whether they met it",
            ["route", "role", "valid"], registry=registry,
        )  # fmt: skip
        self.refusals = Counter(REFUSALS, "Answers that were refusals", ["route", "role"], registry=registry)
        self.tokens_per_second = Histogram(
            "tuneline_serving_tokens_per_second", "Generated tokens per second of each answered request",
            ["route", "role"], buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000), registry=registry,
        )  # fmt: skip
        self.tokens = Counter(
            "tuneline_serving_completion_tokens", "Generated tokens", ["route", "role"], registry=registry
        )
        self.refused = Counter(
            "tuneline_serving_refused_requests", "Requests refused before generation, by status and code",
            ["status", "code"], registry=registry,
        )  # fmt: skip
