"""Merging's subscriber: merge.requested → compatibility gate → merge → candidate.ready | merge.failed."""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path
from typing import Any

from faststream.nats import NatsBroker

from schemas.candidate import CandidateReady
from schemas.merge import MergeFailed, MergeRequested, Mismatch
from schemas.refs import AdapterRef, ArtifactRef, Lineage, MergeState, ModelRef, QuantizationConfig
from services.core.artifacts import ArtifactError, ArtifactStore
from services.core.bus import EventBus
from services.core.delivery import HandlerContext, subscribe_event
from services.core.metrics import ServiceMetrics
from services.core.models import ModelResolutionError, resolve_exact_base
from services.core.rpc import RpcError, query
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
                detail = await query(
                    self.broker, "registry", "models.get", {"version_id": ident}, timeout=10.0
                )
            except RpcError as error:
                if error.code == "not-found":
                    raise Refused(f"input {ident}: {error}") from None
                raise
            summary = detail["summary"]
            if summary["tenant"] != event.tenant:
                # never say more about another tenant's version than that it is not yours
                raise Refused(f"input {ident} is not a model version of tenant {event.tenant}")
            found.append(
                (summary["version_id"], ModelRef.model_validate(detail["model_ref"]), summary["route"])
            )
        return found

    async def on_merge_requested(self, event: MergeRequested, ctx: HandlerContext) -> None:
        try:
            inputs = await self.inputs(event)
            problems = compat.check([(v, r) for v, r, _ in inputs], event.method, event.weights)
            if problems:
                raise Refused(compat.describe(problems, event.method), tuple(problems))
            work = Path(self.settings.work_dir) / f"{event.request_id}-{ctx.attempt}"
            try:
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
        method = event.method
        refs = [r for _, r, _ in inputs]
        first = refs[0]
        parents = tuple(v for v, _, _ in inputs)
        weights = list(event.weights) or [1.0 / len(refs)] * len(refs)
        if method in QUANTIZATIONS:
            quantization = QUANTIZATIONS[method]
            if quantization.method.startswith("bnb") and not _cuda():
                raise Refused(f"{method} needs CUDA (bitsandbytes); run the merging service on a GPU worker")
            return first.model_copy(update={"quantization": quantization}), Lineage(parents=parents)
        if method == "greedy-soup":
            raise Refused(
                "greedy-soup is not available yet: it needs evaluation of every intermediate soup; "
                "use uniform-soup and let the evaluation gates judge the result"
            )
        base = self._base(first)
        out = work / "out"
        if method == "merge-into-base":
            difference = ops.merge_into_base(
                base, self._fetch(first, work, "input0"), out, tolerance=self.settings.tolerance
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
