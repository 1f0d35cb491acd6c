"""Checks a recipe against its data and base model before any training work starts.

Every refusal names the field, what is wrong and what to do, and carries a machine-readable
reason for `training.failed`. Module names are read from the model built on the meta device, so
the check costs no weight loading.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schemas.recipe import TrainingRecipe
from services.core.ml.models import MODEL_BUILD_LOCK
from services.training.job import METHOD_FORMATS


@dataclass
class PreflightError(Exception):
    reason: str
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass
class ModuleMap:
    """The modules of a model, read from the model built on the meta device (no weights loaded)."""

    architecture: str
    names: list[str]
    linear_suffixes: list[str]

    @classmethod
    def of(cls, model_dir: str | Path) -> ModuleMap:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        config = AutoConfig.from_pretrained(str(model_dir), local_files_only=True, trust_remote_code=False)
        with MODEL_BUILD_LOCK, torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=False)
        modules = [(name, module) for name, module in model.named_modules() if name]
        return cls(
            architecture=(config.architectures or [type(model).__name__])[0],
            names=[name for name, _ in modules],
            linear_suffixes=sorted(
                {name.rsplit(".", 1)[-1] for name, m in modules if isinstance(m, torch.nn.Linear)}
            ),
        )


def check_format(recipe: TrainingRecipe, data_format: str | None) -> None:
    allowed = METHOD_FORMATS[recipe.method]
    if data_format not in allowed:
        raise PreflightError(
            "recipe-invalid",
            f"training.method {recipe.method!r} trains on {' or '.join(allowed)} rows but the dataset holds "
            f"{data_format} rows; pick a method for this data (sft rows: sft-lora, sft-qlora, sft-full, "
            "distill; preference rows: dpo, ipo, kto; feedback rows: kto)",
        )


def check_target_modules(recipe: TrainingRecipe, model_dir: str | Path) -> str:
    modules = ModuleMap.of(model_dir)
    if recipe.method == "sft-full":
        return modules.architecture
    wanted = [t for t in recipe.lora.target_modules if t != "all-linear"]
    missing = [t for t in wanted if not any(n == t or n.endswith("." + t) for n in modules.names)]
    if missing:
        raise PreflightError(
            "recipe-invalid",
            f"training.lora.target_modules {missing} match no module of {modules.architecture}; its linear "
            f"modules are {', '.join(modules.linear_suffixes)} (or use 'all-linear')",
        )
    return modules.architecture


def check_device(recipe: TrainingRecipe, device: str) -> None:
    if recipe.method != "sft-qlora":
        return
    import torch

    if device == "cpu" or not torch.cuda.is_available():
        raise PreflightError(
            "cuda-missing",
            "training.method 'sft-qlora' loads the base in 4-bit with bitsandbytes, which needs a CUDA GPU, "
            "and this training worker has none; use 'sft-lora' here, or run the training service on a GPU "
            "node (Helm: training.resources with nvidia.com/gpu)",
        )
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise PreflightError(
            "dependency-missing",
            "training.method 'sft-qlora' needs bitsandbytes on the training worker: pip install bitsandbytes",
        ) from None


def check_sequence_length(recipe: TrainingRecipe, model_dir: str | Path) -> None:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(model_dir), local_files_only=True, trust_remote_code=False)
    limit: Any = getattr(config, "max_position_embeddings", None)
    if isinstance(limit, int) and recipe.max_seq_len > limit:
        raise PreflightError(
            "recipe-invalid",
            f"training.max_seq_len {recipe.max_seq_len} exceeds the base model's context of {limit} tokens; "
            f"set max_seq_len to {limit} or less",
        )


def check_teacher(student_tokenizer_sha: str, teacher_tokenizer_sha: str, teacher: str) -> None:
    if student_tokenizer_sha != teacher_tokenizer_sha:
        raise PreflightError(
            "recipe-invalid",
            f"training.distill.teacher {teacher!r} has a different tokenizer from the base model; soft "
            "labels are compared token by token, so pick a teacher of the same family (same tokenizer)",
        )
