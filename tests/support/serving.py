"""Serving test helpers: random LoRA adapters on the tiny model, their ModelRefs, routes in NATS KV."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from schemas.refs import BaseModelRef, ModelRef, TokenizerRef
from schemas.serving import RouteEntry
from services.core.artifacts import ArtifactStore
from services.core.messaging.routes import RouteTable
from services.core.ml.models import tokenizer_sha256, weights_sha256
from services.core.settings import CoreSettings
from services.serving.app import Serving, build_serving
from services.serving.config import ServingSettings
from tests.support.merging import ref_for


def random_adapter(base_dir: Path, out: Path, seed: int) -> Path:
    """A LoRA adapter with random (non-zero) weights: its answers differ from the base's."""
    import torch
    from peft import LoraConfig, get_peft_model

    from services.core.ml.models import load_causal_lm

    torch.manual_seed(seed)
    model = load_causal_lm(base_dir)
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


async def start_serving(
    running: Any, core: CoreSettings, work: Path, **overrides: Any
) -> tuple[Serving, str]:
    """A serving replica on a free port; returns it and its base URL once it answers /health."""
    from tests.conftest import wait_until

    values: dict[str, Any] = {
        "port": 0,
        "window_s": 0.5,
        "batch_wait_ms": 5.0,
        "work_dir": str(work),
        **overrides,
    }
    serving = build_serving(ServingSettings(core=core, **values))
    await running(serving.runtime.app)
    await wait_until(lambda: serving.port, timeout=30)
    return serving, f"http://127.0.0.1:{serving.port}"


async def put_route(core: CoreSettings, entry: RouteEntry) -> int:
    """Write a route as rollout would (compare-and-set on the current revision)."""
    import nats

    nc = await nats.connect(core.nats.servers)
    try:
        table = await RouteTable.open(nc.jetstream())
        _, revision = await table.get(entry.route)
        return await table.put(entry, revision)
    finally:
        await nc.close()
