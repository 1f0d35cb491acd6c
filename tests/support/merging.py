"""Merging test helpers: ModelRefs for local models, announcing them, and reading results back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from schemas.candidate import CandidateReady
from schemas.refs import AdapterRef, BaseModelRef, Lineage, ModelRef, TokenizerRef
from services.core.artifacts import ArtifactStore
from services.core.messaging.rpc import RpcError, query
from services.core.ml.models import tokenizer_sha256, weights_sha256
from services.core.ml.suite_catalogue import register_suite
from services.core.runtime import ServiceRuntime
from tests.support.stream import first_event


def ref_for(store: ArtifactStore, base: Path, model: Path, **base_fields: str) -> ModelRef:
    """The ModelRef of an adapter folder (read from its adapter_config.json) or of full weights."""
    config_file = model / "adapter_config.json"
    adapter, weights = None, None
    if config_file.exists():
        config = json.loads(config_file.read_text())
        adapter = AdapterRef(
            artifact=store.put_tree(model),
            method="sft-lora",
            rank=int(config["r"]),
            alpha=float(config["lora_alpha"]),
            target_modules=tuple(sorted(config["target_modules"])),
        )
    else:
        weights = store.put_tree(model)
    return ModelRef(
        base=BaseModelRef(
            name="tiny-llama", uri="tiny-llama", sha256=weights_sha256(base), architecture="LlamaForCausalLM"
        ).model_copy(update=base_fields),
        adapter=adapter,
        weights=weights,
        method="sft-lora" if adapter else "sft-full",
        tokenizer=TokenizerRef(tokenizer_sha256=tokenizer_sha256(base)),
    )


def register_qa_suite(store: ArtifactStore, name: str, pairs: list[tuple[str, str]]) -> None:
    """Question/answer pairs as a capability suite scored by exact match."""
    data = "".join(json.dumps({"id": n, "prompt": q, "answer": a}) + "\n" for n, (q, a) in enumerate(pairs))
    register_suite(store, name, data.encode(), "exact", kind="capability")


async def announce(operator: ServiceRuntime, ref: ModelRef, route: str) -> str:
    await operator.bus.publish(
        CandidateReady(candidate=ref, lineage=Lineage(), produced_by="training", tenant="acme", route=route)
    )
    return ref.version_id()


async def merged_candidate(operator: ServiceRuntime, request_id: str, timeout: float = 180) -> dict[str, Any]:
    event = await first_event(
        operator, "candidate.ready", timeout=timeout, produced_by="merging", route=request_id
    )
    return event.payload


async def registered(operator: ServiceRuntime, version: str) -> None:
    from tests.conftest import wait_until

    async def known() -> bool:
        try:
            await query(operator.broker, "registry", "models.get", {"version_id": version})
            return True
        except RpcError:
            return False

    await wait_until(known, timeout=20)


async def evaluated(operator: ServiceRuntime, version: str, timeout: float = 120) -> dict[str, Any]:
    """The registry's evaluations of a version, once it has one."""
    from tests.conftest import wait_until

    async def recorded() -> dict[str, Any] | None:
        try:
            detail = await query(operator.broker, "registry", "evals.get", {"version_id": version})
        except RpcError:  # not registered yet
            return None
        return detail if detail["evaluations"] else None

    return await wait_until(recorded, timeout=timeout, interval=0.3)


def suite_score(detail: dict[str, Any], suite: str, arm: str = "candidate") -> float:
    """An arm's score on one suite in the latest evaluation of an evals.get answer."""
    [result] = [r for r in detail["evaluations"][-1]["suites"] if r["suite"]["name"] == suite]
    return float(next(a["metrics"]["score"] for a in result["scores"] if a["arm"] == arm))


def tensors(folder: Path) -> dict[str, Any]:
    """Every tensor of a (possibly sharded) safetensors model folder."""
    from safetensors.torch import load_file

    found: dict[str, Any] = {}
    for shard in folder.glob("*.safetensors"):
        found.update(load_file(str(shard)))
    return found
