"""What the guardian does about a breach, per the route's policy: `drift.detected` and objectives
whose action is `retrain` ask for the next generation, `rollback` restores the rollback target,
`page` only alerts; each report acts once per production version."""

from __future__ import annotations

from schemas.evaluation import DriftDetected, SuiteDelta
from schemas.refs import EvalSuiteRef
from schemas.serving import RouteEntry
from schemas.slo import GuardState, RetrainRequested, RouteAlertRaised, RouteObjectives
from services.rollout.controller import base_only
from services.rollout.guarding import drifted, guarded
from tests.support.events import model_ref
from tests.unit.test_guardian import window

PRODUCTION = model_ref("prod")
VERSION = PRODUCTION.version_id()


def entry(**objectives: str) -> RouteEntry:
    return RouteEntry(
        route="support", tenant="acme", stable=PRODUCTION, rollback_target=base_only(PRODUCTION),
        objectives=RouteObjectives(**objectives), guard=GuardState(version_id=VERSION),  # type: ignore[arg-type]
    )  # fmt: skip


def drift(version: str = VERSION, tenant: str = "acme") -> DriftDetected:
    delta = SuiteDelta(suite=EvalSuiteRef(name="facts", sha256="a" * 64), reference=80.0, current=60.0,
                       delta=-20.0, threshold=5.0)  # fmt: skip
    return DriftDetected(route="support", tenant=tenant, production_version=version, deltas=(delta,))


def test_drift_asks_for_a_retrain_once_per_production_version() -> None:
    updated, events = drifted(entry(), drift(), RouteObjectives())
    assert updated is not None and updated.stable == PRODUCTION, "retrain keeps the route as it is"
    raised, retrain = events
    assert isinstance(raised, RouteAlertRaised) and raised.alert.objective == "drift"
    assert (raised.alert.value, raised.alert.bound, raised.alert.action) == (-20.0, 5.0, "retrain")
    assert isinstance(retrain, RetrainRequested)
    assert (retrain.trigger, retrain.version_id, retrain.route) == ("drift", VERSION, "support")
    assert "facts:score -20.0" in retrain.reason
    # the same report again (a redelivery, or the next scheduled check): nothing more
    assert drifted(updated, drift(), RouteObjectives()) == (None, [])


def test_drift_on_a_rollback_policy_restores_the_target_and_page_only_alerts() -> None:
    updated, events = drifted(entry(drift_action="rollback"), drift(), RouteObjectives())
    assert updated is not None and updated.stable == base_only(PRODUCTION)
    assert [e.event_type for e in events] == ["route.alert-raised", "rollout.rolled-back"]
    assert events[1].reason.startswith("drift: facts:score")  # type: ignore[attr-defined]
    updated, events = drifted(entry(drift_action="page"), drift(), RouteObjectives())
    assert updated is not None and updated.stable == PRODUCTION
    assert [e.event_type for e in events] == ["route.alert-raised"]


def test_drift_of_a_version_no_longer_in_production_or_of_another_tenant_is_ignored() -> None:
    assert drifted(entry(), drift(version="mv-old"), RouteObjectives()) == (None, [])
    assert drifted(entry(), drift(tenant="globex"), RouteObjectives()) == (None, [])
    assert drifted(None, drift(), RouteObjectives()) == (None, [])


def test_a_retrain_objective_asks_for_the_next_generation_when_it_breaches() -> None:
    route = entry(error_action="retrain")
    events: list = []  # type: ignore[type-arg]
    for t in range(1, 8):
        failing = window(t, errors=10, version=VERSION)
        updated, produced = guarded(route, "support", failing)
        route = updated or route
        events += produced
    assert [e.event_type for e in events] == ["route.alert-raised", "retrain.requested"]
    assert route.stable == PRODUCTION and events[1].trigger == "slo"
    assert events[1].reason.startswith("slo-breach: error_rate")
