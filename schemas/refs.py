"""References to things outside an event: artifacts, datasets, base models and the ModelRef tuple."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from schemas.events import Contract

Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
"""Lower-case hex sha256 digest."""

# no control characters: a NUL in a name or URI broke file APIs deep in a service, after retries
NO_CONTROL = r"^[^\x00-\x1f\x7f]*$"
Name = Annotated[
    str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True, pattern=NO_CONTROL)
]
RouteAlias = Annotated[
    str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
]  # a DNS-label-like alias, also usable as a NATS subject token and a KV key
TENANT_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
Tenant = Annotated[str, StringConstraints(pattern=TENANT_PATTERN)]

TrainingMethod = Literal["sft-lora", "sft-qlora", "sft-full", "dpo", "ipo", "kto", "distill"]


class ArtifactRef(Contract):
    """A blob in the content-addressed artifact store; verified against `sha256` before use."""

    key: str = Field(description="Path relative to the artifact store root, e.g. blobs/sha256/ab/ab…")
    sha256: Sha256
    size_bytes: int = Field(ge=0)
    media_type: str = Field(default="application/octet-stream")


class DatasetRef(Contract):
    """A curated dataset: its id is the content hash of its curated splits."""

    dataset_id: Sha256
    manifest: ArtifactRef


class BaseModelRef(Contract):
    """The base weights a model version is built on."""

    name: Name = Field(description="Human name, e.g. HuggingFaceTB/SmolLM2-135M-Instruct")
    uri: str = Field(description="Where the weights live: an artifact key, a local HF dir or s3://")
    sha256: Sha256 = Field(description="Hash over the safetensors weight files, in name order")
    architecture: Name = Field(description="transformers architecture, e.g. LlamaForCausalLM")


class AdapterRef(Contract):
    """A PEFT adapter: what it is and how it was made."""

    artifact: ArtifactRef
    method: TrainingMethod
    rank: int = Field(ge=1)
    alpha: float = Field(gt=0)
    target_modules: tuple[str, ...] = Field(min_length=1)
    dropout: float = Field(default=0.0, ge=0, lt=1)


class QuantizationConfig(Contract):
    """How the weights are quantized, if at all."""

    method: Literal["none", "int8-dynamic", "bnb-8bit", "bnb-4bit"] = "none"
    bits: int | None = Field(default=None, ge=2, le=16)
    compute_dtype: str | None = None
    quant_type: str | None = Field(default=None, description="e.g. nf4 or fp4 for bnb-4bit")


class TokenizerRef(Contract):
    tokenizer_sha256: Sha256 = Field(description="Hash of the tokenizer files, in name order")
    chat_template_sha256: Sha256 | None = Field(default=None, description="Hash of the chat template")


class MergeState(Contract):
    """Whether and how this version's weights were combined."""

    kind: Literal["unmerged", "merged-into-base", "adapter-combination", "soup"] = "unmerged"
    method: str | None = Field(default=None, description="e.g. ties, dare_linear, uniform-soup")
    weights: tuple[float, ...] = ()
    density: float | None = Field(default=None, gt=0, le=1)


class EvalSuiteRef(Contract):
    name: Name
    sha256: Sha256 = Field(description="Content hash of the suite's items and scorer")


class ModelRef(Contract):
    """The versioned tuple: everything needed to say exactly which weights produced an answer."""

    base: BaseModelRef
    adapter: AdapterRef | None = Field(default=None, description="Set for adapter-based versions")
    weights: ArtifactRef | None = Field(
        default=None, description="Full weights (full SFT, merges, soups, quantized exports)"
    )
    method: TrainingMethod | None = Field(
        default=None, description="How the weights were trained (also set when there is no adapter)"
    )
    merge: MergeState = MergeState()
    quantization: QuantizationConfig = QuantizationConfig()
    tokenizer: TokenizerRef
    dataset: DatasetRef | None = None
    recipe_sha256: Sha256 | None = None
    run_id: str | None = None
    eval_suites: tuple[EvalSuiteRef, ...] = ()

    def version_id(self) -> str:
        """Stable id of the tuple (eval suites excluded: validating a version does not change it)."""
        identity = self.model_dump(mode="json", exclude={"eval_suites"})
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
        return f"mv-{digest[:16]}"


class MergeDifference(Contract):
    """How far merged weights drift from the unmerged adapter they replace, on probe prompts."""

    probes: int = Field(ge=1)
    max_abs_logit_diff: float = Field(ge=0, description="Largest |merged - unmerged| next-token logit")
    greedy_agreement: float = Field(ge=0, le=1, description="Share of greedy tokens that are identical")
    tolerance: float = Field(ge=0, description="The logit difference the merge was accepted at")


class SoupStep(Contract):
    """One greedy-soup decision: the member tried, its own score, and the soup's score with it."""

    version_id: str
    member_score: float = Field(description="The member's candidate score on the ranking suite (registry)")
    soup_score: float = Field(description="Score of the soup with this member (the first: its own score)")
    added: bool = Field(description="Kept only if the soup's score strictly improved")


class Lineage(Contract):
    """Where a candidate came from."""

    dataset_id: Sha256 | None = None
    run_id: str | None = None
    parents: tuple[str, ...] = Field(default=(), description="version ids of parent candidates")
    merge_difference: MergeDifference | None = Field(
        default=None, description="Recorded when an adapter was merged into its base"
    )
    peak_memory_mb: float | None = Field(default=None, ge=0, description="Peak memory of the merge")
    soup_steps: tuple[SoupStep, ...] = Field(
        default=(), description="greedy-soup: every member tried, best first, and whether it was kept"
    )
    ranked_by: str | None = Field(default=None, description="greedy-soup: the suite that ranked the members")
