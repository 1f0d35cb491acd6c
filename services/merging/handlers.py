"""Merging's subscriber: merge.requested → compatibility gate → merge → candidate.ready | merge.failed."""

from __future__ import annotations

import asyncio
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from faststream.nats import NatsBroker

from schemas.candidate import CandidateReady
from schemas.gate_policy import GatePolicy
from schemas.merge import MergeFailed, MergeRequested, Mismatch
from schemas.queries import (
    EVALS_GET,
    MODELS_GET,
    SUITES_SCORE,
    EvalsQuery,
    ModelVersionQuery,
    SuiteScoreRequest,
)
from schemas.refs import (
    AdapterRef,
    ArtifactRef,
    Lineage,
    MergeState,
    ModelRef,
    QuantizationConfig,
    SoupStep,
)
from services.core.artifacts import ArtifactError, ArtifactStore
from services.core.bus import EventBus
from services.core.delivery import HandlerContext, subscribe_event
from services.core.models import ModelResolutionError, resolve_exact_base
from services.core.prometheus import ServiceMetrics
from services.core.rpc import RpcError, ask
from services.merging import compat, ops
from services.merging.config import MergingSettings

SERVICE = "merging"
log = logging.getLogger(__name__)
QUANTIZATIONS = {
    "quantize-int8-dynamic": QuantizationConfig(method="int8-dynamic", bits=8),
    "quantize-bnb-8bit": QuantizationConfig(method="bnb-8bit", bits=8, compute_dtype="bfloat16"),
    "quantize-bnb-4bit": QuantizationConfig(
        method="bnb-4bit", bits=4, compute_dtype="bfloat16", quant_type="nf4"
    ),
}


