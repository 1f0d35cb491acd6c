"""The base model loaded for training (dtype, CUDA, 4-bit for QLoRA), its LoRA config, and the
TrainingArguments every method shares."""

from __future__ import annotations

import math
from typing import Any, cast

import torch

from schemas.recipe import TrainingRecipe
from services.core.ml.models import load_causal_lm
from services.training.job import TrainingJob


def use_cuda(job: TrainingJob) -> bool:
    return job.device == "cuda" or (job.device == "auto" and torch.cuda.is_available())


def _dtype(cuda: bool, recipe: TrainingRecipe) -> torch.dtype:
    """The weights' dtype; on CPU they stay fp32 (precision bf16 there means autocast)."""
    if recipe.precision == "fp32" or not cuda:
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32


def load_model(path: str, job: TrainingJob, *, quantize: bool = False) -> Any:
    cuda = use_cuda(job)
    kwargs: dict[str, Any] = {
        "dtype": _dtype(cuda, job.recipe),
        "local_files_only": True,
        "trust_remote_code": False,
    }
    if quantize:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=_dtype(cuda, job.recipe),
        )
        kwargs["device_map"] = {"": 0}
    model = load_causal_lm(path, **kwargs)
    if quantize:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model)
    return model


def lora_config(recipe: TrainingRecipe) -> Any:
    from peft import LoraConfig

    targets = list(recipe.lora.target_modules)
    return LoraConfig(
        r=recipe.lora.rank,
        lora_alpha=cast(int, recipe.lora.alpha),  # typed int in PEFT; a float works too
        lora_dropout=recipe.lora.dropout,
        # PEFT knows 'all-linear' only as the whole value, not as one name in a list
        target_modules="all-linear" if "all-linear" in targets else targets,
        task_type="CAUSAL_LM",
    )


def common_arguments(job: TrainingJob, has_eval: bool) -> dict[str, Any]:
    recipe = job.recipe
    cuda = use_cuda(job)
    save_steps = recipe.checkpoint_steps
    early = has_eval and recipe.early_stopping_patience is not None
    if early:  # the best checkpoint is restored at the end, so saves must line up with evaluations
        save_steps = recipe.eval_steps * math.ceil(recipe.checkpoint_steps / recipe.eval_steps)
    if has_eval and recipe.checkpoint_selection is not None:
        save_steps = recipe.eval_steps  # every evaluated step is a checkpoint the choice can screen
    return {
        "output_dir": job.output_dir,
        "learning_rate": recipe.learning_rate,
        "lr_scheduler_type": recipe.lr_scheduler,
        "warmup_steps": recipe.warmup_ratio,
        "num_train_epochs": recipe.epochs,
        "max_steps": recipe.max_steps,
        "per_device_train_batch_size": recipe.batch_size,
        "per_device_eval_batch_size": recipe.batch_size,
        "gradient_accumulation_steps": recipe.gradient_accumulation,
        "seed": recipe.seed,
        "data_seed": recipe.seed,
        "logging_steps": 1,
        "logging_first_step": True,
        "save_strategy": "steps",
        "save_steps": save_steps,
        "save_total_limit": 2,
        "eval_strategy": "steps" if has_eval else "no",
        "eval_steps": recipe.eval_steps if has_eval else None,
        "load_best_model_at_end": early,
        "metric_for_best_model": "eval_loss" if early else None,
        "greater_is_better": False if early else None,
        "report_to": "none",
        "disable_tqdm": True,
        "use_cpu": not cuda,
        # bf16 weights on CUDA; on CPU, precision bf16 is autocast over fp32 weights
        "bf16": _dtype(cuda, recipe) == torch.bfloat16 or (not cuda and recipe.precision == "bf16"),
        "dataloader_num_workers": 0,
        "include_num_input_tokens_seen": "non_padding",
        "gradient_checkpointing": recipe.gradient_checkpointing,
    }
