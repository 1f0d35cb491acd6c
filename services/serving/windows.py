"""Per route, version and role counts of one window, turned into `serving.window` stats."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from schemas.serving import Role, RouteVersionWindow
from schemas.sketch import LatencySketch


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil(n·q/100), at least 1
    return ordered[int(rank) - 1]


@dataclass
class _Cell:
    count: int = 0
    errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    ttfts_ms: list[float] = field(default_factory=list)
    schema_checked: int = 0
    schema_valid: int = 0
    refusals: int = 0
    agreement_checked: int = 0
    agreements: int = 0


@dataclass(frozen=True)
class Outcome:
    """What one answered (or failed) request contributes to its window."""

    latency_ms: float
    error: bool = False
    schema_valid: bool | None = None  # None: the request asked for no schema
    refused: bool = False
    agreed: bool | None = None  # shadow only: identical to the stable answer
    ttft_ms: float | None = None  # streamed answers: time to the first token


class WindowCounter:
    def __init__(self) -> None:
        self.started = time.time()
        self.cells: dict[tuple[str, str, str, Role], _Cell] = {}

    def add(self, tenant: str, route: str, version: str, role: Role, outcome: Outcome) -> None:
        cell = self.cells.setdefault((tenant, route, version, role), _Cell())
        cell.count += 1
        cell.errors += outcome.error
        if not outcome.error:
            cell.latencies_ms.append(outcome.latency_ms)
            if outcome.ttft_ms is not None:
                cell.ttfts_ms.append(outcome.ttft_ms)
            cell.refusals += outcome.refused
            if outcome.schema_valid is not None:
                cell.schema_checked += 1
                cell.schema_valid += outcome.schema_valid
        if outcome.agreed is not None:
            cell.agreement_checked += 1
            cell.agreements += outcome.agreed

    def flush(self) -> tuple[float, float, dict[str, list[RouteVersionWindow]]]:
        """(window start, end, stats per tenant); the counter starts a new window."""
        start, end = self.started, time.time()
        cells, self.cells, self.started = self.cells, {}, end
        per_tenant: dict[str, list[RouteVersionWindow]] = {}
        for (tenant, route, version, role), cell in sorted(cells.items()):
            answered = cell.count - cell.errors
            per_tenant.setdefault(tenant, []).append(
                RouteVersionWindow(
                    route=route,
                    version_id=version,
                    role=role,
                    count=cell.count,
                    errors=cell.errors,
                    latency_p50_ms=percentile(cell.latencies_ms, 50) if cell.latencies_ms else None,
                    latency_p95_ms=percentile(cell.latencies_ms, 95) if cell.latencies_ms else None,
                    latency=LatencySketch.of(cell.latencies_ms),
                    ttft=LatencySketch.of(cell.ttfts_ms) if cell.ttfts_ms else None,
                    schema_valid_rate=cell.schema_valid / cell.schema_checked
                    if cell.schema_checked
                    else None,
                    refusal_rate=cell.refusals / answered if answered else None,
                    schema_checked=cell.schema_checked,
                    schema_valid=cell.schema_valid,
                    refusals=cell.refusals,
                    agreement_checked=cell.agreement_checked,
                    agreements=cell.agreements,
                )
            )
        return start, end, per_tenant
