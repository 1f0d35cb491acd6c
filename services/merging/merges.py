"""Every merge method but greedy-soup, dispatched from one table, on local directories.

Plain code with no broker: `MergingHandlers` runs `Merger.merge` in a worker thread. A request
that cannot be served raises `Refused`, which the handler turns into `merge.failed`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schemas.merge import MergeRequested, Mismatch
from schemas.refs import AdapterRef, ArtifactRef, Lineage, MergeState, ModelRef, QuantizationConfig
from services.core.artifacts import ArtifactError, ArtifactStore
from services.core.ml.bases import resolve_exact_base
from services.core.ml.models import ModelResolutionError
from services.merging import compat, ops
from services.merging.config import MergingSettings

QUANTIZATIONS = {
    "quantize-int8-dynamic": QuantizationConfig(method="int8-dynamic", bits=8),
    "quantize-bnb-8bit": QuantizationConfig(method="bnb-8bit", bits=8, compute_dtype="bfloat16"),
    "quantize-bnb-4bit": QuantizationConfig(
        method="bnb-4bit", bits=4, compute_dtype="bfloat16", quant_type="nf4"
    ),
}
Input = tuple[str, ModelRef, str | None]  # (version id, ModelRef, route) as the registry knows them
Merged = tuple[ModelRef, Lineage]


class Refused(Exception):
    def __init__(self, message: str, mismatches: tuple[Mismatch, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.mismatches = mismatches


@dataclass(frozen=True)
class Job:
    """One merge request's inputs as the methods need them."""

    event: MergeRequested
    refs: list[ModelRef]
    parents: tuple[str, ...]
    weights: list[float]
    work: Path

    @property
    def first(self) -> ModelRef:
        return self.refs[0]


class Merger:
    """Runs a merge on the artifact store's trees; greedy-soup lives in `soup.py`."""

    def __init__(self, settings: MergingSettings, store: ArtifactStore) -> None:
        self.settings = settings
        self.store = store
        methods: dict[str, Callable[[Job], Merged]] = {
            "merge-into-base": self._into_base_job,
            "uniform-soup": self._soup,
        }
        methods |= {name: self._quantize for name in QUANTIZATIONS}
        methods |= {name: self._combine_adapters for name in compat.ADAPTER_METHODS}
        self.methods = methods

    def merge(self, event: MergeRequested, inputs: Sequence[Input], work: Path) -> Merged:
        refs = [r for _, r, _ in inputs]
        job = Job(
            event=event,
            refs=refs,
            parents=tuple(v for v, _, _ in inputs),
            weights=list(event.weights) or [1.0 / len(refs)] * len(refs),
            work=work,
        )
        method = self.methods.get(event.method)
        if method is None:  # greedy-soup needs the evaluation service: soup.greedy_soup
            raise Refused(f"{event.method} is not a method Merger runs; known: {', '.join(self.methods)}")
        return method(job)

    # -- inputs -----------------------------------------------------------------------------------
    def fetch(self, ref: ModelRef, work: Path, name: str) -> Path:
        artifact = ref.adapter.artifact if ref.adapter else ref.weights
        if artifact is None:
            raise Refused(f"{name}: the ModelRef has neither an adapter nor weights")
        try:
            return self.store.fetch_tree(artifact, work / name)
        except ArtifactError as error:
            raise Refused(f"{name}: {error}") from None

    def base(self, ref: ModelRef) -> Path:
        try:
            return resolve_exact_base(ref.base, self.settings.core.model_cache, self.store)
        except ModelResolutionError as error:
            raise Refused(f"base {ref.base.name}: {error}") from None

    def fetch_all(self, job: Job) -> list[Path]:
        return [self.fetch(r, job.work, f"input{n}") for n, r in enumerate(job.refs)]

    # -- the methods ------------------------------------------------------------------------------
    def _quantize(self, job: Job) -> Merged:
        method, first = job.event.method, job.first
        quantization = QUANTIZATIONS[method]
        if quantization.method.startswith("bnb") and not _cuda():
            raise Refused(f"{method} needs CUDA (bitsandbytes); run the merging service on a GPU worker")
        if quantization.method.startswith("bnb") and first.adapter is not None:
            # bitsandbytes quantizes full weights at load: merge the adapter in first
            ref, lineage = self.into_base(first, job.parents, job.work)
            return ref.model_copy(update={"quantization": quantization}), lineage
        return first.model_copy(update={"quantization": quantization}), Lineage(parents=job.parents)

    def _into_base_job(self, job: Job) -> Merged:
        return self.into_base(job.first, job.parents, job.work)

    def into_base(self, first: ModelRef, parents: tuple[str, ...], work: Path) -> Merged:
        """The adapter merged into its base, accepted only within the logit tolerance."""
        out = work / "out"
        difference = ops.merge_into_base(
            self.base(first), self.fetch(first, work, "input0"), out, tolerance=self.settings.tolerance
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

    def _combine_adapters(self, job: Job) -> Merged:
        base, out, first = self.base(job.first), job.work / "out", job.first
        try:
            config = ops.combine_adapters(
                base, self.fetch_all(job), job.weights, job.event.method, job.event.density, out
            )
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
        ref = combined(first, adapter=adapter, artifact=None, event=job.event, weights=job.weights)
        return ref, Lineage(parents=job.parents)

    def _soup(self, job: Job) -> Merged:
        """A uniform or weighted soup of full models (`soup`)."""
        self.base(job.first)  # the exact base must be known here, as for every other method
        out = job.work / "out"
        try:
            peak = ops.soup(self.fetch_all(job), job.weights, out)
        except ops.MergeError as error:
            raise Refused(str(error)) from None
        artifact = self.store.put_tree(out)
        ref = combined(job.first, adapter=None, artifact=artifact, event=job.event, weights=job.weights)
        return ref, Lineage(parents=job.parents, peak_memory_mb=peak)


def _targets(config: dict[str, Any]) -> list[str]:
    targets = config.get("target_modules") or []
    return [targets] if isinstance(targets, str) else list(targets)


def combined(
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
