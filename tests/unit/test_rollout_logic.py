"""Rollout analysis and serving's routing, as plain functions: no broker, no model."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from schemas.refs import BaseModelRef, ModelRef, TokenizerRef
from schemas.rollout import RolloutPolicy, RolloutState
from schemas.serving import RouteEntry, RouteVersionWindow, ServingWindow
from schemas.sketch import LatencySketch
from services.rollout import analysis
from services.serving.routing import RequestRefused, RouteBook, refuse_weight_choice
from services.serving.windows import Outcome, WindowCounter, percentile

POLICY = RolloutPolicy(shadow_min_requests=4, min_requests=4, min_seconds=10)


def state(phase: str = "canary", step: int = 0, **fields: object) -> RolloutState:
    values: dict[str, object] = {
        "rollout_id": "ro-1",
        "candidate_version": "mv-cand",
        "stable_version": "mv-stable",
        "origin_event_id": "e1",
        "correlation_id": "c1",
        "phase": phase,
        "step_index": step if phase == "canary" else -1,
        "step_started_at": 1000.0,
        "policy": POLICY,
        **fields,
    }
    return RolloutState.model_validate(values)


def stat(
    role: str, version: str, count: int, errors: int = 0, p95: float = 100.0, **more: int
) -> RouteVersionWindow:
    """A window's stats whose answered requests all took `p95` ms."""
    answered = count - errors
    return RouteVersionWindow(
        route="support", version_id=version, role=role, count=count, errors=errors,  # type: ignore[arg-type]
        latency_p50_ms=p95, latency_p95_ms=p95, latency=LatencySketch.of([p95] * answered), **more,
    )  # fmt: skip


def test_a_window_is_counted_once_per_replica_even_when_redelivered() -> None:
    w = window(1010, stat("stable", "mv-stable", 20), stat("candidate", "mv-cand", 2))
    once = analysis.accumulate(state(), "support", w)
    twice = analysis.accumulate(once, "support", w)
    assert (twice.stable.count, twice.candidate.count) == (20, 2)
    other = analysis.accumulate(twice, "support", window(1010, stat("candidate", "mv-cand", 3), replica="r2"))
    assert other.candidate.count == 5


def test_stats_of_other_routes_versions_and_roles_are_not_counted() -> None:
    w = window(
        1010,
        stat("candidate", "mv-other", 9),
        stat("shadow", "mv-cand", 9),  # shadow answers count only in the shadow phase
        RouteVersionWindow(route="billing", version_id="mv-cand", role="candidate", count=9, errors=0),
    )
    counted = analysis.accumulate(state(), "support", w)
    assert counted.candidate.count == 0 and counted.stable.count == 0


def window(end: float, *stats: RouteVersionWindow, replica: str = "r1") -> ServingWindow:
    return ServingWindow(replica=replica, window_start=end - 5, window_end=end, tenant="acme", stats=stats)


def windows(first: RolloutState, count: int, *stats: RouteVersionWindow, start: float = 1001) -> RolloutState:
    """`count` windows, 1 s apart, each with the same stats."""
    current = first
    for i in range(count):
        current = analysis.accumulate(current, "support", window(start + i, *stats))
    return current


def test_a_candidate_that_fails_is_rolled_back_and_one_error_is_not_enough() -> None:
    one = windows(state(), 1, stat("stable", "mv-stable", 200), stat("candidate", "mv-cand", 20, errors=1))
    action, findings = analysis.decide(one, 1002)
    errors = next(a for a in findings if a.metric == "error_rate")
    assert action == "hold" and errors.judgement == "no-evidence-of-harm" and errors.candidate_events == 1
    assert errors.alpha == pytest.approx(0.01 / 4) and errors.threshold == pytest.approx(400)
    assert errors.statistic is not None and errors.statistic < 400
    failing = windows(
        state(), 2, stat("stable", "mv-stable", 200), stat("candidate", "mv-cand", 20, errors=20)
    )
    action, findings = analysis.decide(failing, 1003)
    assert action == "rollback"
    breach = next(a for a in findings if a.metric == "error_rate")
    assert breach.judgement == "breach" and breach.p_value is not None and breach.p_value <= breach.alpha
    assert (
        "error_rate: candidate 1 vs stable 0; 40 of 40 candidate requests vs 0 of 400"
        in analysis.breaches(findings)
    )


