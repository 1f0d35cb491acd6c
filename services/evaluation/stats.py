"""Paired statistics over per-item outcomes: exact McNemar and a bootstrap interval of the delta."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class McNemar:
    reference_only: int  # reference correct, candidate wrong
    candidate_only: int  # candidate correct, reference wrong
    p_value: float


def mcnemar_exact(reference: Sequence[bool], candidate: Sequence[bool]) -> McNemar:
    """Two-sided exact McNemar test: a binomial test on the discordant pairs with p = 1/2."""
    if len(reference) != len(candidate):
        raise ValueError("paired outcomes must cover the same items")
    b = sum(1 for r, c in zip(reference, candidate, strict=True) if r and not c)
    c = sum(1 for r, cand in zip(reference, candidate, strict=True) if cand and not r)
    n = b + c
    if n == 0:
        return McNemar(b, c, 1.0)
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return McNemar(b, c, min(1.0, 2 * tail))


@dataclass(frozen=True)
class Interval:
    delta: float
    low: float
    high: float


def paired_bootstrap(
    reference: Sequence[float],
    candidate: Sequence[float],
    *,
    samples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Percentile bootstrap CI of mean(candidate) - mean(reference), resampling items in pairs."""
    if len(reference) != len(candidate):
        raise ValueError("paired outcomes must cover the same items")
    n = len(reference)
    if n == 0:
        return Interval(0.0, 0.0, 0.0)
    diffs = [c - r for r, c in zip(reference, candidate, strict=True)]
    means = bootstrap_means(diffs, samples, seed)
    alpha = (1 - confidence) / 2
    low = means[max(0, math.floor(alpha * samples))]
    high = means[min(samples - 1, math.ceil((1 - alpha) * samples) - 1)]
    return Interval(sum(diffs) / n, low, high)


def bootstrap_means(differences: Sequence[float], samples: int, seed: int) -> list[float]:
    """Sorted means of `samples` paired resamples of the per-item differences (numpy, vectorized)."""
    import numpy as np

    values = np.asarray(differences, dtype=float)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(samples, len(values)))].mean(axis=1)
    return sorted(float(m) for m in means)


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile, q in [0, 100]."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    lower = math.floor(position)
    upper = min(lower + 1, len(ordered) - 1)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)
