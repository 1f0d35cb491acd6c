"""The canary's statistics: the mergeable latency sketch and the sequential test's error rates."""

from __future__ import annotations

import math
import random

import pytest

from schemas.rollout import SequentialTest
from schemas.sketch import LatencySketch
from services.rollout import sequential


def _exact(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def test_quantiles_are_within_one_percent_and_sketches_merge_exactly() -> None:
    rng = random.Random(3)
    values = [rng.lognormvariate(math.log(400), 0.6) for _ in range(20_000)]
    sketch = LatencySketch.of(values)
    for q in (0.5, 0.9, 0.95, 0.99):
        assert sketch.quantile(q) == pytest.approx(_exact(values, q), rel=0.01)
    # windows from two replicas merge into the sketch of every request: a true p95, not a mean of p95s
    halves = LatencySketch.of(values[:5000]).merged(LatencySketch.of(values[5000:]))
    assert halves == sketch and halves.count == 20_000
    slow = sum(v > 1000 for v in values)
    assert abs(sketch.count_above(1000) - slow) <= 0.01 * len(values)
    # it travels as JSON (bucket indexes as keys) and comes back equal
    assert LatencySketch.model_validate_json(sketch.model_dump_json()) == sketch
    assert LatencySketch().quantile(0.95) is None and LatencySketch.of([0.0]).quantile(0.5) == 0.0


def _stream(rng: random.Random, ratio: float, windows: int, alpha: float) -> bool:
    """A candidate whose event rate is `ratio` times stable's 2 %, at a changing traffic share."""
    test = SequentialTest()
    for _ in range(windows):
        n_c = rng.randint(5, 60)
        n_s = rng.randint(40, 200)
        x_c = sum(rng.random() < 0.02 * ratio for _ in range(n_c))
        x_s = sum(rng.random() < 0.02 for _ in range(n_s))
        test = sequential.observe(
            test, sequential.WORSE, candidate_events=x_c, candidate_n=n_c, stable_events=x_s, stable_n=n_s
        )
        if sequential.breached(test, alpha):
            return True
    return False


def test_looking_after_every_window_keeps_the_false_alarm_rate() -> None:
    rng = random.Random(11)
    alpha, runs = 0.05, 400
    alarms = sum(_stream(rng, 1.0, 150, alpha) for _ in range(runs))
    assert alarms / runs <= alpha, f"{alarms} false alarms in {runs} A/A streams of 150 looks"
    caught = sum(_stream(rng, 3.0, 150, alpha) for _ in range(100))
    assert caught >= 95, "a tripled event rate is caught"


def test_a_breach_needs_a_stated_number_of_events() -> None:
    alpha = 0.0025
    at_half = sequential.events_to_call(sequential.WORSE, alpha, 0.5)
    at_one_percent = sequential.events_to_call(sequential.WORSE, alpha, 0.01)
    assert at_one_percent < at_half, "at a small share each candidate event is stronger evidence"
    test = SequentialTest()
    for _ in range(at_half - 1):
        test = sequential.observe(
            test, sequential.WORSE, candidate_events=1, candidate_n=10, stable_events=0, stable_n=10
        )
    assert not sequential.breached(test, alpha), "one event short of the floor"
    test = sequential.observe(
        test, sequential.WORSE, candidate_events=1, candidate_n=10, stable_events=0, stable_n=10
    )
    assert sequential.breached(test, alpha) and sequential.always_valid_p(test) <= alpha
