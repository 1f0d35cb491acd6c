"""The adaptation card's Markdown, from card data alone."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from schemas.queries import EvalDetail, ModelVersionSummary
from services.registry.cards import assemble, markdown

BASE = {"name": "tiny-llama", "architecture": "LlamaForCausalLM", "sha256": "a" * 64, "uri": "tiny-llama"}
TOKENIZER = {"tokenizer_sha256": "b" * 64, "chat_template_sha256": None}


def summary(route: str | None = "support") -> ModelVersionSummary:
    return ModelVersionSummary(
        version_id="mv-0123456789abcdef",
        tenant="acme",
        route=route,
        status="candidate",
        produced_by="merging",
        base_name="tiny-llama",
        base_sha256="a" * 64,
        adapter_sha256=None,
        method="sft-lora",
        quantization="none",
        dataset_id=None,
        run_id=None,
        created_at=datetime(2026, 11, 22, tzinfo=UTC),
    )


def merged_card(merge: dict[str, Any], lineage: dict[str, Any]) -> str:
    """The Markdown card of an unevaluated full-weights version with this merge state and lineage."""
    card = assemble(
        version=summary(),
        model_ref={
            "base": BASE,
            "tokenizer": TOKENIZER,
            "weights": {"sha256": "c" * 64},
            "merge": merge,
            "quantization": {"method": "none"},
        },
        lineage=lineage,
        dataset=None,
        run=None,
        evals=EvalDetail(version_id="mv-0123456789abcdef", evaluations=(), decisions=()),
    )
    return markdown(card)


def test_a_merged_version_shows_its_parents_and_the_merged_vs_unmerged_difference() -> None:
    text = merged_card(
        {"kind": "merged-into-base", "method": "merge_and_unload", "weights": [], "density": None},
        {
            "parents": ["mv-aaaa"],
            "merge_difference": {
                "probes": 8,
                "max_abs_logit_diff": 2.4e-6,
                "greedy_agreement": 1.0,
                "tolerance": 1e-3,
            },
        },
    )
    assert "- Parents: mv-aaaa" in text
    assert "largest logit difference 2.40e-06 (tolerance 0.001), greedy agreement 100.0%" in text
    assert "Not evaluated yet" in text and "No gate decision yet" in text
    assert "`tuneline rollback support`" in text


def test_an_unrouted_unmerged_version_says_so() -> None:
    card = assemble(
        version=summary(route=None),
        model_ref={"base": BASE, "tokenizer": TOKENIZER, "merge": {"kind": "unmerged"}},
        lineage={},
        dataset=None,
        run=None,
        evals=EvalDetail(version_id="mv-0123456789abcdef", evaluations=(), decisions=()),
    )
    text = markdown(card)
    assert "unmerged (no merged-vs-unmerged difference applies)" in text
    assert "No route: nothing to roll back." in text and card["rollback"] is None


def test_a_greedy_soup_lists_every_member_tried_and_the_decision() -> None:
    text = merged_card(
        {"kind": "soup", "method": "greedy-soup", "weights": [0.5, 0.5, 0.0], "density": None},
        {
            "parents": ["mv-best", "mv-next"],
            "ranked_by": "facts",
            "soup_steps": [
                {"version_id": "mv-best", "member_score": 83.33, "soup_score": 83.33, "added": True},
                {"version_id": "mv-next", "member_score": 58.3, "soup_score": 100.0, "added": True},
                {"version_id": "mv-wild", "member_score": 0.0, "soup_score": 16.67, "added": False},
            ],
        },
    )
    assert "- Merge state: soup (greedy-soup), weights 0.5, 0.5, 0" in text
    assert "- Greedy soup on facts: mv-next (own score 58.3) → soup 100.0, kept" in text
    assert "- Greedy soup on facts: mv-wild (own score 0.0) → soup 16.7, left out" in text
