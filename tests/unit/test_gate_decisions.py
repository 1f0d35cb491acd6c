"""The gates' tests, simulated over recorded-style per-item outcomes (no model): many simulated
evaluations of a suite sized for its margin, at the discordance the demo measures (31 of 180
items answered differently by candidate and base). The stated error rates must hold:

- a candidate whose true loss equals the margin passes at most α of the time (type I error);
- a candidate identical to the base passes at least at the stated 80 % power;
- a planted 5-point loss fails at least 1 − α of the time.

Monte-Carlo tolerance: three standard errors of a proportion over the simulated runs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from services.evaluation.decisions import (
    PairedCounts,
    lower_bound,
    mde,
    noninferiority,
    noninferiority_scores,
    required_items,
    score_z,
    superiority,
    superiority_scores,
)

ALPHA, MARGIN, RUNS = 0.05, 2.0, 1500
DISCORDANCE = 31 / 180  # measured on the demo's capability suite (base vs candidate)
REFERENCE_ACCURACY = 0.30


def simulate(n: int, true_delta: float, runs: int = RUNS, seed: int = 0) -> list[PairedCounts]:
    """Paired outcomes of `runs` evaluations: cells (both right, reference only, candidate only, none)."""
    p12 = (DISCORDANCE - true_delta) / 2  # reference only
    p21 = (DISCORDANCE + true_delta) / 2  # candidate only
    p11 = REFERENCE_ACCURACY - p12
    cells = np.random.default_rng(seed).multinomial(n, [p11, p12, p21, 1 - p11 - p12 - p21], size=runs)
    return [PairedCounts(n, int(row[1]), int(row[2])) for row in cells]


def pass_rate(n: int, true_delta: float) -> float:
    return float(np.mean([noninferiority(c, MARGIN, ALPHA).passed for c in simulate(n, true_delta)]))


def tolerance(p: float) -> float:
    return 3 * math.sqrt(p * (1 - p) / RUNS)


N = required_items(DISCORDANCE, MARGIN, ALPHA)


def test_the_suite_size_for_a_2_point_margin_at_the_demos_discordance() -> None:
    assert N == 2662  # ψ (z₀.₉₅ + z₀.₈)² / Δ² = 0.172 × 2.486² / 0.02²
    assert mde(DISCORDANCE, N, ALPHA) <= MARGIN < mde(DISCORDANCE, N - 50, ALPHA) + 0.05


def test_a_candidate_that_loses_exactly_the_margin_passes_at_most_alpha_of_the_time() -> None:
    rate = pass_rate(N, -MARGIN / 100)
    assert rate <= ALPHA + tolerance(ALPHA), rate


def test_a_candidate_identical_to_the_base_passes_at_the_stated_power() -> None:
    rate = pass_rate(N, 0.0)
    assert rate >= 0.8 - tolerance(0.8), rate


def test_a_planted_5_point_loss_fails_at_least_1_minus_alpha_of_the_time() -> None:
    rate = pass_rate(N, -0.05)
    assert 1 - rate >= 1 - ALPHA, rate


def test_the_demos_180_items_cannot_see_a_2_point_margin_and_say_so() -> None:
    """The figures from the issue: base 30.0, candidate 32.8, 31 discordant items of 180."""
    decision = noninferiority(PairedCounts(180, 14, 17), MARGIN, ALPHA)
    assert decision.underpowered and not decision.passed
    assert decision.mde == pytest.approx(7.69, abs=0.01)
    assert decision.bound < -MARGIN < decision.estimate


def test_discordance_that_all_goes_one_way_is_the_effect_not_noise() -> None:
    """20 items, margin 25: the suite certifies that margin for a candidate with no effect (MDE at
    the floor, 1 discordant item in 20, 12.4 points). A candidate that answers all 20 prompts its
    reference refused is better beyond doubt, not underpowered; one that loses all 20 fails on its
    bound, not on power."""
    gained = noninferiority(PairedCounts(20, 0, 20), 25.0, ALPHA)
    assert gained.passed and not gained.underpowered and gained.mde == pytest.approx(12.43, abs=0.01)
    lost = noninferiority(PairedCounts(20, 20, 0), 25.0, ALPHA)
    assert not lost.passed and not lost.underpowered and lost.bound < -90
    coin = noninferiority(PairedCounts(20, 10, 10), 25.0, ALPHA)
    assert coin.underpowered and coin.mde == pytest.approx(55.6, abs=0.1)


def test_the_bound_is_the_test_inverted() -> None:
    counts = PairedCounts(2662, 230, 228)
    bound = lower_bound(counts, ALPHA)
    assert score_z(counts, bound) == pytest.approx(1.6449, abs=1e-3)
    decision = noninferiority(counts, MARGIN, ALPHA)
    assert decision.passed == (decision.bound > -MARGIN)


def test_superiority_is_exact_mcnemar_one_sided() -> None:
    decision = superiority(PairedCounts(100, 2, 10), ALPHA)
    assert decision.p_value == pytest.approx(sum(math.comb(12, k) for k in range(10, 13)) / 2**12)
    assert decision.passed and decision.method == "exact McNemar, one-sided"
    assert not superiority(PairedCounts(100, 5, 7), ALPHA).passed


# -- continuous per-item scores (token F1, field accuracy): the paired bootstrap -------------------
SD = 0.15  # spread of per-item score differences
N_SCORES = math.ceil(((1.6449 + 0.8416) * SD * 100 / MARGIN) ** 2)  # 348 items for a 2-point margin


def score_pass_rate(true_delta: float, runs: int = 400) -> float:
    rng = np.random.default_rng(5)
    passed = 0
    for run in range(runs):
        reference = rng.uniform(0.3, 0.7, N_SCORES)
        candidate = reference + true_delta + rng.normal(0, SD, N_SCORES)
        decision = noninferiority_scores(
            list(reference), list(candidate), MARGIN, ALPHA, samples=1000, seed=run
        )
        passed += decision.passed
    return passed / runs


def test_continuous_scores_keep_the_stated_error_rates() -> None:
    """400 simulated evaluations each: loss = margin, A/A, a 5-point loss (tolerance 3 SE of 400)."""
    loose = lambda p: 3 * math.sqrt(p * (1 - p) / 400)  # noqa: E731
    assert score_pass_rate(-MARGIN / 100) <= ALPHA + loose(ALPHA)
    assert score_pass_rate(0.0) >= 0.8 - loose(0.8)
    assert score_pass_rate(-0.05) <= ALPHA
    decision = noninferiority_scores([0.5] * 10, [0.4] * 10, MARGIN, ALPHA)
    assert decision.estimate == pytest.approx(-10.0) and not decision.passed
    assert superiority_scores([0.2] * 50, [0.6] * 50, ALPHA, margin=5.0).passed
