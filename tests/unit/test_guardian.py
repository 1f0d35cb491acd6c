"""The guardian's judgement of a production route: quiet when the objectives hold, one alert with
its evidence and action when one breaks, resolved once it holds again; windows count once."""

from __future__ import annotations

import random

from schemas.serving import RouteVersionWindow, ServingWindow
from schemas.sketch import LatencySketch
from schemas.slo import GuardState, RouteObjectives
from services.rollout.guardian import RESOLVE_WINDOWS, Release, judge

OBJECTIVES = RouteObjectives()
VERSION = "mv-prod"


def window(end: float, count: int = 200, errors: int = 0, latency_ms: float = 300.0, refusals: int = 0,
           version: str = VERSION, role: str = "stable", replica: str = "r1") -> ServingWindow:  # fmt: skip
    answered = count - errors
    stat = RouteVersionWindow(
        route="support", version_id=version, role=role, count=count, errors=errors,  # type: ignore[arg-type]
        latency=LatencySketch.of([latency_ms] * answered), refusals=refusals,
    )  # fmt: skip
    return ServingWindow(replica=replica, window_start=end - 5, window_end=end, tenant="acme", stats=(stat,))


NONE = Release()


def run(
    state: GuardState, windows: list[ServingWindow], release: Release = NONE
) -> tuple[GuardState, list, list]:  # type: ignore[type-arg]
    raised, resolved = [], []
    for w in windows:
        judged = judge(state, w, "support", OBJECTIVES, window_s=5.0, release=release)
        state = judged.state
        raised += judged.raised
        resolved += judged.resolved
    return state, raised, resolved


def test_a_route_meeting_its_objectives_stays_quiet() -> None:
    rng = random.Random(2)
    quiet = [window(t, errors=int(rng.random() < 0.2)) for t in range(1, 501)]  # ~0.1 % errors
    _, raised, _ = run(GuardState(version_id=VERSION), quiet)
    assert raised == []


def test_an_error_breach_raises_one_critical_alert_with_its_evidence_then_resolves_once() -> None:
    state, raised, _ = run(GuardState(version_id=VERSION), [window(t, errors=4) for t in range(1, 11)])
    assert len(raised) == 1, "one alert while the breach lasts, not one per window"
    alert = raised[0]
    assert (alert.objective, alert.severity, alert.action) == ("error_rate", "critical", "rollback")
    assert alert.windows <= 3 and alert.value == 0.02 and alert.bound == 0.001
    assert alert.statistic >= alert.threshold == 30 * 86_400 / 5.0 and "Shiryaev-Roberts" in alert.method
    healthy = [window(t) for t in range(11, 11 + RESOLVE_WINDOWS)]
    state, again, resolved = run(state, healthy)
    assert again == [] and len(resolved) == 1 and resolved[0][1] == RESOLVE_WINDOWS
    assert state.open_alerts == {}


def test_a_window_counts_once_and_other_versions_do_not_count() -> None:
    first = window(1, errors=4)
    state, raised, _ = run(GuardState(version_id=VERSION), [first, first, first])
    assert state.watches["error_rate"].windows == 1 and raised == []
    other = [window(t, errors=200, version="mv-canary", role="candidate") for t in range(2, 10)]
    state, raised, _ = run(state, other)
    assert raised == [] and state.watches["error_rate"].windows == 1


def test_latency_and_refusal_objectives_page() -> None:
    one_slow = ServingWindow(replica="r1", window_start=0, window_end=1, tenant="acme", stats=(
        RouteVersionWindow(route="support", version_id=VERSION, role="stable", count=200, errors=0,
                           latency=LatencySketch.of([300.0] * 199 + [9000.0])),
    ))  # fmt: skip
    _, raised, _ = run(GuardState(version_id=VERSION), [one_slow])
    assert raised == [], "one slow request is not a breach"
    _, raised, _ = run(GuardState(version_id=VERSION), [window(t, latency_ms=3000) for t in range(1, 5)])
    assert [(a.objective, a.action, a.severity) for a in raised] == [("latency_p95", "page", "warning")]
    refusing = [window(t, refusals=60) for t in range(1, 21)]  # 30 % against 20 % +/- 5 at release
    _, raised, _ = run(GuardState(version_id=VERSION), refusing, Release(refusal_rate=0.2))
    assert [a.objective for a in raised] == ["refusal_rate_high"]
    lax = [window(t, refusals=0) for t in range(1, 6)]  # a jailbroken route stops refusing
    _, raised, _ = run(GuardState(version_id=VERSION), lax, Release(refusal_rate=0.2))
    assert [a.objective for a in raised] == ["refusal_rate_low"]


def test_latency_is_held_to_its_release_p95_as_well_as_the_sla() -> None:
    """1.15x the p95 measured at release binds before the absolute SLA when the release was fast."""
    slower = [window(t, latency_ms=600) for t in range(1, 6)]  # 2x a 300 ms release, within 2000 ms
    _, raised, _ = run(GuardState(version_id=VERSION), slower, Release(latency_p95_ms=300.0))
    assert [a.objective for a in raised] == ["latency_p95"]
    _, raised, _ = run(GuardState(version_id=VERSION), slower)  # no release p95: the SLA alone
    assert raised == []
    within = [window(t, latency_ms=330) for t in range(1, 200)]  # +10 %: within 1.15x
    _, raised, _ = run(GuardState(version_id=VERSION), within, Release(latency_p95_ms=300.0))
    assert raised == []


def test_time_to_first_token_of_streamed_answers_is_an_objective() -> None:
    def streamed(end: float, ttft_ms: float) -> ServingWindow:
        stat = RouteVersionWindow(route="support", version_id=VERSION, role="stable", count=50, errors=0,
                                  latency=LatencySketch.of([300.0] * 50), ttft=LatencySketch.of([ttft_ms] * 50))  # fmt: skip  # noqa: E501
        return ServingWindow(replica="r1", window_start=end - 5, window_end=end, tenant="acme", stats=(stat,))

    _, raised, _ = run(GuardState(version_id=VERSION), [streamed(t, 200) for t in range(1, 200)])
    assert raised == []
    _, raised, _ = run(GuardState(version_id=VERSION), [streamed(t, 1500) for t in range(1, 6)])
    assert [(a.objective, a.action) for a in raised] == [("ttft_p95", "page")]
