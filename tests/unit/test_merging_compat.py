"""The merge compatibility gate, on ModelRefs alone: no weight is read."""

from __future__ import annotations

from schemas.refs import AdapterRef, ArtifactRef, BaseModelRef, ModelRef, QuantizationConfig, TokenizerRef
from services.merging.compat import check, describe


def ref(
    *,
    base: str = "a" * 64,
    rank: int = 8,
    targets: tuple[str, ...] = ("q_proj", "v_proj"),
    tokenizer: str = "d" * 64,
    adapter: bool = True,
    quantized: bool = False,
) -> ModelRef:
    artifact = ArtifactRef(key="blobs/x", sha256="b" * 64, size_bytes=1)
    return ModelRef(
        base=BaseModelRef(name="m", uri="m", sha256=base, architecture="LlamaForCausalLM"),
        adapter=AdapterRef(artifact=artifact, method="sft-lora", rank=rank, alpha=16, target_modules=targets)
        if adapter
        else None,
        weights=None if adapter else artifact,
        tokenizer=TokenizerRef(tokenizer_sha256=tokenizer),
        quantization=QuantizationConfig(method="int8-dynamic") if quantized else QuantizationConfig(),
    )


def test_compatible_adapters_pass() -> None:
    assert check([("v1", ref()), ("v2", ref())], "ties", (0.5, 0.5)) == []
    assert check([("v1", ref(rank=8)), ("v2", ref(rank=16))], "svd") == [], "svd and cat take any ranks"


def test_every_mismatch_is_named_with_the_version_and_both_values() -> None:
    problems = check(
        [("v1", ref()), ("v2", ref(base="c" * 64, rank=4, tokenizer="f" * 64, targets=("q_proj",)))], "linear"
    )
    found = {p.attribute: p for p in problems}
    assert set(found) == {"base.sha256", "tokenizer.sha256", "adapter.rank", "adapter.target_modules"}
    assert found["base.sha256"].found == "c" * 64 and found["base.sha256"].version_id == "v2"
    assert "(v1)" in found["adapter.rank"].expected
    assert describe(problems, "linear").startswith(
        "linear refused before touching any weight: v2: base.sha256"
    )


def test_methods_get_the_inputs_they_need() -> None:
    assert {p.attribute for p in check([("v1", ref()), ("v2", ref())], "merge-into-base")} == {"inputs"}
    assert {p.attribute for p in check([("v1", ref())], "ties")} == {"inputs"}
    soup = check([("v1", ref()), ("v2", ref(adapter=False))], "uniform-soup")
    assert [(p.attribute, p.version_id) for p in soup] == [("weights", "v1")]
    assert {p.attribute for p in check([("v1", ref(quantized=True))], "merge-into-base")} == {"quantization"}
