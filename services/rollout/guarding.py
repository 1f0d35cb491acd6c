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

from schemas.events import Event
from schemas.rollout import RolloutRolledBack
from schemas.serving import RouteEntry, ServingWindow
from schemas.slo import Alert, GuardState, RouteAlertRaised, RouteAlertResolved
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
        release_refusal_rate=entry.release_refusal_rate,
    )
    if judged.state == entry.guard:
        return None, []
    events: list[Event] = [RouteAlertRaised(route=route, tenant=entry.tenant, alert=a) for a in judged.raised]
    events += [
        RouteAlertResolved(route=route, tenant=entry.tenant, alert=a, healthy_windows=n)
        for a, n in judged.resolved
    ]
    updated = entry.model_copy(update={"guard": judged.state})
    breach = next((a for a in judged.raised if a.action == "rollback"), None)
    if breach is not None:
        if updated.rollback_target is None:
            log.warning("%s: %s; no rollback target to return to: alert only", route, describe(breach))
        else:
            updated, rolled = restored(updated, f"slo-breach: {describe(breach)}")
            events += rolled
    return updated, events
