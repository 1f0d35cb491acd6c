"""The production watch's statistic: how long a healthy route goes without a false alarm, how fast
a breach is caught, and that one bad request is never enough."""

from __future__ import annotations

import random
import statistics

from schemas.slo import WatchState
from services.core import route_watch as watch

BOUND = 0.001  # errors at most 0.1 %


def _run(rng: random.Random, rate: float, n: int, limit: int, arl: float) -> int | None:
    """Windows until the alarm (None: none within `limit`)."""
    state = WatchState()
    for t in range(1, limit + 1):
        events = sum(rng.random() < rate for _ in range(n)) if rate > 0 else 0
        state = watch.observe(state, events, n, BOUND)
        if watch.alarmed(state, arl):
            return t
    return None


def test_a_route_at_its_objective_rarely_alarms_and_a_tenfold_breach_is_caught_in_windows() -> None:
    rng = random.Random(5)
    arl = 1000.0
    # at exactly the objective (the null's boundary), 200 requests a window, 300 windows each
    false = [_run(rng, BOUND, 200, 300, arl) for _ in range(100)]
    alarms = sum(t is not None for t in false)
    # ARL >= 1000 windows: in 300 windows, at most about 30 % of runs may alarm; far fewer do
    assert alarms <= 15, f"{alarms} of 100 healthy runs alarmed within 300 windows"
    caught = [_run(rng, 10 * BOUND, 200, 300, arl) for _ in range(100)]
    delays = [t for t in caught if t is not None]
    assert len(delays) == 100, "every 1 % error route is caught"
    assert statistics.median(delays) <= 25, f"median delay {statistics.median(delays)} windows"


def test_a_long_healthy_past_does_not_slow_the_alarm() -> None:
    rng = random.Random(9)
    state = WatchState()
    for _ in range(2000):  # a week of quiet at 5-minute windows
        state = watch.observe(state, 0, 200, BOUND)
    healthy = watch.statistic(state)
    assert healthy < 10, "a quiet past leaves the statistic near its floor, not far below it"
    delay = None
    for t in range(1, 100):
        events = sum(rng.random() < 0.01 for _ in range(200))
        state = watch.observe(state, events, 200, BOUND)
        if watch.alarmed(state, 1000.0):
            delay = t
            break
    assert delay is not None and delay <= 40, "the alarm comes as fast after a quiet week as after none"


def test_one_bad_request_is_not_an_alarm() -> None:
    state = watch.observe(WatchState(), 1, 1, BOUND)
    # at most the largest alternative's ratio to the bound (0.2 / 0.001 here), far below a
    # threshold of a month of windows (518,400 at 5 s)
    assert not watch.alarmed(state, 1000.0) and watch.statistic(state) < 250
    assert watch.reset(state) == WatchState()


def test_the_stated_detection_delay_matches_what_random_breaches_take() -> None:
    """`windows_to_alarm` (the mean path) is what an objective states it detects; simulated
    breaches at 10x the bound are caught around it: the stated delay is the median's neighbour
    and at least 90 % are caught within twice it."""
    stated = watch.windows_to_alarm(BOUND, 10 * BOUND, 200, 1000.0)
    assert stated is not None and 2 <= stated <= 8
    rng = random.Random(11)
    delays = [_run(rng, 10 * BOUND, 200, 300, 1000.0) for _ in range(200)]
    assert all(d is not None for d in delays)
    found = [d for d in delays if d is not None]
    assert abs(statistics.median(found) - stated) <= 2, (statistics.median(found), stated)
    assert sum(d <= 2 * stated for d in found) >= 0.9 * len(found)
    # a breach at the bound itself is never "detected"; more requests a window detect sooner
    assert watch.windows_to_alarm(BOUND, BOUND, 200, 1000.0) is None
    slower = watch.windows_to_alarm(BOUND, 10 * BOUND, 50, 1000.0)
    assert slower is not None and slower > stated
