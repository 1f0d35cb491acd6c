"""The evaluator on the tiny model, without a bus: arms, cache, quantized candidates, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from schemas.gate_policy import GatePolicy
from schemas.refs import (
    AdapterRef,
    BaseModelRef,
    DatasetRef,
    MergeState,
    ModelRef,
    QuantizationConfig,
    TokenizerRef,
)
from services.core.artifacts import ArtifactStore
from services.core.ml.models import tokenizer_sha256, weights_sha256
from services.evaluation.evaluate import Evaluator
from services.evaluation.options import EvalOptions, EvaluationError
from tests.support.training import canary_rows, rows_for

pytestmark = pytest.mark.integration
SAMPLED = GatePolicy(suite_items={"capability": 300, "jailbreak": 60})  # where the full suites add nothing


def make_adapter(base: Path, out: Path, targets: list[str], seed: int = 0) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model

    from services.core.ml.models import load_causal_lm

    torch.manual_seed(seed)
    model = get_peft_model(
        load_causal_lm(base),
        LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights=False),
    )
    model.save_pretrained(out)
    return out


def candidate(store: ArtifactStore, base: Path, adapter: Path, **fields: object) -> ModelRef:
    rows = rows_for("sft", 6)
    split = store.put_bytes("".join(json.dumps(r) + "\n" for r in rows).encode())
    _, planted = canary_rows(2)
    manifest = store.put_json(
        {"format": "sft", "splits": {"test": {"rows": 6, **split.model_dump()}}, "canaries": planted}
    )
    config = json.loads((adapter / "adapter_config.json").read_text())
    return ModelRef(
        base=BaseModelRef(
            name="tiny-llama", uri="tiny-llama", sha256=weights_sha256(base), architecture="LlamaForCausalLM"
        ),
        adapter=AdapterRef(
            artifact=store.put_tree(adapter),
            method="sft-lora",
            rank=4,
            alpha=8,
            target_modules=tuple(sorted(config["target_modules"])),
        ),
        tokenizer=TokenizerRef(tokenizer_sha256=tokenizer_sha256(base)),
        dataset=DatasetRef(dataset_id="0" * 64, manifest=manifest),
        **fields,  # type: ignore[arg-type]
    )


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(str(tmp_path / "artifacts"))


def evaluator(
    store: ArtifactStore, tmp_path: Path, model_cache: Path, name: str = "e", **options: object
) -> Evaluator:
    values: dict[str, object] = {"latency_items": 2, "latency_tokens": 4, "bootstrap_samples": 200, **options}
    return Evaluator(store, EvalOptions(**values), model_cache=str(model_cache), work_dir=tmp_path / name)  # type: ignore[arg-type]


def test_every_arm_runs_and_a_second_candidate_reuses_the_baselines(
    store: ArtifactStore, tmp_path: Path, tiny_model: Path, model_cache: Path
) -> None:
    first = candidate(store, tiny_model, make_adapter(tiny_model, tmp_path / "a1", ["q_proj", "v_proj"], 1))
    second = candidate(store, tiny_model, make_adapter(tiny_model, tmp_path / "a2", ["q_proj", "v_proj"], 2))
    one = evaluator(store, tmp_path, model_cache, "one")
    outcome = one.run(first, GatePolicy())
    kinds = {r.suite.name: r for r in outcome.suites}
    assert set(kinds) == {"target", "memorization", "capability", "safety", "jailbreak", "latency"}, (
        "quant-tail only when quantized"
    )
    assert {s.arm for s in kinds["target"].scores} == {"candidate", "baseline", "few-shot"}
    assert kinds["capability"].items == 2700 and kinds["safety"].items == 204
    assert kinds["jailbreak"].kind == "safety" and kinds["jailbreak"].items == 340
    assert kinds["memorization"].items == 2
    assert {g.gate for g in outcome.gates} >= {"safety-refusal:jailbreak", "over-refusal:jailbreak"}
    assert one.cache_hits == []
    two = evaluator(store, tmp_path, model_cache, "two")
    two.run(second, GatePolicy())
    assert set(two.cache_hits) >= {
        "capability/baseline",
        "safety/baseline",
        "target/baseline",
        "target/few-shot",
    }
    assert two.generated_items < one.generated_items * 0.55
    assert json.dumps(outcome.report)  # the report is plain JSON


def test_a_quantized_candidate_is_scored_on_the_quantization_tail_by_category(
    store: ArtifactStore, tmp_path: Path, tiny_model: Path, model_cache: Path
) -> None:
    parent = candidate(store, tiny_model, make_adapter(tiny_model, tmp_path / "a", ["q_proj", "v_proj"]))
    ref = parent.model_copy(update={"quantization": QuantizationConfig(method="int8-dynamic", bits=8)})
    outcome = evaluator(
        store, tmp_path, model_cache, suites=("quant-tail", "capability"), latency_items=0
    ).run(ref, GatePolicy(suite_items={"capability": 200}), parents=[parent])
    tail = next(r for r in outcome.suites if r.kind == "quant-tail")
    metrics = next(s.metrics for s in tail.scores if s.arm == "candidate")
    assert {"accuracy:exact-numbers", "accuracy:rare-tokens", "accuracy:long-inputs"} <= set(metrics)
    # judged against its unquantized parent, per category, on every suite
    assert {s.arm: s.version_id for s in tail.scores}["parent"] == parent.version_id()
    gates = {g.gate: g for g in outcome.gates}
    categories = ("exact-numbers", "rare-tokens", "long-inputs")
    assert {f"quant-tail:quant-tail:{c}" for c in categories} <= set(gates)
    assert {"capability:capability:arithmetic", "capability:capability:conversions"} <= set(gates)
    assert all(g.reference == f"parent {parent.version_id()}" for g in gates.values() if g.test)
    assert "capability:capability" not in gates and "target-gain" not in gates
    assert gates["parent-task:target"].test is not None  # the target split against the parent too


def test_an_adapter_combination_is_scored_on_each_parents_task_against_that_parent(
    store: ArtifactStore, tmp_path: Path, tiny_model: Path, model_cache: Path
) -> None:
    one = candidate(store, tiny_model, make_adapter(tiny_model, tmp_path / "a1", ["q_proj", "v_proj"], 1))
    two = candidate(store, tiny_model, make_adapter(tiny_model, tmp_path / "a2", ["q_proj", "v_proj"], 2))
    combined = one.model_copy(
        update={"dataset": None, "merge": MergeState(kind="adapter-combination", method="linear")}
    )
    outcome = evaluator(store, tmp_path, model_cache, suites=("safety",), latency_items=0).run(
        combined, GatePolicy(), parents=[one, two]
    )
    suites = {r.suite.name: r for r in outcome.suites}
    assert set(suites) == {f"target:{one.version_id()}", f"target:{two.version_id()}", "safety"}
    for parent in (one, two):
        gate = next(g for g in outcome.gates if g.gate == f"parent-task:target:{parent.version_id()}")
        assert gate.test is not None and gate.test.hypothesis == "non-inferiority"
        assert gate.reference == f"parent {parent.version_id()}" and gate.threshold == 2.0
    # the combination's own safety is still judged against the base
    assert next(g for g in outcome.gates if g.gate == "safety-refusal:safety").reference == "base"


def test_a_candidate_on_another_base_or_with_foreign_modules_is_refused_before_loading(
    store: ArtifactStore, tmp_path: Path, tiny_model: Path, model_cache: Path
) -> None:
    ref = candidate(store, tiny_model, make_adapter(tiny_model, tmp_path / "a", ["q_proj"]))
    wrong_base = ref.model_copy(update={"base": ref.base.model_copy(update={"sha256": "f" * 64})})
    with pytest.raises(EvaluationError, match="exact base") as error:
        evaluator(store, tmp_path, model_cache).run(wrong_base, GatePolicy())
    assert error.value.reason == "base-mismatch"

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "adapter_config.json").write_text(json.dumps({"target_modules": ["c_attn", "q_proj"]}))
    (foreign / "adapter_model.safetensors").write_bytes(b"not loaded")
    bad = ref.model_copy(
        update={"adapter": ref.adapter.model_copy(update={"artifact": store.put_tree(foreign)})}
    )  # type: ignore[union-attr]
    with pytest.raises(EvaluationError, match="c_attn") as error:
        evaluator(store, tmp_path, model_cache).run(bad, GatePolicy())
    assert error.value.reason == "candidate-incompatible"

    (foreign / "adapter_config.json").write_text(json.dumps({"target_modules": ["q_proj"]}))
    (foreign / "adapter_model.bin").write_bytes(b"pickle")
    pickled = ref.model_copy(
        update={"adapter": ref.adapter.model_copy(update={"artifact": store.put_tree(foreign)})}
    )  # type: ignore[union-attr]
    with pytest.raises(EvaluationError, match="safetensors only"):
        evaluator(store, tmp_path, model_cache).run(pickled, GatePolicy())


def test_an_lm_eval_task_scores_candidate_and_base_per_document(
    store: ArtifactStore, tmp_path: Path, tiny_model: Path, model_cache: Path
) -> None:
    from services.core.messaging.uploads import pack_directory
    from services.core.ml.suite_catalogue import register_suite

    task_dir = Path(__file__).parents[2] / "examples" / "lm-eval-task"
    register_suite(store, "arith", pack_directory(task_dir), "lm-eval:tl_arith", kind="capability")
    ref = candidate(store, tiny_model, make_adapter(tiny_model, tmp_path / "a", ["q_proj", "v_proj"]))
    first = evaluator(store, tmp_path, model_cache, "one", suites=("arith",), latency_items=0)
    outcome = first.run(ref, GatePolicy())
    arith = next(r for r in outcome.suites if r.suite.name == "arith")
    assert arith.kind == "capability" and arith.items == 24
    arms = {s.arm: s.metrics for s in arith.scores}
    assert set(arms) == {"candidate", "baseline"} and 0 <= arms["baseline"]["score"] <= 100
    [comparison] = arith.comparisons
    assert comparison.statistic == "mcnemar-exact" and comparison.p_value is not None
    assert any(g.gate == "capability:arith" for g in outcome.gates)
    second = evaluator(store, tmp_path, model_cache, "two", suites=("arith",), latency_items=0)
    second.run(ref, GatePolicy())
    assert "arith/baseline" in second.cache_hits


def test_dtype_bf16_evaluates_bf16_weights_and_keeps_its_own_cached_baselines(
    store: ArtifactStore, tmp_path: Path, tiny_model: Path, model_cache: Path
) -> None:
    import torch

    from services.core.ml.models import inference_dtype
    from services.evaluation.engine import Engine

    engine = Engine(tiny_model, dtype="bf16")
    engine.add_adapter_arm("candidate", make_adapter(tiny_model, tmp_path / "b", ["q_proj", "v_proj"]), None)
    # PEFT keeps the adapter in fp32 beside a bf16 base (bf16 LoRA layers were slower still on CPU)
    assert {p.dtype for n, p in engine.model.named_parameters() if "lora_" not in n} == {torch.bfloat16}
    assert {p.dtype for p in Engine(tiny_model).base.parameters()} == {torch.float32}
    with pytest.raises(ValueError, match="choose one of auto, bf16, fp32"):
        inference_dtype("fp8", "cpu")
    ref = candidate(store, tiny_model, make_adapter(tiny_model, tmp_path / "a", ["q_proj", "v_proj"]))
    fp32 = evaluator(store, tmp_path, model_cache, "fp32", latency_items=0)
    fp32.run(ref, SAMPLED)
    bf16 = evaluator(store, tmp_path, model_cache, "bf16", latency_items=0, dtype="bf16")
    outcome = bf16.run(ref, SAMPLED)
    assert not bf16.cache_hits  # fp32 answers are not bf16 answers
    assert {r.kind for r in outcome.suites} >= {"target", "capability", "safety"}
    again = evaluator(store, tmp_path, model_cache, "bf16-again", latency_items=0, dtype="bf16")
    again.run(ref, SAMPLED)
    assert "capability/baseline" in again.cache_hits
