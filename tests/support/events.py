"""Builders of valid sample events for tests."""

from __future__ import annotations

import hashlib

from schemas.candidate import CandidateReady
from schemas.dataset import DatasetSubmitted, DataSource
from schemas.recipe import TrainingRecipe
from schemas.refs import AdapterRef, ArtifactRef, BaseModelRef, Lineage, ModelRef, TokenizerRef


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def submitted(n: int = 1, tenant: str = "acme") -> DatasetSubmitted:
    return DatasetSubmitted(
        submission_id=f"sub-{n}",
        tenant=tenant,
        task="ticket-to-json",
        route="ticket-extractor",
        sources=(DataSource(uri=f"data/{n}.jsonl"),),
        recipe=TrainingRecipe(base_model="tiny-llama"),
    )


def model_ref(adapter_seed: str = "a", run_id: str = "run-1") -> ModelRef:
    return ModelRef(
        base=BaseModelRef(
            name="tiny-llama", uri="blobs/base", sha256=sha("base"), architecture="LlamaForCausalLM"
        ),
        adapter=AdapterRef(
            artifact=ArtifactRef(
                key=f"blobs/sha256/{sha(adapter_seed)[:2]}/{sha(adapter_seed)}",
                sha256=sha(adapter_seed),
                size_bytes=10,
            ),
            method="sft-lora",
            rank=8,
            alpha=16,
            target_modules=("q_proj", "v_proj"),
        ),
        tokenizer=TokenizerRef(tokenizer_sha256=sha("tok")),
        run_id=run_id,
    )


def candidate(adapter_seed: str = "a", run_id: str = "run-1") -> CandidateReady:
    return CandidateReady(
        candidate=model_ref(adapter_seed, run_id),
        lineage=Lineage(dataset_id=sha("ds"), run_id=run_id),
        produced_by="training",
        tenant="acme",
        route="ticket-extractor",
    )
