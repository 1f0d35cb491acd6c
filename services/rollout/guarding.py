"""The guardian inside the rollout controller: production routes judged window after window.

`guarded` is the compare-and-set change the controller applies to a route with no rollout in
progress: the production version's watch moves on by one window (services/rollout/guardian.py),
alerts are raised or resolved, and a `rollback` objective's breach restores the route's rollback
target in the same write. Everything the guardian knows lives in the route's KV entry, so a
restarted controller or another replica continues the same watch, and a redelivered window (or
the same window seen by two replicas' controllers) is counted, and acted on, once.
"""

from __future__ import annotations

import logging

from schemas.evaluation import DriftDetected
from schemas.events import Event
from schemas.rollout import RolloutRolledBack
from schemas.serving import RouteEntry, ServingWindow
from schemas.slo import (
    Alert,
    GuardState,
    RetrainRequested,
    RouteAlertRaised,
    RouteAlertResolved,
    RouteObjectives,
    Trigger,
    severity_of,
)
from services.rollout import guardian

log = logging.getLogger(__name__)


RELEASED_KEPT = 256  # versions a route remembers having acted on


def released(entry: RouteEntry | None, **outcomes: str) -> dict[str, str]:
    """The route's record of acted-on versions with `outcomes` (version → outcome) added, bounded."""
    record = dict(entry.released) if entry is not None else {}
    for version, outcome in outcomes.items():
        record.pop(version, None)  # re-inserted last: the newest outcome is kept longest
        record[version] = outcome
    return dict(list(record.items())[-RELEASED_KEPT:])


def restored(entry: RouteEntry, reason: str) -> tuple[RouteEntry, list[Event]]:
    """The route back on its rollback target: `rollout.rolled-back` names the demoted version."""
    assert entry.stable is not None and entry.rollback_target is not None
    demoted, target = entry.stable.version_id(), entry.rollback_target.version_id()
    updated = entry.model_copy(
        update={
            "stable": entry.rollback_target,
            "rollback_target": None,
            "released": released(entry, **{demoted: "rolled-back"}),
            # the restored version is watched afresh, against the same objectives
            "guard": GuardState(version_id=target) if entry.objectives is not None else None,
            "release_refusal_rate": None,
            "release_latency_p95_ms": None,
        }
    )
    event = RolloutRolledBack(
        route=entry.route,
        tenant=entry.tenant,
        candidate_version=demoted,
        stable_version=target,
        rollout_id=f"rollback-{demoted}",
        reason=reason,
    )
    log.warning("%s: rolled back from %s to %s (%s)", entry.route, demoted, target, reason)
    return updated, [event]


def describe(alert: Alert) -> str:
    return (
        f"{alert.objective} {alert.value:.4g} against the objective {alert.bound:.4g} "
        f"({alert.events} events in {alert.requests} requests over {alert.windows} windows; "
        f"Shiryaev-Roberts statistic {alert.statistic:.3g} >= {alert.threshold:.3g})"
    )


def guarded(entry: RouteEntry, route: str, window: ServingWindow) -> tuple[RouteEntry | None, list[Event]]:
    """The route after one window of its production version (None: nothing to write)."""
    if entry.guard is None or entry.objectives is None or entry.stable is None:
        return None, []
    if entry.guard.version_id != entry.stable.version_id():  # a restored or hand-set stable version
        entry = entry.model_copy(update={"guard": GuardState(version_id=entry.stable.version_id())})
    assert entry.guard is not None and entry.objectives is not None
    window_s = max(window.window_end - window.window_start, 1e-3)
    judged = guardian.judge(
        entry.guard,
        window,
        route,
        entry.objectives,
        window_s=window_s,
        release=guardian.Release(entry.release_refusal_rate, entry.release_latency_p95_ms),
    )
    if judged.state == entry.guard:
        return None, []
    events: list[Event] = [RouteAlertRaised(route=route, tenant=entry.tenant, alert=a) for a in judged.raised]
    events += [
        RouteAlertResolved(route=route, tenant=entry.tenant, alert=a, healthy_windows=n)
        for a, n in judged.resolved
    ]
    updated = entry.model_copy(update={"guard": judged.state})
    for alert in judged.raised:
        if alert.action == "retrain":
            events.append(retrain(updated, "slo", f"slo-breach: {describe(alert)}"))
    breach = next((a for a in judged.raised if a.action == "rollback"), None)
    if breach is not None:
        updated, rolled = restored_if_possible(updated, f"slo-breach: {describe(breach)}")
        events += rolled
    return updated, events


def restored_if_possible(entry: RouteEntry, reason: str) -> tuple[RouteEntry, list[Event]]:
    """`restored`, or the route as it is (an alert only) when it has no rollback target."""
    if entry.rollback_target is None or entry.stable is None:
        log.warning("%s: %s; no rollback target to return to: alert only", entry.route, reason)
        return entry, []
    return restored(entry, reason)


def retrain(entry: RouteEntry, trigger: Trigger, reason: str) -> RetrainRequested:
    """The request that resubmits the route's last approved dataset with its recipe."""
    version = entry.stable.version_id() if entry.stable is not None else None
    log.warning("%s: retraining requested (%s)", entry.route, reason)
    return RetrainRequested(
        route=entry.route,
        tenant=entry.tenant,
        version_id=version,
        trigger=trigger,
        reason=reason,
    )


def drifted(
    entry: RouteEntry | None, event: DriftDetected, objectives: RouteObjectives
) -> tuple[RouteEntry | None, list[Event]]:
    """`drift.detected` on the production version, through the route's policy: an alert (held open
    until the version changes, so a repeated or redelivered report acts once), then the action."""
    if entry is None or entry.tenant != event.tenant or entry.stable is None:
        log.warning("drift on %s: no production route for tenant %s", event.route, event.tenant)
        return None, []
    if entry.stable.version_id() != event.production_version:
        log.info("drift on %s ignored: it measured %s, production is now another", event.route,
                 event.production_version)  # fmt: skip
        return None, []
    objectives = entry.objectives or objectives
    guard = entry.guard
    if guard is None or guard.version_id != event.production_version:
        guard = GuardState(version_id=event.production_version)
    if "drift" in guard.open_alerts:
        return None, []  # already acted on this version's drift
    worst = max(event.deltas, key=lambda d: abs(d.delta))
    action = objectives.drift_action
    alert = Alert(
        objective="drift",
        severity=severity_of(action),
        action=action,
        version_id=event.production_version,
        value=worst.delta,
        bound=worst.threshold,
        events=len(event.deltas),
        requests=0,
        windows=0,
        window_s=0.0,
        statistic=abs(worst.delta),
        threshold=worst.threshold,
        method="drift check: the release evaluation's suites re-run on the production version; "
        "a metric that moved more than drift_max_points points (events: metrics that moved)",
    )
    moved = ", ".join(f"{d.suite.name}:{d.metric} {d.delta:+.1f}" for d in event.deltas)
    reason = f"drift: {moved} (more than {worst.threshold:g} points since release)"
    updated = entry.model_copy(
        update={"guard": guard.model_copy(update={"open_alerts": {**guard.open_alerts, "drift": alert}})}
    )
    events: list[Event] = [RouteAlertRaised(route=entry.route, tenant=entry.tenant, alert=alert)]
    if action == "retrain":
        events.append(retrain(updated, "drift", reason))
    elif action == "rollback":
        updated, rolled = restored_if_possible(updated, reason)
        events += rolled
    return updated, events
