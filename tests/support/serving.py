"""Serving test helpers: random LoRA adapters on the tiny model, their ModelRefs, routes in NATS KV."""

from __future__ import annotations

from pathlib import Path

from schemas.refs import BaseModelRef, ModelRef, TokenizerRef
from schemas.serving import RouteEntry
from services.core.artifacts import ArtifactStore
from services.core.models import tokenizer_sha256, weights_sha256
from tests.support.merging import ref_for


def random_adapter(base_dir: Path, out: Path, seed: int) -> Path:
    """A LoRA adapter with random (non-zero) weights: its answers differ from the base's."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    config = LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    peft_model.save_pretrained(out)
    return out


def adapter_refs(store: ArtifactStore, base_dir: Path, tmp: Path, count: int) -> list[ModelRef]:
    return [
        ref_for(store, base_dir, random_adapter(base_dir, tmp / f"adapter-{n}", seed=n)) for n in range(count)
    ]


def base_ref(base_dir: Path) -> ModelRef:
    """The bare base as a servable version (what a route's first rollout compares against)."""
    return ModelRef(
        base=BaseModelRef(
            name="tiny-llama",
            uri="tiny-llama",
            sha256=weights_sha256(base_dir),
            architecture="LlamaForCausalLM",
        ),
        tokenizer=TokenizerRef(tokenizer_sha256=tokenizer_sha256(base_dir)),
    )


def route(
    name: str, tenant: str, stable: ModelRef, candidate: ModelRef | None = None, **fields: object
) -> RouteEntry:
    return RouteEntry(route=name, tenant=tenant, stable=stable, candidate=candidate, **fields)  # type: ignore[arg-type]
