"""Watching a production route against its objectives, window after window, with no end.

A canary test ends with the rollout; a production route is watched for ever, so its test must
not lose its alarm to a long healthy past, and its error rate is stated per unit of time rather
than once. Each objective is a rate bound p₀ (errors ≤ 0.1 %, schema-invalid ≤ 2 %, slow requests
≤ 5 % above the latency objective, refusals outside the band). The statistic is a mixture of
Shiryaev–Roberts statistics, one per alternative rate p₁ (2–20 times p₀, and p₀ plus 5–20 % of
the distance to 1, so that rare and common events both have near alternatives):

    R_t(p₁) = (1 + R_{t−1}(p₁)) · LR_t(p₁),   LR_t(p₁) = (p₁/p₀)^x · ((1 − p₁)/(1 − p₀))^(n − x)

for a window of n requests with x events. Under the objective, R_t(ρ) − t is a martingale, and
so is the mixture's; so the alarm at R_t ≥ A comes on average no sooner than A windows into a
healthy stretch (Pollak 1987; the average run length to false alarm, ARL₀ ≥ A). After a breach
begins, R grows geometrically: the delay is a few windows' worth of events, which
tests/unit/test_route_watch.py measures. A single slow request moves R by a factor p₁/p₀ at most: no
alarm from one request.
"""

from __future__ import annotations

import math

from schemas.slo import WatchState

RATIOS = (2.0, 3.0, 5.0, 10.0, 20.0)
"""Alternatives as multiples of the bound: what a rare-event objective (errors) meets."""
SHIFTS = (0.05, 0.1, 0.2)
"""... and as a share of the distance to 1: what a common-event objective (a refusal band) meets."""


def alternatives(bound: float) -> tuple[float, ...]:
    """The alternative rates the mixture averages over, all above the bound and below 1."""
    rates = {rho * bound for rho in RATIOS} | {bound + k * (1 - bound) for k in SHIFTS}
    return tuple(sorted(p for p in rates if bound < p < 1))


def _log_lrs(bound: float, events: float, n: int) -> list[float]:
    """log LR_t(p₁) of one window, per alternative p₁."""
    return [
        events * math.log(p1 / bound) + (n - events) * math.log((1 - p1) / (1 - bound))
        for p1 in alternatives(bound)
    ]


def _step(stats: list[float], log_lrs: list[float]) -> list[float]:
    """R_t = (1 + R_{t-1}) · LR_t per alternative, in logs (capped: no overflow)."""
    return [math.exp(min(log_lr + math.log1p(r), 700.0)) for r, log_lr in zip(stats, log_lrs, strict=True)]


def observe(state: WatchState, events: int, n: int, bound: float) -> WatchState:
    """The statistic after one window of `n` requests holding `events` events, against the rate
    bound p₀ = `bound`."""
    stats = list(state.statistics) or [0.0] * len(alternatives(bound))
    if n > 0 and 0 < bound < 1:
        stats = _step(stats, _log_lrs(bound, events, n))
    return state.model_copy(
        update={
            "statistics": tuple(stats),
            "windows": state.windows + 1,
            "events": state.events + events,
            "requests": state.requests + n,
        }
    )


def statistic(state: WatchState) -> float:
    return state.statistic


def alarmed(state: WatchState, arl_windows: float) -> bool:
    return statistic(state) >= arl_windows


def reset(state: WatchState) -> WatchState:
    """After an alarm (acted on), the watch starts again from the next window."""
    return state.model_copy(update={"statistics": (), "windows": 0, "events": 0, "requests": 0})


def windows_to_alarm(
    bound: float, rate: float, n: int, arl_windows: float, limit: int = 100_000
) -> int | None:
    """What an objective states it detects: the windows until the alarm when `rate` (above the
    bound) holds and each window brings `n` requests, along the path where events arrive at their
    mean (x = rate·n each window). Real delays scatter around it (tests/unit/test_route_watch.py
    measures the spread); None when the alarm does not come within `limit` windows."""
    if not 0 < bound < 1 or rate <= bound or n <= 0:
        return None
    log_lrs = _log_lrs(bound, min(rate, 1.0) * n, n)  # the same every window on the mean path
    stats = [0.0] * len(log_lrs)
    for window in range(1, limit + 1):
        stats = _step(stats, log_lrs)
        if sum(stats) / len(stats) >= arl_windows:
            return window
    return None
