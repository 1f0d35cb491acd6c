"""Merging's subscriber: merge.requested → compatibility gate → merge → candidate.ready | merge.failed.

The handler decodes, asks the registry what it needs (the inputs, their evaluations), calls the
logic (`merges.Merger`, `soup.greedy_soup` with the evaluation service's `suites.score` injected)
and publishes the outcome.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path

from faststream.nats import NatsBroker

from schemas.candidate import CandidateReady
from schemas.gate_policy import GatePolicy
from schemas.merge import MergeFailed, MergeRequested
from schemas.queries import (
    EVALS_GET,
    MODELS_GET,
    SUITES_SCORE,
    EvalsQuery,
    ModelVersionQuery,
    SuiteScoreRequest,
)
from schemas.refs import ModelRef
from services.core.artifacts import ArtifactStore
from services.core.messaging.bus import EventBus
from services.core.messaging.delivery import HandlerContext, subscribe_event
from services.core.messaging.rpc import RpcError, ask
from services.core.prometheus import ServiceMetrics
from services.merging import compat, soup
from services.merging.config import MergingSettings
from services.merging.merges import Input, Merged, Merger, Refused

SERVICE = "merging"
log = logging.getLogger(__name__)


class MergingHandlers:
    def __init__(self, settings: MergingSettings, store: ArtifactStore, broker: NatsBroker) -> None:
        self.settings = settings
        self.store = store
        self.broker = broker
        self.merger = Merger(settings, store)

    async def inputs(self, event: MergeRequested) -> list[Input]:
        """(version id, ModelRef, route) of every input, as the registry knows them."""
        found = []
        for ident in event.inputs:
            try:
                found_version = await ask(
                    self.broker, MODELS_GET, ModelVersionQuery(version_id=ident), timeout=10.0
                )
            except RpcError as error:
                if error.code == "not-found":
                    raise Refused(f"input {ident}: {error}") from None
                raise
            summary = found_version.summary
            if summary.tenant != event.tenant:
                # never say more about another tenant's version than that it is not yours
                raise Refused(f"input {ident} is not a model version of tenant {event.tenant}")
            found.append(
                (summary.version_id, ModelRef.model_validate(found_version.model_ref), summary.route)
            )
        return found

    async def policy_of(self, version: str) -> GatePolicy:
        """The gates `version` was last judged by: a merge of it is held to the same (defaults when
        it was never judged)."""
        detail = await ask(self.broker, EVALS_GET, EvalsQuery(version_id=version), timeout=10.0)
        return soup.last_policy(detail)

    async def ranking(self, event: MergeRequested, inputs: list[Input]) -> soup.Ranking:
        """Greedy-soup members ranked by the score the registry recorded for them on one suite."""
        evaluated = [
            (version, ref, await ask(self.broker, EVALS_GET, EvalsQuery(version_id=version), timeout=10.0))
            for version, ref, _ in inputs
        ]
        return soup.rank(event.rank_by or "target", evaluated)

    async def score(self, candidate: ModelRef, ranking: soup.Ranking) -> float:
        """A trial soup scored by the evaluation service, the way it scored the members."""
        request = SuiteScoreRequest(candidate=candidate, suite=ranking.suite, policy=ranking.best.policy)
        try:
            answer = await ask(self.broker, SUITES_SCORE, request, timeout=self.settings.trial_timeout_s)
        except RpcError as error:
            raise Refused(str(error)) from None
        return float(answer.score)

    async def _merge(self, event: MergeRequested, inputs: list[Input], work: Path) -> Merged:
        try:
            if event.method == "greedy-soup":
                ranking = await self.ranking(event, inputs)
                return await soup.greedy_soup(event, ranking, self.merger, work, self.score)
            return await asyncio.to_thread(self.merger.merge, event, inputs, work)
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)

    async def on_merge_requested(self, event: MergeRequested, ctx: HandlerContext) -> None:
        try:
            inputs = await self.inputs(event)
            problems = compat.check([(v, r) for v, r, _ in inputs], event.method, event.weights)
            if problems:
                raise Refused(compat.describe(problems, event.method), tuple(problems))
            work = Path(self.settings.work_dir) / f"{event.request_id}-{ctx.attempt}"
            ref, lineage = await self._merge(event, inputs, work)
        except Refused as refused:
            log.warning("merge %s refused: %s", event.request_id, refused.message)
            await ctx.publish(
                MergeFailed(request_id=event.request_id, error=refused.message, mismatches=refused.mismatches)
            )
            return
        route = event.route or inputs[0][2]
        policy = event.gate_policy or await self.policy_of(inputs[0][0])
        for produced in (ref.adapter.artifact if ref.adapter else None, ref.weights):
            if produced is not None:  # the merged result belongs to the tenant that asked for it
                await asyncio.to_thread(self.store.claim, produced, event.tenant)
        await ctx.publish(
            CandidateReady(
                candidate=ref,
                lineage=lineage,
                produced_by="merging",
                tenant=event.tenant,
                route=route,
                gate_policy=policy,
            )
        )
        log.info("merge %s (%s): candidate %s", event.request_id, event.method, ref.version_id())


def register(
    broker: NatsBroker,
    handlers: MergingHandlers,
    *,
    bus: EventBus,
    settings: MergingSettings,
    metrics: ServiceMetrics | None,
) -> None:
    subscribe_event(
        broker,
        MergeRequested,
        handlers.on_merge_requested,
        service=SERVICE,
        bus=bus,
        delivery=settings.core.delivery.for_long_work(settings.ack_wait_s),
        metrics=metrics,
    )
