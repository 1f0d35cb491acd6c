"""The recipe is checked against its data and base model before any training work."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.training import preflight
from services.training.preflight import PreflightError
from tests.support.training import recipe


def test_unknown_target_modules_are_named_with_the_models_real_modules(tiny_model: Path) -> None:
    bad = recipe("sft-lora", lora={"target_modules": ["q_proj", "qkv_proj", "c_attn"]})
    with pytest.raises(PreflightError) as caught:
        preflight.check_target_modules(bad, tiny_model)
    assert caught.value.reason == "recipe-invalid"
    message = str(caught.value)
    assert "['qkv_proj', 'c_attn']" in message and "LlamaForCausalLM" in message
    for real in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"):
        assert real in message


def test_known_and_all_linear_target_modules_pass(tiny_model: Path) -> None:
    assert preflight.check_target_modules(recipe("sft-lora"), tiny_model) == "LlamaForCausalLM"
    preflight.check_target_modules(recipe("sft-lora", lora={"target_modules": ["all-linear"]}), tiny_model)
    preflight.check_target_modules(recipe("sft-full", lora={"target_modules": ["nonsense"]}), tiny_model)


def test_qlora_without_cuda_fails_at_once_with_the_way_out(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(PreflightError) as caught:
        preflight.check_device(recipe("sft-qlora"), "auto")
    assert caught.value.reason == "cuda-missing"
    assert "sft-lora" in str(caught.value) and "CUDA" in str(caught.value)
    preflight.check_device(recipe("sft-lora"), "cpu")  # other methods need no GPU


@pytest.mark.parametrize(
    ("method", "data_format"),
    [
        ("dpo", "sft"),
        ("ipo", "feedback"),
        ("sft-lora", "preference"),
        ("distill", "feedback"),
        ("kto", "sft"),
    ],
)
def test_method_and_data_format_must_match(method: str, data_format: str) -> None:
    with pytest.raises(PreflightError, match=f"'{method}' trains on"):
        preflight.check_format(recipe(method), data_format)


def test_kto_accepts_paired_preferences() -> None:
    preflight.check_format(recipe("kto"), "preference")
    preflight.check_format(recipe("kto"), "feedback")


def test_sequence_length_beyond_the_models_context_is_refused(tiny_model: Path) -> None:
    with pytest.raises(PreflightError, match="exceeds the base model's context of 2048"):
        preflight.check_sequence_length(recipe("sft-lora", max_seq_len=4096), tiny_model)


def test_a_teacher_with_another_tokenizer_is_refused() -> None:
    with pytest.raises(PreflightError, match="different tokenizer"):
        preflight.check_teacher("a" * 64, "b" * 64, "other-model")


def test_distill_recipe_needs_a_teacher() -> None:
    from pydantic import ValidationError

    from schemas.recipe import TrainingRecipe

    with pytest.raises(ValidationError, match="needs a `distill` block"):
        TrainingRecipe(method="distill", base_model="tiny-llama")
