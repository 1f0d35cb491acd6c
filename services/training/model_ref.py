"""The versioned tuple of a trained candidate: base, adapter or weights, tokenizer, data, recipe."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from schemas.dataset import DatasetApproved
from schemas.recipe import TrainingRecipe
from schemas.refs import AdapterRef, ArtifactRef, BaseModelRef, DatasetRef, ModelRef, TokenizerRef
from services.core.ml.bases import builtin_names, canonical_name
from services.core.ml.models import architecture, chat_template_sha256, tokenizer_sha256, weights_sha256


def recipe_sha256(recipe: TrainingRecipe) -> str:
    canonical = json.dumps(recipe.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def base_ref(name: str, path: Path) -> BaseModelRef:
    canonical = canonical_name(name)
    portable = canonical in builtin_names() or canonical.startswith(("artifact:", "s3://"))
    return BaseModelRef(
        name=canonical,
        uri=canonical if portable else str(path),
        sha256=weights_sha256(path),
        architecture=architecture(path),
    )


def tokenizer_ref(path: Path) -> TokenizerRef:
    return TokenizerRef(
        tokenizer_sha256=tokenizer_sha256(path), chat_template_sha256=chat_template_sha256(path)
    )


def candidate_ref(
    *,
    base: BaseModelRef,
    tokenizer: TokenizerRef,
    recipe: TrainingRecipe,
    dataset: DatasetApproved,
    run_id: str,
    artifact: ArtifactRef,
    adapter: bool,
) -> ModelRef:
    adapter_ref = (
        AdapterRef(
            artifact=artifact,
            method=recipe.method,
            rank=recipe.lora.rank,
            alpha=recipe.lora.alpha,
            target_modules=recipe.lora.target_modules,
            dropout=recipe.lora.dropout,
        )
        if adapter
        else None
    )
    return ModelRef(
        base=base,
        adapter=adapter_ref,
        weights=None if adapter else artifact,
        method=recipe.method,
        tokenizer=tokenizer,
        dataset=DatasetRef(dataset_id=dataset.dataset_id, manifest=dataset.manifest),
        recipe_sha256=recipe_sha256(recipe),
        run_id=run_id,
    )
