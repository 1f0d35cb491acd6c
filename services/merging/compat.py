"""The compatibility gate: runs on the inputs' ModelRefs before any weight is read.

Every input must share the base weights (sha256), the architecture and the tokenizer. Adapter
methods need adapters (and, for the element-wise ones, equal ranks and the same target
modules); soups need full weights; merge-into-base and quantization take exactly one input.
"""

from __future__ import annotations

from collections.abc import Sequence

from schemas.merge import Mismatch
from schemas.refs import ModelRef

ADAPTER_METHODS = ("linear", "cat", "svd", "ties", "dare_ties", "dare_linear", "magnitude_prune")
SAME_RANK = ("linear", "ties", "dare_ties", "dare_linear", "magnitude_prune")
SOUPS = ("uniform-soup", "greedy-soup")
SINGLE = ("merge-into-base", "quantize-int8-dynamic", "quantize-bnb-8bit", "quantize-bnb-4bit")


def _attribute(ref: ModelRef, attribute: str) -> str:
    if attribute == "base.sha256":
        return ref.base.sha256
    if attribute == "base.architecture":
        return ref.base.architecture
    if attribute == "tokenizer.sha256":
        return ref.tokenizer.tokenizer_sha256
    if attribute == "adapter.rank":
        return str(ref.adapter.rank) if ref.adapter else "none"
    if attribute == "adapter.target_modules":
        return ",".join(sorted(ref.adapter.target_modules)) if ref.adapter else "none"
    raise KeyError(attribute)


def _shared(inputs: Sequence[tuple[str, ModelRef]], method: str) -> list[Mismatch]:
    """What every input must share with the first: base, architecture, tokenizer (and rank, targets)."""
    first_id, first = inputs[0]
    compared = ["base.sha256", "base.architecture", "tokenizer.sha256"]
    if method in SAME_RANK:
        compared.append("adapter.rank")
    if method in ADAPTER_METHODS:
        compared.append("adapter.target_modules")
    return [
        Mismatch(attribute=attribute, expected=f"{expected} ({first_id})", found=found, version_id=version_id)
        for version_id, ref in inputs[1:]
        for attribute in compared
        if (expected := _attribute(first, attribute)) != (found := _attribute(ref, attribute))
    ]


def _kind(version_id: str, ref: ModelRef, method: str) -> list[Mismatch]:
    """What the method needs of each input: an adapter, full weights, no quantization."""
    problems = []
    if method in (*ADAPTER_METHODS, "merge-into-base") and ref.adapter is None:
        problems.append(
            Mismatch(
                attribute="adapter", expected="a LoRA adapter", found="full weights", version_id=version_id
            )
        )
    if method in SOUPS and ref.adapter is not None:
        expected = "full weights (merge adapters into their base first)"
        problems.append(
            Mismatch(attribute="weights", expected=expected, found="an adapter", version_id=version_id)
        )
    if ref.quantization.method != "none":
        found = ref.quantization.method
        problems.append(
            Mismatch(attribute="quantization", expected="none", found=found, version_id=version_id)
        )
    return problems


def check(
    inputs: Sequence[tuple[str, ModelRef]], method: str, weights: Sequence[float] = ()
) -> list[Mismatch]:
    """Every mismatch between the first input and the others, and with what the method needs."""
    first_id = inputs[0][0]
    problems = _shared(inputs, method)
    for version_id, ref in inputs:
        problems += _kind(version_id, ref, method)
    count = len(inputs)
    if method in SINGLE and count != 1:
        problems.append(
            Mismatch(attribute="inputs", expected="exactly 1", found=str(count), version_id=first_id)
        )
    if method in ADAPTER_METHODS + SOUPS and count < 2:
        problems.append(
            Mismatch(attribute="inputs", expected="2 or more", found=str(count), version_id=first_id)
        )
    if weights and any(w < 0 for w in weights):
        found = str(list(weights))
        problems.append(Mismatch(attribute="weights", expected="≥ 0", found=found, version_id=first_id))
    return problems


def describe(problems: Sequence[Mismatch], method: str) -> str:
    parts = [f"{p.version_id}: {p.attribute} is {p.found}, expected {p.expected}" for p in problems]
    return f"{method} refused before touching any weight: " + "; ".join(parts)