def test_a_slow_candidate_breaches_only_beyond_ratio_and_slack() -> None:
    reference = windows(state(), 1, stat("stable", "mv-stable", 200, p95=100))  # stable's latency so far
    slow = windows(
        reference,
        5,
        stat("stable", "mv-stable", 200, p95=100),
        stat("candidate", "mv-cand", 20, p95=200),
        start=1002,
    )
    action, findings = analysis.decide(slow, 1011)
    latency = next(a for a in findings if a.metric == "latency_slow_rate")
    assert action == "rollback" and latency.judgement == "breach"
    assert latency.candidate == pytest.approx(200, rel=0.01) and latency.stable == pytest.approx(
        100, rel=0.01
    )
    reference = windows(state(), 1, stat("stable", "mv-stable", 200, p95=10))
    a_bit = windows(
        reference,
        5,
        stat("stable", "mv-stable", 200, p95=10),
        stat("candidate", "mv-cand", 20, p95=20),
        start=1002,
    )
    assert analysis.decide(a_bit, 1011)[0] == "advance"  # 2x, but 10 ms apart: within the 25 ms slack


def test_schema_validity_and_refusals_are_judged_by_their_own_tests() -> None:
    invalid = stat("candidate", "mv-cand", 10, schema_checked=10, schema_valid=2)
    worse = windows(state(), 4, stat("stable", "mv-stable", 40, schema_checked=40, schema_valid=40), invalid)
    action, findings = analysis.decide(worse, 1011)
    assert action == "rollback" and [a.metric for a in findings if not a.passed] == ["schema_invalid_rate"]
    refusing = windows(
        state(), 4, stat("stable", "mv-stable", 40, refusals=2), stat("candidate", "mv-cand", 10, refusals=6)
    )
    assert [a.metric for a in analysis.decide(refusing, 1011)[1] if not a.passed] == ["refusal_rate"]
    # refusing less is a change too (a jailbroken candidate): the refusal test is two-sided
    lax = windows(
        state(), 6, stat("stable", "mv-stable", 40, refusals=20), stat("candidate", "mv-cand", 40, refusals=0)
    )
    assert [a.metric for a in analysis.decide(lax, 1011)[1] if not a.passed] == ["refusal_rate"]


def test_a_candidate_like_stable_is_not_rolled_back_in_many_windows() -> None:
    same = windows(
        state(),
        60,
        stat("stable", "mv-stable", 90, errors=1, refusals=5),
        stat("candidate", "mv-cand", 10, refusals=1),
    )
    action, findings = analysis.decide(same, 2000)
    judged = [a for a in findings if a.metric != "schema_invalid_rate"]
    assert action == "advance" and {a.judgement for a in judged} == {"no-evidence-of-harm"}
    assert all("candidate events in a row" in a.detects for a in judged)
    schema = next(a for a in findings if a.metric == "schema_invalid_rate")
    assert schema.judgement == "reported", "no request asked for a schema"


def test_a_step_holds_for_its_requests_and_seconds_then_advances_and_finally_promotes() -> None:
    healthy = analysis.accumulate(
        state(), "support", window(1001, stat("stable", "mv-stable", 40), stat("candidate", "mv-cand", 4))
    )
    assert analysis.decide(healthy, 1005)[0] == "hold"  # 5 s < min_seconds
    early = analysis.accumulate(state(), "support", window(1001, stat("candidate", "mv-cand", 2)))
    action, findings = analysis.decide(early, 1011)
    judged = {a.metric: a.judgement for a in findings if a.metric != "schema_invalid_rate"}
    assert action == "hold" and set(judged.values()) == {"insufficient-data"}  # not a pass
    assert analysis.decide(healthy, 1011)[0] == "advance"
    nxt = analysis.advanced(healthy, 1011)
    assert (nxt.step_index, nxt.traffic_percent, nxt.candidate.count) == (1, 10.0, 0)
    last = analysis.accumulate(
        state(step=len(POLICY.steps) - 1),
        "support",
        window(1001, stat("stable", "mv-stable", 1), stat("candidate", "mv-cand", 4)),
    )
    assert analysis.decide(last, 1011)[0] == "promote"
    paused = last.model_copy(update={"paused": True})
    assert analysis.decide(paused, 1011)[0] == "hold"


def test_shadow_latency_is_reported_but_not_judged() -> None:
    slow = analysis.accumulate(
        state("shadow"),
        "support",
        window(1001, stat("stable", "mv-stable", 8, p95=100), stat("shadow", "mv-cand", 8, p95=900)),
    )
    action, findings = analysis.decide(slow, 1011)
    latency = next(a for a in findings if a.metric == "latency_slow_rate")
    assert action == "advance" and latency.candidate == pytest.approx(900, rel=0.01)
    assert latency.passed and latency.judgement == "reported"


