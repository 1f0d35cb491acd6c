"""A mergeable latency sketch: log-spaced buckets with a relative-accuracy guarantee (DDSketch).

Masson, Rim and Lee, "DDSketch: a fast and fully-mergeable quantile sketch with relative-error
guarantees" (VLDB 2019): bucket i holds the values in (γ^(i−1), γ^i] with γ = (1 + a)/(1 − a),
and every quantile read back is within a relative error `a` of a true value at that rank. Two
sketches merge by adding their bucket counts, so percentiles over many windows and replicas are
true percentiles, not averages of per-window percentiles. At a = 1 %, 1 ms to 100 s fits in
at most 576 buckets; a serving window holds only those its requests fell in.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from pydantic import Field

from schemas.events import Contract

RELATIVE_ACCURACY = 0.01
GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
_LOG_GAMMA = math.log(GAMMA)
MIN_MS = 1e-3  # values at or below this (a microsecond) are counted as zero


def bucket(value_ms: float) -> int | None:
    """The bucket index of a value (None: counted as zero)."""
    if value_ms <= MIN_MS:
        return None
    return math.ceil(math.log(value_ms) / _LOG_GAMMA)


def representative(index: int) -> float:
    """The value a bucket reads back as: within the relative accuracy of everything in it."""
    return 2 * GAMMA**index / (GAMMA + 1)


class LatencySketch(Contract):
    """Request latencies in ms as bucket counts (a DDSketch at 1 % relative accuracy)."""

    bins: dict[int, int] = Field(default_factory=dict, description="bucket index → requests")
    zeros: int = Field(default=0, ge=0, description="Requests at or below a microsecond")

    @classmethod
    def of(cls, values_ms: Iterable[float]) -> LatencySketch:
        bins: dict[int, int] = {}
        zeros = 0
        for value in values_ms:
            index = bucket(value)
            if index is None:
                zeros += 1
            else:
                bins[index] = bins.get(index, 0) + 1
        return cls(bins=bins, zeros=zeros)

    @property
    def count(self) -> int:
        return self.zeros + sum(self.bins.values())

    def merged(self, other: LatencySketch) -> LatencySketch:
        bins = dict(self.bins)
        for index, n in other.bins.items():
            bins[index] = bins.get(index, 0) + n
        return LatencySketch(bins=bins, zeros=self.zeros + other.zeros)

    def quantile(self, q: float) -> float | None:
        """The value at quantile q (0..1), nearest rank; None for an empty sketch."""
        total = self.count
        if total == 0:
            return None
        rank = max(1, math.ceil(q * total))
        seen = self.zeros
        if seen >= rank:
            return 0.0
        for index in sorted(self.bins):
            seen += self.bins[index]
            if seen >= rank:
                return representative(index)
        return representative(max(self.bins))

    def count_above(self, threshold_ms: float) -> int:
        """Requests whose bucket reads back above the threshold."""
        return sum(n for index, n in self.bins.items() if representative(index) > threshold_ms)