class Refused(Exception):
    def __init__(self, message: str, mismatches: tuple[Mismatch, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.mismatches = mismatches


@dataclass(frozen=True)
class Ranked:
    """A greedy-soup member with its registry score on the ranking suite."""

    index: int  # position in the request's inputs
    version_id: str
    ref: ModelRef
    score: float
    policy: GatePolicy


@dataclass(frozen=True)
class Ranking:
    suite: str
    members: tuple[Ranked, ...]  # best first


class MergingHandlers:
    def __init__(self, settings: MergingSettings, store: ArtifactStore, broker: NatsBroker) -> None:
        self.settings = settings
        self.store = store
        self.broker = broker

    async def inputs(self, event: MergeRequested) -> list[tuple[str, ModelRef, str | None]]:
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

    async def ranking(self, event: MergeRequested, inputs: list[tuple[str, ModelRef, str | None]]) -> Ranking:
        """Greedy-soup members ranked by the score the registry recorded for them on one suite."""
        suite = event.rank_by or "target"
        members: list[Ranked] = []
        versions: set[str] = set()
        for index, (version, ref, _) in enumerate(inputs):
            detail = await ask(self.broker, EVALS_GET, EvalsQuery(version_id=version), timeout=10.0)
            evaluations = detail.model_dump(mode="json")["evaluations"]
            if not evaluations:
                raise Refused(
                    f"input {version} has no evaluation in the registry: greedy-soup ranks members by "
                    "their eval scores; wait for its eval.completed"
                )
            suites = evaluations[-1]["suites"]
            found = next((r for r in suites if r["suite"]["name"] == suite), None)
            if found is None:
                names = ", ".join(sorted(r["suite"]["name"] for r in suites))
                raise Refused(f"input {version} was not evaluated on {suite!r}; rank_by one of: {names}")
            score = next(a["metrics"]["score"] for a in found["scores"] if a["arm"] == "candidate")
            versions.add(found["suite"]["sha256"])
            decisions = detail.decisions
            policy = GatePolicy.model_validate(decisions[-1].policy) if decisions else GatePolicy()
            members.append(Ranked(index, version, ref, float(score), policy))
        if len(versions) > 1:
            raise Refused(
                f"the members were scored on {len(versions)} different versions of {suite!r}: the "
                "scores are not comparable; re-evaluate them on one version or rank_by another suite"
            )
        if (
            suite == "target"
            and len({m.ref.dataset.dataset_id if m.ref.dataset else None for m in members}) > 1
        ):
            raise Refused(
                "the members were trained on different datasets, so their target suites differ; "
                "rank_by a catalogue suite they were all evaluated on"
            )
        return Ranking(suite, tuple(sorted(members, key=lambda m: -m.score)))

    async def on_merge_requested(self, event: MergeRequested, ctx: HandlerContext) -> None:
        try:
            inputs = await self.inputs(event)
            problems = compat.check([(v, r) for v, r, _ in inputs], event.method, event.weights)
            if problems:
                raise Refused(compat.describe(problems, event.method), tuple(problems))
            work = Path(self.settings.work_dir) / f"{event.request_id}-{ctx.attempt}"
            try:
                if event.method == "greedy-soup":
                    ref, lineage = await self.greedy_soup(event, await self.ranking(event, inputs), work)
                else:
                    ref, lineage = await asyncio.to_thread(self.merge, event, inputs, work)
            finally:
                await asyncio.to_thread(shutil.rmtree, work, True)
        except Refused as refused:
            log.warning("merge %s refused: %s", event.request_id, refused.message)
            await ctx.publish(
                MergeFailed(request_id=event.request_id, error=refused.message, mismatches=refused.mismatches)
            )
            return
        route = event.route or inputs[0][2]
        for produced in (ref.adapter.artifact if ref.adapter else None, ref.weights):
            if produced is not None:  # the merged result belongs to the tenant that asked for it
                await asyncio.to_thread(self.store.claim, produced, event.tenant)
        await ctx.publish(
            CandidateReady(
                candidate=ref, lineage=lineage, produced_by="merging", tenant=event.tenant, route=route
            )
        )
        log.info("merge %s (%s): candidate %s", event.request_id, event.method, ref.version_id())

    # -- the work (worker thread) ---------------------------------------------------------------
    def _fetch(self, ref: ModelRef, work: Path, name: str) -> Path:
        artifact = ref.adapter.artifact if ref.adapter else ref.weights
        if artifact is None:
            raise Refused(f"{name}: the ModelRef has neither an adapter nor weights")
        try:
            return self.store.fetch_tree(artifact, work / name)
        except ArtifactError as error:
            raise Refused(f"{name}: {error}") from None

    def _base(self, ref: ModelRef) -> Path:
        try:
            return resolve_exact_base(ref.base, self.settings.core.model_cache, self.store)
        except ModelResolutionError as error:
            raise Refused(f"base {ref.base.name}: {error}") from None

    def merge(
        self, event: MergeRequested, inputs: list[tuple[str, ModelRef, str | None]], work: Path
    ) -> tuple[ModelRef, Lineage]:
        """Every method but greedy-soup (which needs the evaluation service: `greedy_soup`)."""
        method = event.method
        refs = [r for _, r, _ in inputs]
        first = refs[0]
        parents = tuple(v for v, _, _ in inputs)
        weights = list(event.weights) or [1.0 / len(refs)] * len(refs)
        if method in QUANTIZATIONS:
            quantization = QUANTIZATIONS[method]
            if quantization.method.startswith("bnb") and not _cuda():
                raise Refused(f"{method} needs CUDA (bitsandbytes); run the merging service on a GPU worker")
            if quantization.method.startswith("bnb") and first.adapter is not None:
                # bitsandbytes quantizes full weights at load: merge the adapter in first
                ref, lineage = self._into_base(first, parents, work)
                return ref.model_copy(update={"quantization": quantization}), lineage
            return first.model_copy(update={"quantization": quantization}), Lineage(parents=parents)
        if method == "merge-into-base":
            return self._into_base(first, parents, work)
        base = self._base(first)
        out = work / "out"
        if method in compat.ADAPTER_METHODS:
            folders = [self._fetch(r, work, f"input{n}") for n, r in enumerate(refs)]
            try:
                config = ops.combine_adapters(base, folders, weights, method, event.density, out)
            except ops.MergeError as error:
                raise Refused(str(error)) from None
            assert first.adapter is not None
            adapter = AdapterRef(
                artifact=self.store.put_tree(out),
                method=first.adapter.method,
                rank=int(config["r"]),
                alpha=float(config["lora_alpha"]),
                target_modules=tuple(sorted(_targets(config))),
                dropout=float(config.get("lora_dropout") or 0.0),
            )
            ref = _combined(first, adapter=adapter, artifact=None, event=event, weights=weights)
            return ref, Lineage(parents=parents)
        folders = [self._fetch(r, work, f"input{n}") for n, r in enumerate(refs)]
        try:
            peak = ops.soup(folders, weights, out)
        except ops.MergeError as error:
            raise Refused(str(error)) from None
        ref = _combined(first, adapter=None, artifact=self.store.put_tree(out), event=event, weights=weights)
        return ref, Lineage(parents=parents, peak_memory_mb=peak)

    def _into_base(self, first: ModelRef, parents: tuple[str, ...], work: Path) -> tuple[ModelRef, Lineage]:
        """The adapter merged into its base, accepted only within the logit tolerance."""
        out = work / "out"
        difference = ops.merge_into_base(
            self._base(first), self._fetch(first, work, "input0"), out, tolerance=self.settings.tolerance
        )
        if difference.max_abs_logit_diff > self.settings.tolerance:
            raise Refused(
                f"merged weights differ from the adapter by {difference.max_abs_logit_diff:.3g} logits "
                f"(tolerance {self.settings.tolerance:g})"
            )
        ref = first.model_copy(
            update={
                "adapter": None,
                "weights": self.store.put_tree(out),
                "method": first.method or (first.adapter.method if first.adapter else None),
                "merge": MergeState(kind="merged-into-base", method="merge_and_unload"),
            }
        )
        return ref, Lineage(
            dataset_id=first.dataset.dataset_id if first.dataset else None,
            run_id=first.run_id,
            parents=parents,
            merge_difference=difference,
        )

    async def greedy_soup(
        self, event: MergeRequested, ranking: Ranking, work: Path
    ) -> tuple[ModelRef, Lineage]:
        """Best member first; each next one joins the uniform soup only if the soup's score rises.

        The first soup's score is the best member's registry score. Each trial soup is streamed
        shard by shard (`ops.soup`), stored, and scored on the same suite by the evaluation
        service (`suites.score`), the same way evaluation scored the members."""
        members = ranking.members
        best = members[0]
        folders = [await asyncio.to_thread(self._fetch, m.ref, work, f"input{m.index}") for m in members]
        kept, score, current, peak = [0], best.score, best.ref.weights, 0.0
        steps = [SoupStep(version_id=best.version_id, member_score=best.score, soup_score=score, added=True)]
        for n in range(1, len(members)):
            trial, tried = work / f"trial-{n}", [*kept, n]
            try:
                peak = max(
                    peak,
                    await asyncio.to_thread(
                        ops.soup, [folders[i] for i in tried], [1 / len(tried)] * len(tried), trial
                    ),
                )
                artifact = await asyncio.to_thread(self.store.put_tree, trial)
                trial_score = await self._score(self._soup_ref(event, ranking, artifact, []), ranking)
            except (ops.MergeError, RpcError) as error:
                raise Refused(f"greedy-soup trial with {members[n].version_id}: {error}") from None
            added = trial_score > score
            log.info(
                "greedy-soup %s: %s %s (%s %.2f → %.2f)",
                event.request_id,
                "adds" if added else "skips",
                members[n].version_id,
                ranking.suite,
                score,
                trial_score,
            )
            steps.append(
                SoupStep(
                    version_id=members[n].version_id,
                    member_score=members[n].score,
                    soup_score=trial_score,
                    added=added,
                )
            )
            if added:
                kept, score, current = tried, trial_score, artifact
        share = {members[i].index: 1 / len(kept) for i in kept}
        weights = [share.get(i, 0.0) for i in range(len(members))]
        lineage = Lineage(
            parents=tuple(members[i].version_id for i in kept),
            peak_memory_mb=peak or None,
            soup_steps=tuple(steps),
            ranked_by=ranking.suite,
        )
        return self._soup_ref(event, ranking, current, weights), lineage

    @staticmethod
    def _soup_ref(
        event: MergeRequested, ranking: Ranking, artifact: ArtifactRef | None, weights: list[float]
    ) -> ModelRef:
        best = ranking.members[0].ref
        ref = _combined(best, adapter=None, artifact=artifact, event=event, weights=weights)
        if ranking.suite == "target":
            ref = ref.model_copy(update={"dataset": best.dataset})  # every member's, checked
        return ref

    async def _score(self, candidate: ModelRef, ranking: Ranking) -> float:
        request = SuiteScoreRequest(
            candidate=candidate, suite=ranking.suite, policy=ranking.members[0].policy
        )
        answer = await ask(self.broker, SUITES_SCORE, request, timeout=self.settings.trial_timeout_s)
        return float(answer.score)


def _targets(config: dict[str, Any]) -> list[str]:
    targets = config.get("target_modules") or []
    return [targets] if isinstance(targets, str) else list(targets)


def _combined(
    first: ModelRef,
    *,
    adapter: AdapterRef | None,
    artifact: ArtifactRef | None,
    event: MergeRequested,
    weights: list[float],
) -> ModelRef:
    """The combined version: its own adapter or full weights, the merge recorded, no single dataset."""
    kind = "soup" if adapter is None else "adapter-combination"
    return first.model_copy(
        update={
            "adapter": adapter,
            "weights": artifact,
            "merge": MergeState(
                kind=kind, method=event.method, weights=tuple(weights), density=event.density
            ),
            "dataset": None,  # several parents: the lineage names them
            "run_id": None,
            "recipe_sha256": None,
        }
    )


def _cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


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
