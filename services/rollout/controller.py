"""The rollout controller: writes route entries (compare-and-set) and publishes what it decided.

Its state lives in the route's own KV entry, so a restarted controller resumes where it was. The
route table is written before the event announcing the change: by the time anyone reads
`rollout.rolled-back`, no replica is told to send the candidate traffic any more.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from schemas.envelope import Envelope, derived_event_id
from schemas.evaluation import DriftDetected, GatesPassed
from schemas.events import Event
from schemas.refs import ModelRef
from schemas.rollout import (
    MetricAnalysis,
    RolloutPaused,
    RolloutPolicy,
    RolloutPromoted,
    RolloutRolledBack,
    RolloutStarted,
    RolloutState,
    RolloutStep,
)
from schemas.serving import RouteEntry, ServingWindow
from schemas.slo import GuardState, IncidentReported
from services.core.messaging.bus import EventBus
from services.core.messaging.delivery import HandlerContext
from services.core.messaging.routes import RouteTable
from services.rollout import analysis, guarding
from services.rollout.guarding import released
from services.rollout.outbox import Address, Change, RouteWriter

log = logging.getLogger(__name__)


def _about(entry: RouteEntry, state: RolloutState) -> dict[str, Any]:
    """The fields every rollout event carries about its route and versions."""
    return {
        "route": entry.route,
        "tenant": entry.tenant,
        "candidate_version": state.candidate_version,
        "stable_version": state.stable_version,
        "rollout_id": state.rollout_id,
    }


def _refusal_rate(state: RolloutState) -> float | None:
    """The candidate's refusal rate over its last canary step: the rate measured at release."""
    answered = state.candidate.count - state.candidate.errors
    return state.candidate.refusals / answered if answered else None


def base_only(ref: ModelRef) -> ModelRef:
    """The bare base of a version: what a route's first rollout is measured against."""
    return ModelRef(base=ref.base, tokenizer=ref.tokenizer)


Verify = Callable[[str, str], Awaitable[None]]


