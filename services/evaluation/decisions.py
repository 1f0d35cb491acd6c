"""Gate decisions as hypothesis tests on paired binary outcomes, with their error rates stated.

Each item of a suite is answered by the candidate and by its reference (the base, a parent):
`x12` items only the reference got right, `x21` only the candidate. The difference of the two
accuracies is δ = (x21 − x12) / n, its nuisance the discordance ψ = (x12 + x21) / n.

- **Non-inferiority** ("no worse than", margin Δ): H0 δ ≤ −Δ against H1 δ > −Δ, Tango's score test
  for paired proportions (the variance taken at the restricted maximum-likelihood estimate under
  H0; Tango 1998, Statistics in Medicine 17:891). Pass only when H0 is rejected at α, which is the
  same as the one-sided (1 − α) lower confidence bound of δ, inverted from the same test, lying
  above −Δ.
- **Superiority** ("better than"): H0 δ ≤ 0, the exact one-sided McNemar test (a binomial test on
  the discordant items); with a margin > 0 the score test at δ0 = +margin.

Every decision carries n, α, the estimate, the bound, the p-value and the minimum detectable
effect at 80 % power (MDE). For non-inferiority the MDE is the smallest margin this suite can
certify for a candidate that truly loses nothing; a margin below it makes the gate `underpowered`:
a candidate as good as its reference would fail more often than 1 time in 5.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

from services.evaluation.stats import bootstrap_means

POWER = 0.8
_Z = NormalDist()


@dataclass(frozen=True)
class PairedCounts:
    n: int
    reference_only: int  # x12: the reference right, the candidate wrong
    candidate_only: int  # x21: the candidate right, the reference wrong

    @classmethod
    def of(cls, reference: Sequence[bool], candidate: Sequence[bool]) -> PairedCounts:
        if len(reference) != len(candidate):
            raise ValueError("paired outcomes must cover the same items")
        pairs = list(zip(reference, candidate, strict=True))
        return cls(len(pairs), sum(r and not c for r, c in pairs), sum(c and not r for r, c in pairs))

    @property
    def delta(self) -> float:
        return (self.candidate_only - self.reference_only) / self.n if self.n else 0.0

    @property
    def discordance(self) -> float:
        return (self.candidate_only + self.reference_only) / self.n if self.n else 0.0

    @property
    def variance(self) -> float:
        """The variance of one item's difference (−1, 0 or +1): ψ − δ². Discordance that all goes
        one way is the effect, not noise: a candidate that loses (or gains) every item it differs
        on has a certain difference, and its MDE is the floor's, not that of a coin-flipping one."""
        return self.discordance - self.delta**2


@dataclass(frozen=True)
class Decision:
    """One gate's test. Effects are in points (percentage points of accuracy)."""

    hypothesis: Literal["non-inferiority", "superiority"]
    method: str
    n: int
    alpha: float
    margin: float
    estimate: float  # candidate − reference
    bound: float  # one-sided (1 − α) lower confidence bound of the difference
    p_value: float
    mde: float  # at 80 % power, at this n and this discordance
    underpowered: bool
    passed: bool

    @property
    def power(self) -> float:
        return POWER


def score_z(counts: PairedCounts, delta0: float) -> float:
    """Tango's score statistic for H0 δ = delta0 (large values speak for δ > delta0)."""
    n, x12, x21 = counts.n, counts.reference_only, counts.candidate_only
    if n == 0:
        return 0.0
    # restricted MLE of p12 under p21 − p12 = delta0: the root of 2n q² − B q − x12 δ0 (1 − δ0) = 0
    b = (x12 + x21) * (1 - delta0) - 2 * delta0 * (n - x21)
    q = (b + math.sqrt(max(b * b + 8 * n * x12 * delta0 * (1 - delta0), 0.0))) / (4 * n)
    variance = n * (2 * q + delta0 - delta0 * delta0)
    numerator = x21 - x12 - n * delta0
    if variance <= 0:
        return math.inf if numerator > 0 else (-math.inf if numerator < 0 else 0.0)
    return numerator / math.sqrt(variance)


def lower_bound(counts: PairedCounts, alpha: float) -> float:
    """The one-sided (1 − α) lower confidence bound of δ: the smallest δ0 the score test keeps."""
    critical = _Z.inv_cdf(1 - alpha)
    low, high = -1.0 + 1e-9, counts.delta
    if score_z(counts, low) <= critical:
        return low
    for _ in range(80):
        middle = (low + high) / 2
        if score_z(counts, middle) > critical:
            low = middle
        else:
            high = middle
    return high


def mde(variance: float, n: int, alpha: float, power: float = POWER) -> float:
    """The effect (in points) detectable with `power` at level α: (z₁₋α + z_power)·√(σ²/n), σ² the
    variance of one item's paired difference: ψ for a candidate with no effect (planning), ψ − δ²
    as measured (`PairedCounts.variance`)."""
    if n == 0:
        return math.inf
    variance = max(variance, 1 / n)  # no discordant item yet: at least one is to be expected
    return 100 * (_Z.inv_cdf(1 - alpha) + _Z.inv_cdf(power)) * math.sqrt(variance / n)


