"""bitsandbytes quantization for real on a CUDA GPU (`make test-gpu`): the merging service records
an 8-bit or 4-bit config (merging an adapter in first), and the evaluation engine loads that version
quantized and answers like the full-precision model."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.merge import MergeRequested
from schemas.refs import ModelRef
from services.core.artifacts import ArtifactStore
from services.evaluation.engine import Engine
from services.merging.config import MergingSettings
from services.merging.merges import QUANTIZATIONS, Merger
from tests.support.merging import ref_for
from tests.support.training import FACTS, chat, recipe, train_on

pytestmark = pytest.mark.gpu

PROMPTS = [[{"role": "user", "content": q}] for q, _ in FACTS]


def _cuda() -> None:
    import torch

    assert torch.cuda.is_available(), "the gpu tests need CUDA: run them on the GPU machine (make test-gpu)"


@pytest.mark.parametrize("method", ["quantize-bnb-8bit", "quantize-bnb-4bit"])
def test_a_bnb_quantized_version_answers_like_full_precision(knowing_base: Path, method: str) -> None:
    _cuda()
    engine = Engine(knowing_base, device="cuda")
    engine.add_base_arm("full")
    engine.add_weights_arm("quantized", knowing_base, QUANTIZATIONS[method])
    full = [g.text for g in engine.generate("full", PROMPTS, max_new_tokens=8)]
    quantized = [g.text for g in engine.generate("quantized", PROMPTS, max_new_tokens=8)]
    agreement = sum(a == b for a, b in zip(full, quantized, strict=True)) / len(FACTS)
    assert agreement >= 0.75, (full, quantized)


def test_quantizing_an_adapter_version_merges_it_and_records_the_config(
    knowing_base: Path, tiny_model: Path, tmp_path: Path
) -> None:
    _cuda()
    store = ArtifactStore(tmp_path / "artifacts")
    adapter = train_on(
        tiny_model, [chat(q, a) for q, a in FACTS] * 2, tmp_path / "train", recipe("sft-lora", max_steps=4)
    )
    ref = ref_for(store, tiny_model, adapter)
    settings = MergingSettings(work_dir=str(tmp_path / "merging"))
    settings.core.artifact_root = str(tmp_path / "artifacts")
    settings.core.model_cache = str(tiny_model.parent)
    merger = Merger(settings, store)
    event = MergeRequested(
        request_id="q4", tenant="acme", inputs=(ref.version_id(),), method="quantize-bnb-4bit"
    )
    merged, lineage = merger.merge(event, [(ref.version_id(), ref, None)], tmp_path / "work")
    assert merged.adapter is None and merged.weights is not None
    assert merged.quantization == QUANTIZATIONS["quantize-bnb-4bit"]
    assert lineage.merge_difference is not None and lineage.merge_difference.greedy_agreement == 1.0
    engine = Engine(tiny_model, device="cuda")
    weights = store.fetch_tree(ModelRef.model_validate(merged).weights, tmp_path / "q4")  # type: ignore[arg-type]
    engine.add_weights_arm("q4", weights, merged.quantization)
    assert len(engine.generate("q4", PROMPTS[:2], max_new_tokens=4)) == 2
