"""TRL glue: one recipe → the TRL config, datasets and trainer of its method.

sft-lora/sft-qlora/sft-full → SFTTrainer (sft.py); dpo → DPOTrainer (sigmoid loss); ipo →
DPOTrainer with the ipo loss; kto → KTOTrainer (preference.py); distill → SFTTrainer with a
soft-label distillation loss (temperature and alpha of the recipe) against a frozen teacher
sharing the student's tokenizer (distill.py). `TRAINERS` is the dispatch table, as TRL pairs each
config with its trainer. Every trainer here checkpoints without pickle (`SafeCheckpointMixin`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from transformers import EarlyStoppingCallback, TrainerCallback

from services.training.job import ADAPTER_METHODS, TrainingJob
from services.training.methods import distill, preference, sft
from services.training.methods.data import (
    ANCHOR_COLUMN,
    answer_with_base,
    build_dataset,
    read_rows,
    rows_within_steps,
    self_replay,
)
from services.training.methods.loading import common_arguments, load_model, lora_config, use_cuda

# method → builder(job, the TrainingArguments every method shares, the trainer's shared keywords)
TRAINERS: dict[str, Callable[[TrainingJob, dict[str, Any], dict[str, Any]], Any]] = {
    "sft-lora": sft.build,
    "sft-qlora": sft.build,
    "sft-full": sft.build,
    "distill": distill.build,
    "dpo": preference.build_dpo,
    "ipo": preference.build_dpo,
    "kto": preference.build_kto,
}


def build_trainer(job: TrainingJob, tokenizer: Any, callbacks: list[TrainerCallback]) -> Any:
    """The job's data, model and callbacks prepared, then the trainer of its method."""
    recipe = job.recipe
    rows = read_rows(job.train_file)
    if not rows:
        raise ValueError(f"training split {job.train_file} holds no rows")
    every = len(rows)
    rows = rows_within_steps(rows, recipe, job.data_format)
    if len(rows) < every:
        print(
            f"max_steps {recipe.max_steps}: training on {len(rows)} of the split's {every} rows "
            f"(sampled with seed {recipe.seed}, each once)",
            file=sys.stderr,
        )
    evaluation = build_dataset(read_rows(job.eval_file), job)
    if evaluation is not None and recipe.early_stopping_patience is not None:
        callbacks = [
            *callbacks,
            EarlyStoppingCallback(early_stopping_patience=recipe.early_stopping_patience),
        ]
    model = load_model(job.base_dir, job, quantize=recipe.method == "sft-qlora")
    if use_cuda(job) and recipe.method != "sft-qlora":
        model.to("cuda")
    self_replay(model, tokenizer, rows, job)
    train = build_dataset(rows, job, anchors=job.data_format == "sft" and recipe.replay_anchor is not None)
    assert train is not None
    shared = {
        "model": model,
        "train_dataset": train,
        "eval_dataset": evaluation,
        "processing_class": tokenizer,
        "callbacks": callbacks,
        "peft_config": lora_config(recipe) if recipe.method in ADAPTER_METHODS else None,
    }
    return TRAINERS[recipe.method](job, common_arguments(job, evaluation is not None), shared)


__all__ = [
    "ANCHOR_COLUMN",
    "TRAINERS",
    "answer_with_base",
    "build_trainer",
    "read_rows",
    "rows_within_steps",
    "use_cuda",
]
