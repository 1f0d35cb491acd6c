"""Sequential tests for canary and production analysis: look after every window, keep the false
alarm rate.

Each judged metric is a count of *events* among requests: errors, refusals, schema-invalid
answers, slow requests. Within one window, if candidate and stable have the same event rate, each
event is the candidate's with probability π₀ = n_c / (n_c + n_s), its share of the window's
requests, whatever that rate is. A candidate whose rate is ρ times stable's makes each event its
own with probability π₁ = ρπ₀ / (ρπ₀ + 1 − π₀). The likelihood ratio of ρ against 1 over the
window's events, multiplied over windows, is a nonnegative martingale under "no difference"; so is
its average over a grid of ρ (a mixture). By Ville's inequality the mixture ever reaching 1/α has
probability at most α, however many windows are looked at: a breach is called when it does.
(Conditioning on each window's exposure is the approach of Lindon et al., "Rapid regression
detection in software deployments through sequential testing", KDD 2022. Per-request outcomes
make the window's conditional law hypergeometric rather than binomial; it is less spread, which
only makes the test more conservative. bench/canary.py measures the false alarm rate.)

Slow requests are counted against a threshold fixed before the window is seen: the stable
version's latency quantile over the earlier windows (predictable, so the martingale holds). The
candidate's threshold is that times the allowed ratio (or plus the slack), so a candidate exactly
as much slower as allowed is the null's boundary.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from schemas.rollout import SequentialTest

# alternatives the mixture averages over: a rate ρ times stable's (equal weights)
WORSE = (1.25, 1.5, 2.0, 3.0, 5.0, 10.0)
EITHER_WAY = (0.2, 1 / 3, 0.5, 2 / 3, 1.5, 2.0, 3.0, 5.0)


def observe(
    test: SequentialTest,
    grid: Sequence[float],
    *,
    candidate_events: int,
    candidate_n: int,
    stable_events: int,
    stable_n: int,
) -> SequentialTest:
    """The test after one window of the candidate and stable (n requests, events among them)."""
    log_lr = list(test.log_lr) or [0.0] * len(grid)
    events = candidate_events + stable_events
    if candidate_n > 0 and stable_n > 0 and events > 0:
        pi0 = candidate_n / (candidate_n + stable_n)
        for j, rho in enumerate(grid):
            pi1 = rho * pi0 / (rho * pi0 + 1 - pi0)
            log_lr[j] += candidate_events * math.log(pi1 / pi0) + stable_events * math.log(
                (1 - pi1) / (1 - pi0)
            )
    statistic = mixture(log_lr)
    return test.model_copy(
        update={
            "log_lr": tuple(log_lr),
            "statistic": statistic,
            "max_statistic": max(test.max_statistic, statistic),
            "candidate_events": test.candidate_events + candidate_events,
            "candidate_n": test.candidate_n + candidate_n,
            "stable_events": test.stable_events + stable_events,
            "stable_n": test.stable_n + stable_n,
            "looks": test.looks + 1,
        }
    )


def mixture(log_lr: Sequence[float]) -> float:
    """The average likelihood ratio over the grid, computed without overflow."""
    if not log_lr:
        return 1.0
    top = max(log_lr)
    if top > 700:
        return math.inf
    return sum(math.exp(v) for v in log_lr) / len(log_lr)


def always_valid_p(test: SequentialTest) -> float:
    """The smallest α at which the test would have called a breach so far (1 / max statistic)."""
    return min(1.0, 1.0 / test.max_statistic) if test.max_statistic > 0 else 1.0


def breached(test: SequentialTest, alpha: float) -> bool:
    return test.max_statistic >= 1.0 / alpha


def events_to_call(grid: Sequence[float], alpha: float, share: float) -> int:
    """The fewest consecutive candidate-only events that call a breach at this exposure share:
    the floor below which no regression can be seen, whatever its size."""
    log_lr = [0.0] * len(grid)
    for k in range(1, 10_000):
        for j, rho in enumerate(grid):
            pi1 = rho * share / (rho * share + 1 - share)
            log_lr[j] += math.log(pi1 / share)
        if mixture(log_lr) >= 1 / alpha:
            return k
    return 10_000