def required_items(discordance: float, margin: float, alpha: float, power: float = POWER) -> int:
    """Items a suite needs so that `margin` (points) is detectable at this discordance."""
    z = _Z.inv_cdf(1 - alpha) + _Z.inv_cdf(power)
    return math.ceil(discordance * (z * 100 / margin) ** 2)


def _paired(
    hypothesis: Literal["non-inferiority", "superiority"],
    method: str,
    counts: PairedCounts,
    alpha: float,
    margin: float,
    p_value: float,
) -> Decision:
    """A paired-proportions decision: the estimate, the score test's bound and the MDE from the
    counts. Only non-inferiority can be underpowered: a superiority gate that cannot see the gain
    fails; it never passes by luck."""
    detectable = mde(counts.variance, counts.n, alpha)
    return Decision(
        hypothesis=hypothesis,
        method=method,
        n=counts.n,
        alpha=alpha,
        margin=margin,
        estimate=100 * counts.delta,
        bound=100 * lower_bound(counts, alpha),
        p_value=p_value,
        mde=detectable,
        underpowered=hypothesis == "non-inferiority" and detectable > margin,
        passed=p_value < alpha,
    )


def noninferiority(counts: PairedCounts, margin: float, alpha: float) -> Decision:
    """Pass when the loss is shown to be smaller than `margin` points."""
    p_value = 1 - _Z.cdf(score_z(counts, -margin / 100))
    return _paired("non-inferiority", "Tango score test, paired proportions", counts, alpha, margin, p_value)


def superiority(counts: PairedCounts, alpha: float, margin: float = 0.0) -> Decision:
    """Pass when the candidate is shown to be better by more than `margin` points."""
    if margin == 0:
        m, k = counts.reference_only + counts.candidate_only, counts.candidate_only
        p_value = sum(math.comb(m, i) for i in range(k, m + 1)) / 2**m if m else 1.0
        method = "exact McNemar, one-sided"
    else:
        p_value = 1 - _Z.cdf(score_z(counts, margin / 100))
        method = "Tango score test, paired proportions"
    return _paired("superiority", method, counts, alpha, margin, p_value)


def _scores(
    hypothesis: Literal["non-inferiority", "superiority"],
    reference: Sequence[float],
    candidate: Sequence[float],
    margin: float,
    alpha: float,
    samples: int,
    seed: int,
) -> Decision:
    """The paired bootstrap's decision for scores in [0, 1]: pass when the one-sided (1 − α) lower
    bound of the mean difference clears the boundary (−margin, or +margin for superiority)."""
    if len(reference) != len(candidate) or not reference:
        raise ValueError("paired scores must cover the same items, at least one")
    boundary = -margin / 100 if hypothesis == "non-inferiority" else margin / 100
    differences = [c - r for r, c in zip(reference, candidate, strict=True)]
    n = len(differences)
    means = bootstrap_means(differences, samples, seed)
    estimate = sum(differences) / n
    bound = means[max(0, math.floor(alpha * samples) - 1)]
    sd = math.sqrt(sum((d - estimate) ** 2 for d in differences) / max(1, n - 1))
    detectable = 100 * (_Z.inv_cdf(1 - alpha) + _Z.inv_cdf(POWER)) * max(sd, 1 / n) / math.sqrt(n)
    return Decision(
        hypothesis=hypothesis,
        method=f"paired bootstrap, one-sided, {samples} resamples",
        n=n,
        alpha=alpha,
        margin=margin,
        estimate=100 * estimate,
        bound=100 * bound,
        # the share of resampled means at or below the boundary: the bootstrap's one-sided p-value
        p_value=sum(m <= boundary for m in means) / samples,
        mde=detectable,
        underpowered=hypothesis == "non-inferiority" and detectable > margin,
        passed=bound > boundary,
    )


def noninferiority_scores(
    reference: Sequence[float], candidate: Sequence[float], margin: float, alpha: float, *,
    samples: int = 2000, seed: int = 0,
) -> Decision:  # fmt: skip
    """Non-inferiority on continuous per-item scores in [0, 1] (token F1, field accuracy)."""
    return _scores("non-inferiority", reference, candidate, margin, alpha, samples, seed)


def superiority_scores(
    reference: Sequence[float], candidate: Sequence[float], alpha: float, margin: float = 0.0, *,
    samples: int = 2000, seed: int = 0,
) -> Decision:  # fmt: skip
    """Superiority on continuous per-item scores: the lower bound must exceed `margin` points."""
    return _scores("superiority", reference, candidate, margin, alpha, samples, seed)


def decide(
    hypothesis: Literal["non-inferiority", "superiority"],
    reference: Sequence[float],
    candidate: Sequence[float],
    margin: float,
    alpha: float,
    *,
    samples: int = 2000,
) -> Decision:
    """The test that fits the outcomes: binary per-item outcomes (correct, refused) take the score
    test or exact McNemar; anything else (token F1, field accuracy, lm-eval metrics) the paired
    bootstrap."""
    if all(v in (0.0, 1.0) for v in (*reference, *candidate)):
        counts = PairedCounts.of([v == 1.0 for v in reference], [v == 1.0 for v in candidate])
        if hypothesis == "non-inferiority":
            return noninferiority(counts, margin, alpha)
        return superiority(counts, alpha, margin)
    return _scores(hypothesis, reference, candidate, margin, alpha, samples, 0)