def test_shadow_counts_mirrored_answers_and_reports_agreement() -> None:
    shadow = analysis.accumulate(state("shadow"), "support", window(
        1001, stat("stable", "mv-stable", 8), stat("shadow", "mv-cand", 8, agreement_checked=8, agreements=6)
    ))  # fmt: skip
    action, findings = analysis.decide(shadow, 1011)
    agreement = next(a for a in findings if a.metric == "shadow_agreement")
    assert action == "advance" and agreement.candidate == 0.75 and agreement.passed
    strict = shadow.model_copy(update={"policy": POLICY.model_copy(update={"min_shadow_agreement": 0.9})})
    assert analysis.decide(strict, 1011)[0] == "rollback"


def test_steps_must_increase_and_end_at_100() -> None:
    with pytest.raises(ValidationError, match="increasing percents ending at 100"):
        RolloutPolicy(steps=(10, 5, 100))
    with pytest.raises(ValidationError, match="ending at 100"):
        RolloutPolicy(steps=(1, 50))


def ref(name: str) -> ModelRef:
    return ModelRef(
        base=BaseModelRef(name=name, uri=name, sha256="a" * 64, architecture="LlamaForCausalLM"),
        tokenizer=TokenizerRef(tokenizer_sha256="b" * 64),
    )


def test_the_candidate_weight_splits_traffic_and_shadow_mirrors_without_answering() -> None:
    book = RouteBook()
    stable, candidate = ref("s"), ref("c")
    book.apply(
        "support",
        RouteEntry(route="support", tenant="acme", stable=stable, candidate=candidate, candidate_weight=10),
        3,
    )
    roles = [book.decide("support", "acme", draw / 100, 0.5).role for draw in range(100)]
    assert roles.count("candidate") == 10
    book.apply(
        "support",
        RouteEntry(
            route="support", tenant="acme", stable=stable, candidate=candidate, shadow=True, shadow_percent=50
        ),
        4,
    )
    decisions = [book.decide("support", "acme", 0.0, m / 10) for m in range(10)]
    assert {d.role for d in decisions} == {"stable"} and sum(d.mirror for d in decisions) == 5
    book.apply("support", RouteEntry(route="support", tenant="acme", stable=candidate), 2)  # stale
    assert book.routes["support"].candidate == candidate


def test_other_tenants_and_paths_are_refused() -> None:
    book = RouteBook()
    book.apply("support", RouteEntry(route="support", tenant="acme", stable=ref("s")), 1)
    with pytest.raises(RequestRefused) as foreign:
        book.decide("support", "globex", 0.5, 0.5)
    with pytest.raises(RequestRefused) as missing:
        book.decide("billing", "acme", 0.5, 0.5)
    # another tenant's route reads exactly like a missing one: no name is confirmed
    assert (foreign.value.status, foreign.value.code) == (missing.value.status, missing.value.code)
    assert missing.value.status == 404 and "globex" not in foreign.value.message
    for body in ({"model": "../adapters/x"}, {"model": "support", "adapter": "x"}, {"model": "C:\\w"}):
        with pytest.raises(RequestRefused) as refused:
            refuse_weight_choice(body)
        assert refused.value.code == "adapter_by_path_refused"


def test_a_window_reports_percentiles_rates_and_counts() -> None:
    counter = WindowCounter()
    for ms in range(1, 21):
        counter.add(
            "acme",
            "support",
            "mv-s",
            "stable",
            Outcome(latency_ms=float(ms), schema_valid=ms % 2 == 0, refused=ms == 1),
        )
    counter.add("acme", "support", "mv-s", "stable", Outcome(latency_ms=999, error=True))
    _, _, per_tenant = counter.flush()
    (row,) = per_tenant["acme"]
    assert (row.count, row.errors, row.latency_p50_ms, row.latency_p95_ms) == (21, 1, 10.0, 19.0)
    assert (row.schema_valid_rate, row.refusal_rate) == (0.5, 0.05)
    assert row.latency is not None and row.latency.count == 20
    assert row.latency.quantile(0.95) == pytest.approx(19.0, rel=0.01)
    assert counter.flush()[2] == {}
    assert percentile([5.0], 95) == 5.0


async def test_streamed_answers_report_their_time_to_first_token() -> None:
    from services.serving.streaming import FirstTokenQueue

    queue = FirstTokenQueue()
    queue.put_nowait("")  # an empty delta is not a token
    assert queue.first_at is None
    queue.put_nowait("Hel")
    first = queue.first_at
    queue.put_nowait("lo")
    assert first is not None and queue.first_at == first
    counter = WindowCounter()
    for ms in (40.0, 60.0, None):  # the last was not streamed
        counter.add("acme", "support", "mv-s", "stable", Outcome(latency_ms=500.0, ttft_ms=ms))
    (row,) = counter.flush()[2]["acme"]
    assert row.ttft is not None and row.ttft.count == 2 and row.latency is not None and row.latency.count == 3
    assert row.ttft.quantile(1.0) == pytest.approx(60.0, rel=0.01)