class RolloutController:
    def __init__(
        self, table: RouteTable, bus: EventBus, policy: RolloutPolicy, verify: Verify | None = None
    ) -> None:
        """`verify(version, verdict_id)` raises unless the record backs the verdict (release.py)."""
        self.table = table
        self.bus = bus
        self.writer = RouteWriter(table, bus)
        self.policy = policy
        self.verify = verify

    async def _change(self, route: str, change: Change, address: Address) -> list[Event]:
        return await self.writer.change(route, change, address)

    def _caused_by(self, ctx: HandlerContext) -> Address:
        """Envelopes of events caused by the handled one (as `ctx.publish` would send them)."""
        return lambda events: [self.bus.envelope_for(e, causation=ctx.envelope) for e in events]

    def _of_rollout(self, state: RolloutState, tag: str, events: list[Event]) -> list[Envelope]:
        """Envelopes of a rollout's events: in its lineage, ids derived from what started it."""
        return [
            self.bus.envelope_for(
                e,
                correlation_id=state.correlation_id,
                event_id=derived_event_id(state.origin_event_id, e.ce_type(), tag),
            )
            for e in events
        ]

    # -- gates.passed -------------------------------------------------------------------------------
    async def start(self, event: GatesPassed, ctx: HandlerContext) -> None:
        if event.route is None:
            log.info("gates.passed for %s names no route: nothing to roll out", event.candidate.version_id())
            return
        version = event.candidate.version_id()
        entry, _ = await self.table.get(event.route)
        if entry is not None and version in entry.released:
            log.warning(
                "gates.passed %s for %s on %s ignored: this route already acted on it (%s)",
                ctx.envelope.id, version, event.route, entry.released[version],
            )  # fmt: skip
            return
        if self.verify is not None:
            await self.verify(version, ctx.envelope.id)
        state = RolloutState(
            rollout_id=f"ro-{uuid.uuid5(uuid.NAMESPACE_URL, ctx.envelope.id).hex[:12]}",
            candidate_version=version,
            stable_version=None,
            origin_event_id=ctx.envelope.id,
            correlation_id=ctx.envelope.correlation_id,
            step_started_at=time.time(),
            policy=self.policy
            if event.policy.objectives is None
            else self.policy.model_copy(update={"objectives": event.policy.objectives}),
        )
        superseded: list[tuple[RolloutState, Event]] = []

        def address(events: list[Event]) -> list[Envelope]:
            """The superseded rollout's rolled-back event in its own lineage, the rest in this one."""
            old = [e for _, e in superseded]
            found = [self._of_rollout(s, "superseded", [e])[0] for s, e in superseded]
            return found + self._caused_by(ctx)([e for e in events if not any(e is o for o in old)])

        change = functools.partial(self._started, event, state, superseded)
        events = await self._change(event.route, change, address)
        if events:
            log.info("rollout of %s on %s started in shadow", version, event.route)

    @staticmethod
    def _acted_on(entry: RouteEntry | None, event: GatesPassed, version: str) -> bool:
        """The route must not start this rollout: another tenant's, or it already acted on the version."""
        if entry is None:
            return False
        if entry.tenant != event.tenant:
            log.error(
                "route %s belongs to tenant %s, not %s: refused", event.route, entry.tenant, event.tenant
            )
            return True
        return (
            version in entry.released  # acted on already (a redelivery, or a replay): state per version
            or (entry.rollout is not None and entry.rollout.candidate_version == version)  # running
            or (entry.stable is not None and entry.stable.version_id() == version)  # in production
        )

    def _started(
        self,
        event: GatesPassed,
        state: RolloutState,
        superseded: list[tuple[RolloutState, Event]],
        entry: RouteEntry | None,
    ) -> tuple[RouteEntry | None, list[Event]]:
        """The route with the candidate in shadow (a running rollout is superseded), and its events."""
        superseded.clear()
        version, candidate = state.candidate_version, event.candidate
        if self._acted_on(entry, event, version):
            return None, []
        assert event.route is not None
        stable = entry.stable if entry is not None and entry.stable is not None else base_only(candidate)
        started = state.model_copy(update={"stable_version": stable.version_id()})
        earlier: dict[str, str] = {}
        if entry is not None and entry.rollout is not None:
            old = entry.rollout
            reason = f"superseded by {version}, which passed its gates later"
            superseded.append((old, RolloutRolledBack(**_about(entry, old), reason=reason)))
            earlier[old.candidate_version] = "superseded"
        new_entry = RouteEntry(
            route=event.route,
            tenant=event.tenant,
            stable=stable,
            candidate=candidate,
            candidate_weight=0.0,
            shadow=True,
            shadow_percent=self.policy.shadow_percent,
            rollback_target=entry.rollback_target if entry is not None else None,
            rollout=started,
            released=released(entry, **earlier, **{version: "started"}),
            # the production version keeps its objectives and its watch, which resumes if the
            # candidate is rolled back (during the rollout the canary analysis judges the route)
            **(
                {}
                if entry is None
                else {
                    "objectives": entry.objectives,
                    "guard": entry.guard,
                    "release_refusal_rate": entry.release_refusal_rate,
                    "release_latency_p95_ms": entry.release_latency_p95_ms,
                }
            ),
        )
        common = {
            "route": event.route,
            "tenant": event.tenant,
            "candidate_version": version,
            "stable_version": started.stable_version,
            "rollout_id": started.rollout_id,
        }
        return new_entry, [
            *(rolled_back for _, rolled_back in superseded),
            RolloutStarted(**common),
            RolloutStep(**common, phase="shadow", traffic_percent=0.0),
        ]

    # -- serving.window --------------------------------------------------------------------------------
    async def on_window(self, window: ServingWindow) -> None:
        for route in sorted({s.route for s in window.stats}):
            await self._observe(route, window)

    async def _observe(self, route: str, window: ServingWindow) -> None:
        outcome: dict[str, object] = {}

        def change(entry: RouteEntry | None) -> tuple[RouteEntry | None, list[Event]]:
            outcome.clear()
            if entry is None or entry.tenant != window.tenant:
                return None, []
            if entry.rollout is None:  # a production route: the guardian's watch
                updated, raised = guarding.guarded(entry, route, window)
                outcome.update(guarded=raised)
                return updated, raised
            state = analysis.accumulate(entry.rollout, route, window)
            action, findings = analysis.decide(state, time.time())
            state = state.model_copy(update={"last_analysis": findings})
            outcome.update(action=action, state=state, findings=findings)
            if action == "rollback":
                return self._rolled_back(entry, state, f"breach: {analysis.breaches(findings)}", findings)
            if action == "promote":
                return self._promoted(entry, state)
            if action == "advance":
                return self._advanced(entry, state, findings)
            return entry.model_copy(update={"rollout": state}), []

        def address(events: list[Event]) -> list[Envelope]:
            state = outcome.get("state")
            if isinstance(state, RolloutState):
                return self._of_rollout(state, f"{outcome['action']}-{state.step_index}", events)
            # the guardian's: ids derived from the window that decided, so a second controller on
            # the same window makes the same ids, which JetStream drops
            origin = f"tuneline/guard/{route}/{window.replica}/{window.window_end}"
            return [  # two alerts of one window are two events
                self.bus.envelope_for(e, event_id=derived_event_id(origin, e.ce_type(), "guard", n))
                for n, e in enumerate(events)
            ]

        await self._change(route, change, address)

    def _advanced(
        self, entry: RouteEntry, state: RolloutState, findings: tuple[MetricAnalysis, ...]
    ) -> tuple[RouteEntry, list[Event]]:
        nxt = analysis.advanced(state, time.time())
        updated = entry.model_copy(
            update={"rollout": nxt, "candidate_weight": nxt.traffic_percent, "shadow": False}
        )
        step = RolloutStep(
            **_about(entry, state),
            phase="canary",
            traffic_percent=nxt.traffic_percent,
            analysis=findings,
        )
        log.info("%s: %s → canary %.0f%%", entry.route, state.candidate_version, nxt.traffic_percent)
        return updated, [step]

    def _promoted(self, entry: RouteEntry, state: RolloutState) -> tuple[RouteEntry, list[Event]]:
        updated = entry.model_copy(
            update={
                "stable": entry.candidate,
                "candidate": None,
                "candidate_weight": 0.0,
                "shadow": False,
                "rollback_target": entry.stable,
                "rollout": None,
                "released": released(entry, **{state.candidate_version: "promoted"}),
                # from now on the guardian holds the route to its objectives
                "objectives": state.policy.objectives,
                "guard": GuardState(version_id=state.candidate_version),
                "release_refusal_rate": _refusal_rate(state),
                "release_latency_p95_ms": state.candidate.latency_p95_ms,
            }
        )
        promoted = RolloutPromoted(
            **_about(entry, state),
            rollback_target=state.stable_version,
        )
        log.info(
            "%s: %s promoted; rollback target %s", entry.route, state.candidate_version, state.stable_version
        )
        return updated, [promoted]

    def _rolled_back(
        self, entry: RouteEntry, state: RolloutState, reason: str, findings: tuple[MetricAnalysis, ...]
    ) -> tuple[RouteEntry, list[Event]]:
        updated = entry.model_copy(
            update={
                "candidate": None,
                "candidate_weight": 0.0,
                "shadow": False,
                "rollout": None,
                "released": released(entry, **{state.candidate_version: "rolled-back"}),
            }
        )
        event = RolloutRolledBack(
            **_about(entry, state),
            reason=reason,
            analysis=findings,
        )
        log.warning("%s: %s rolled back: %s", entry.route, state.candidate_version, reason)
        return updated, [event]

    # -- operators -------------------------------------------------------------------------------------
    async def operate(self, route: str, tenant: str, action: str, reason: str, ctx: HandlerContext) -> None:
        """pause | resume | abort | promote | rollback, as an operator asked."""
        holder: dict[str, RolloutState] = {}

        def change(entry: RouteEntry | None) -> tuple[RouteEntry | None, list[Event]]:
            holder.clear()
            if entry is None or entry.tenant != tenant:
                log.warning("%s requested on %s: no such route for tenant %s", action, route, tenant)
                return None, []
            state = entry.rollout
            if state is None:
                if action == "rollback" and entry.rollback_target is not None and entry.stable is not None:
                    return self._restored(entry, reason)
                log.warning("%s requested on %s: no rollout in progress", action, route)
                return None, []
            holder["state"] = state
            why = reason or f"{action} requested by an operator"
            if action in ("abort", "rollback"):
                return self._rolled_back(entry, state, f"operator: {why}", state.last_analysis)
            if action == "promote":
                return self._promoted(entry, state)
            paused = action == "pause"
            if state.paused == paused:
                return None, []
            new_state = state.model_copy(
                update={"paused": paused} | ({} if paused else {"step_started_at": time.time()})
            )
            common = _about(entry, state)
            announced: Event = (
                RolloutPaused(**common, reason=why)
                if paused
                else RolloutStep(**common, phase=state.phase, traffic_percent=state.traffic_percent)
            )
            return entry.model_copy(update={"rollout": new_state}), [announced]

        await self._change(route, change, self._caused_by(ctx))

    async def incident(self, event: IncidentReported, ctx: HandlerContext) -> None:
        """A critical incident rolls the route back at once when its objectives say so: a rollout
        in progress is aborted, a promoted version gives way to its rollback target."""
        objectives = self.policy.objectives

        def change(entry: RouteEntry | None) -> tuple[RouteEntry | None, list[Event]]:
            if entry is None or entry.tenant != event.tenant:
                log.warning("incident on %s: no such route for tenant %s", event.route, event.tenant)
                return None, []
            action = (entry.objectives or objectives).incident_action
            why = f"incident ({event.severity}, by {event.reported_by}): {event.reason}"
            if event.severity == "critical" and action == "retrain":
                return None, [guarding.retrain(entry, "incident", why)]
            if event.severity != "critical" or action != "rollback":
                log.warning(
                    "%s incident on %s recorded (%s): %s", event.severity, event.route, action, event.reason
                )
                return None, []
            if entry.rollout is not None:
                return self._rolled_back(entry, entry.rollout, why, entry.rollout.last_analysis)
            if entry.rollback_target is not None and entry.stable is not None:
                return guarding.restored(entry, why)
            log.warning("critical incident on %s: nothing to roll back to", event.route)
            return None, []

        await self._change(event.route, change, self._caused_by(ctx))

    async def drift(self, event: DriftDetected, ctx: HandlerContext) -> None:
        """`drift.detected` through the route's policy (guarding.drifted): once per version."""
        objectives = self.policy.objectives
        change: Change = lambda e: guarding.drifted(e, event, objectives)  # noqa: E731
        await self._change(event.route, change, self._caused_by(ctx))

    def _restored(self, entry: RouteEntry, reason: str) -> tuple[RouteEntry, list[Event]]:
        assert entry.rollback_target is not None
        target = entry.rollback_target.version_id()
        return guarding.restored(entry, f"operator rollback to {target}" + (f": {reason}" if reason else ""))
