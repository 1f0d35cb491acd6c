"""Rollout analysis and serving's routing, as plain functions: no broker, no model."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from schemas.refs import BaseModelRef, ModelRef, TokenizerRef
from schemas.rollout import RolloutPolicy, RolloutState
from schemas.serving import RouteEntry, RouteVersionWindow, ServingWindow
from services.rollout import analysis
from services.serving.routing import RequestRefused, RouteBook, refuse_weight_choice
from services.serving.windows import Outcome, WindowCounter, percentile

POLICY = RolloutPolicy(shadow_min_requests=4, min_requests=4, min_seconds=10, analysis_min_requests=3)


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
    return RouteVersionWindow(
        route="support", version_id=version, role=role, count=count, errors=errors,  # type: ignore[arg-type]
        latency_p50_ms=p95 / 2, latency_p95_ms=p95, **more,
    )  # fmt: skip


def window(end: float, *stats: RouteVersionWindow, replica: str = "r1") -> ServingWindow:
    return ServingWindow(replica=replica, window_start=end - 5, window_end=end, tenant="acme", stats=stats)


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


def test_errors_above_the_stables_rate_roll_back_once_enough_requests_were_seen() -> None:
    two = analysis.accumulate(
        state(),
        "support",
        window(1001, stat("stable", "mv-stable", 50), stat("candidate", "mv-cand", 2, errors=2)),
    )
    assert analysis.decide(two, 1002)[0] == "hold"  # 2 < analysis_min_requests
    three = analysis.accumulate(two, "support", window(1002, stat("candidate", "mv-cand", 1, errors=1)))
    action, findings = analysis.decide(three, 1003)
    assert action == "rollback"
    assert "error_rate: candidate 1 vs stable 0" in analysis.breaches(findings)


def test_a_slow_candidate_breaches_only_beyond_ratio_and_slack() -> None:
    slow = analysis.accumulate(
        state(),
        "support",
        window(1001, stat("stable", "mv-stable", 50, p95=100), stat("candidate", "mv-cand", 5, p95=200)),
    )
    assert analysis.decide(slow, 1002)[0] == "rollback"
    a_bit = analysis.accumulate(
        state(),
        "support",
        window(1001, stat("stable", "mv-stable", 50, p95=10), stat("candidate", "mv-cand", 5, p95=20)),
    )
    assert analysis.decide(a_bit, 1002)[0] == "hold"  # 2x, but 10 ms apart: within the 25 ms slack


def test_schema_validity_may_not_drop_and_refusals_may_not_move_beyond_policy() -> None:
    worse = analysis.accumulate(state(), "support", window(
        1001, stat("stable", "mv-stable", 40, schema_checked=40, schema_valid=40),
        stat("candidate", "mv-cand", 10, schema_checked=10, schema_valid=9),
    ))  # fmt: skip
    action, findings = analysis.decide(worse, 1002)
    assert action == "rollback" and [a.metric for a in findings if not a.passed] == ["schema_valid_rate"]
    refusing = analysis.accumulate(
        state(),
        "support",
        window(
            1001, stat("stable", "mv-stable", 40, refusals=0), stat("candidate", "mv-cand", 10, refusals=3)
        ),
    )
    assert [a.metric for a in analysis.decide(refusing, 1002)[1] if not a.passed] == ["refusal_rate_delta"]


def test_a_step_holds_for_its_requests_and_seconds_then_advances_and_finally_promotes() -> None:
    healthy = analysis.accumulate(
        state(), "support", window(1001, stat("stable", "mv-stable", 40), stat("candidate", "mv-cand", 4))
    )
    assert analysis.decide(healthy, 1005)[0] == "hold"  # 5 s < min_seconds
    assert analysis.decide(healthy, 1011)[0] == "advance"
    nxt = analysis.advanced(healthy, 1011)
    assert (nxt.step_index, nxt.traffic_percent, nxt.candidate.count) == (1, 10.0, 0)
    last = analysis.accumulate(
        state(step=3),
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
    latency = next(a for a in findings if a.metric == "latency_p95_ratio")
    assert action == "advance" and latency.candidate == 900 and latency.passed


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
        assert refused.value.code == "adapter-by-path-refused"


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
    assert counter.flush()[2] == {}
    assert percentile([5.0], 95) == 5.0
