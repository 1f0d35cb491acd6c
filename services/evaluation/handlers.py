"""Evaluation's subscribers: candidate.ready → eval.completed → gates.passed | gates.failed;
drift.check-requested → drift.detected; RPCs to list and register suites."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from faststream.nats import NatsBroker
from pydantic import BaseModel

from schemas.candidate import CandidateReady
from schemas.checkpoints import CheckpointScreen, CheckpointScreenRequest
from schemas.evaluation import (
    DriftCheckRequested,
    DriftDetected,
    EvalCompleted,
    EvalFailed,
    GatesFailed,
    GatesPassed,
)
from schemas.gate_policy import GatePolicy
from schemas.queries import (
    CHECKPOINTS_SCREEN,
    EVALS_GET,
    MODELS_GET,
    MODELS_LIST,
    SUITES_ADD,
    SUITES_LIST,
    SUITES_SCORE,
    EvalsQuery,
    ModelVersionQuery,
    ModelVersionsQuery,
    QuerySpec,
    Reply,
    SuiteInfo,
    SuiteList,
    SuiteRegistration,
    SuiteScore,
    SuiteScoreRequest,
    SuitesQuery,
)
from schemas.refs import ModelRef
from services.core.artifacts import ArtifactStore
from services.core.messaging.bus import EventBus
from services.core.messaging.delivery import HandlerContext, subscribe_event
from services.core.messaging.rpc import RpcError, ask, serve_query
from services.core.messaging.uploads import UploadError, download, pack_directory
from services.core.ml.suite_catalogue import Suite, SuiteError, all_suites, register_suite
from services.core.prometheus import ServiceMetrics
from services.evaluation import drift, screening
from services.evaluation.config import EvaluationSettings
from services.evaluation.evaluate import Evaluator
from services.evaluation.options import EvalOptions, EvaluationError, Outcome

SERVICE = "evaluation"
log = logging.getLogger(__name__)


class EvaluationHandlers:
    def __init__(self, settings: EvaluationSettings, store: ArtifactStore, broker: NatsBroker) -> None:
        self.settings = settings
        self.store = store
        self.broker = broker

    def options(self, **overrides: Any) -> EvalOptions:
        """The evaluator's options: the settings of the same names, the device resolved."""
        names = {f.name for f in dataclasses.fields(EvalOptions)}
        values = {k: v for k, v in self.settings.model_dump().items() if k in names}
        return EvalOptions(**{**values, "device": self.settings.resolved_device(), **overrides})

    def _evaluate(
        self,
        work: str,
        candidate: ModelRef,
        policy: GatePolicy,
        production: ModelRef | None,
        parents: tuple[ModelRef, ...] = (),
        held_out: dict[str, tuple[str, ...]] | None = None,
        **overrides: Any,
    ) -> Outcome:
        with self._evaluator(work, **overrides) as evaluator:
            return evaluator.run(candidate, policy, production, parents, held_out)

    @contextlib.contextmanager
    def _evaluator(self, work: str, **overrides: Any) -> Iterator[Evaluator]:
        """An evaluator with a fresh work folder, removed afterwards."""
        folder = Path(self.settings.work_dir) / work
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        try:
            yield Evaluator(
                self.store,
                self.options(**overrides),
                model_cache=self.settings.core.model_cache,
                work_dir=folder,
            )
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _score(self, request: SuiteScoreRequest) -> float:
        with self._evaluator(f"score-{uuid.uuid4().hex[:12]}") as evaluator:
            return evaluator.score_suite(request.candidate, request.policy, request.suite)

    async def _registry(self, spec: QuerySpec[Any, Reply], request: BaseModel) -> Reply | None:
        try:
            return await ask(self.broker, spec, request, timeout=10.0)
        except RpcError as error:
            if error.code == "not-found":
                return None
            raise

    async def production_of(self, route: str | None, tenant: str) -> ModelRef | None:
        """The version serving the route in production, per the registry (None when there is none)."""
        if route is None:
            return None
        request = ModelVersionsQuery(route=route, tenant=tenant, status="production", limit=1)
        listing = await self._registry(MODELS_LIST, request)
        if listing is None or not listing.versions:
            return None
        detail = await self._registry(
            MODELS_GET, ModelVersionQuery(version_id=listing.versions[0].version_id)
        )
        return ModelRef.model_validate(detail.model_ref) if detail else None

    async def parents_of(self, event: CandidateReady) -> tuple[ModelRef, ...]:
        """The lineage parents of a merged or quantized candidate, from the registry; a parent the
        registry does not know stops the evaluation (its gates would silently fall back to the base)."""
        if event.produced_by != "merging":
            return ()
        refs = []
        for version_id in event.lineage.parents:
            detail = await self._registry(MODELS_GET, ModelVersionQuery(version_id=version_id))
            if detail is None:
                raise EvaluationError(
                    "parent-unavailable",
                    f"lineage parent {version_id} is not in the registry; the candidate is judged "
                    "against its parents, so evaluate it once the parent is recorded",
                )
            refs.append(ModelRef.model_validate(detail.model_ref))
        return tuple(refs)

    # -- candidate.ready ----------------------------------------------------------------------
    async def on_candidate(self, event: CandidateReady, ctx: HandlerContext) -> None:
        candidate = event.candidate
        version = candidate.version_id()
        subject: dict[str, Any] = {"candidate": candidate, "tenant": event.tenant, "route": event.route}
        try:
            production = await self.production_of(event.route, event.tenant)
        except RpcError as error:
            log.warning("%s: no production comparison (%s)", version, error)
            production = None
        if production is not None and production.version_id() == version:
            production = None
        try:
            parents = await self.parents_of(event)
            choice = event.checkpoint_choice
            outcome = await asyncio.to_thread(
                self._evaluate,
                f"{version}-{ctx.attempt}",
                candidate,
                event.gate_policy,
                production,
                parents,
                choice.screened_items if choice else None,
            )
        except EvaluationError as error:
            log.warning("%s: not evaluated: %s", version, error.message)
            await ctx.publish(EvalFailed(**subject, reason=error.reason, error=error.message))
            return
        report = await asyncio.to_thread(self.store.put_json, outcome.report)
        await asyncio.to_thread(self.store.claim, report, event.tenant)
        await ctx.publish(EvalCompleted(**subject, suites=tuple(outcome.suites), report=report))
        verdict = GatesPassed if outcome.passed else GatesFailed
        await ctx.publish(
            verdict(
                **subject, policy=event.gate_policy, gates=tuple(outcome.gates), notes=tuple(outcome.notes)
            )
        )
        failed = [
            f"{g.gate} {g.value:.3g} not {g.comparator} {g.threshold:g}"
            + (f", p {g.p_value:.2g}" if g.p_value is not None else "")
            for g in outcome.gates
            if not g.passed
        ]
        log.info("%s: %s%s", version, verdict.event_type, f" ({'; '.join(failed)})" if failed else "")

    # -- drift ----------------------------------------------------------------------------------
    async def on_drift_check(self, event: DriftCheckRequested, ctx: HandlerContext) -> None:
        production = await self.production_of(event.route, event.tenant)
        if production is None:
            log.info("drift check of %s: no production version, nothing to check", event.route)
            return
        version = production.version_id()
        evals = await self._registry(EVALS_GET, EvalsQuery(version_id=version))
        if evals is None or not evals.evaluations:
            log.info("drift check of %s: %s has no recorded evaluation to compare with", event.route, version)
            return
        release = drift.Release.of(evals)
        outcome = await asyncio.to_thread(
            self._evaluate,
            f"drift-{version}-{ctx.attempt}",
            production,
            release.policy,
            None,
            latency_items=0,
        )
        deltas = release.deltas(outcome.suites)
        if deltas:
            await ctx.publish(
                DriftDetected(
                    route=event.route, tenant=event.tenant, production_version=version, deltas=tuple(deltas)
                )
            )
        log.info("drift check of %s (%s): %d suite metrics moved", event.route, version, len(deltas))

    async def publish_drift_checks(self, bus: EventBus, slot: int) -> int:
        """One drift.check-requested per production route; ids are per (route, slot), so replicas
        publishing the same slot are deduplicated by JetStream."""
        listing = await self._registry(MODELS_LIST, ModelVersionsQuery(status="production", limit=1000))
        count = 0
        for version in listing.versions if listing else ():
            if not version.route:
                continue
            event_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"tuneline/drift/{version.route}/{slot}"))
            await bus.publish(
                DriftCheckRequested(route=version.route, tenant=version.tenant, requested_by="scheduler"),
                event_id=event_id,
            )
            count += 1
        return count

    # -- suites RPC -----------------------------------------------------------------------------
    async def suites_list(self, request: SuitesQuery) -> SuiteList:
        suites = await asyncio.to_thread(all_suites, self.store)
        return SuiteList(suites=tuple(_info(s) for s in suites))

    async def suites_add(self, request: SuiteRegistration) -> SuiteInfo:
        work = Path(self.settings.work_dir) / "uploads" / uuid.uuid4().hex
        try:
            path = await download(self.broker.connection.jetstream(), request.upload, work)
            # an lm-eval task arrives as a directory: stored as one deterministic tar
            data = await asyncio.to_thread(pack_directory if path.is_dir() else Path.read_bytes, path)
            suite = await asyncio.to_thread(
                register_suite, self.store, request.name, data, request.scorer, request.kind
            )
        except (SuiteError, UploadError) as error:
            raise RpcError(str(error), code="bad-request") from None
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return _info(suite)

    async def suites_score(self, request: SuiteScoreRequest) -> SuiteScore:
        """One version's score on one suite (merging's greedy-soup trials), off the event loop."""
        try:
            score = await asyncio.to_thread(self._score, request)
        except EvaluationError as error:
            raise RpcError(f"{error.reason}: {error.message}", code="bad-request") from None
        return SuiteScore(suite=request.suite, score=score)

    async def checkpoints_screen(self, request: CheckpointScreenRequest) -> CheckpointScreen:
        """A run's checkpoints screened against the base (training's checkpoint choice)."""

        def run() -> CheckpointScreen:
            with self._evaluator(f"screen-{uuid.uuid4().hex[:12]}") as evaluator:
                return screening.screen(evaluator, request)

        try:
            return await asyncio.to_thread(run)
        except EvaluationError as error:
            raise RpcError(f"{error.reason}: {error.message}", code="bad-request") from None


def _info(suite: Suite) -> SuiteInfo:
    return SuiteInfo(
        name=suite.name,
        kind=suite.kind,
        scorer=suite.scorer,
        origin=suite.origin,
        sha256=suite.ref().sha256,
        items=len(suite.items()),
    )


def register(
    broker: NatsBroker,
    handlers: EvaluationHandlers,
    *,
    bus: EventBus,
    settings: EvaluationSettings,
    metrics: ServiceMetrics | None,
) -> None:
    long = settings.core.delivery.for_long_work(settings.ack_wait_s)
    for event_cls, handler in (
        (CandidateReady, handlers.on_candidate),
        (DriftCheckRequested, handlers.on_drift_check),
    ):
        subscribe_event(
            broker,
            event_cls,
            handler,  # type: ignore[arg-type]
            service=SERVICE,
            bus=bus,
            delivery=long,
            metrics=metrics,
        )
    serve_query(broker, SUITES_LIST, handlers.suites_list)
    serve_query(broker, SUITES_ADD, handlers.suites_add)
    serve_query(broker, SUITES_SCORE, handlers.suites_score)
    serve_query(broker, CHECKPOINTS_SCREEN, handlers.checkpoints_screen)
