"""Inter-annotator agreement: Cohen's kappa for two raters, Fleiss' kappa for three or more."""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence


def cohen_kappa(first: Sequence[Hashable], second: Sequence[Hashable]) -> float:
    """kappa = (p_o - p_e) / (1 - p_e) over items both raters labelled."""
    if len(first) != len(second) or not first:
        raise ValueError("Cohen's kappa needs two equally long, non-empty label sequences")
    n = len(first)
    observed = sum(a == b for a, b in zip(first, second, strict=True)) / n
    a_counts, b_counts = Counter(first), Counter(second)
    expected = sum(a_counts[k] * b_counts[k] for k in a_counts) / (n * n)
    if expected == 1.0:
        return 1.0  # both raters always used one and the same label: perfect, trivial agreement
    return (observed - expected) / (1 - expected)


def fleiss_kappa(ratings: Sequence[Sequence[Hashable]]) -> float:
    """κ over items that each carry the same number (≥ 2) of ratings."""
    if not ratings:
        raise ValueError("Fleiss' kappa needs at least one rated item")
    per_item = len(ratings[0])
    if per_item < 2 or any(len(r) != per_item for r in ratings):
        raise ValueError("Fleiss' kappa needs the same number (at least 2) of ratings on every item")
    n_items = len(ratings)
    totals: Counter[Hashable] = Counter()
    agreement = 0.0
    for item in ratings:
        counts = Counter(item)
        totals.update(counts)
        agreement += (sum(c * c for c in counts.values()) - per_item) / (per_item * (per_item - 1))
    p_bar = agreement / n_items
    p_e = sum((c / (n_items * per_item)) ** 2 for c in totals.values())
    if p_e == 1.0:
        return 1.0
    return (p_bar - p_e) / (1 - p_e)
