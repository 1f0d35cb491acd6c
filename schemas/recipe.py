"""The training recipe carried from submission to training: method, base, LoRA and optimiser settings."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator

from schemas.checkpoints import CheckpointSelection
from schemas.events import Contract
from schemas.refs import Name, TrainingMethod


class LoraSettings(Contract):
    rank: int = Field(default=16, ge=1, le=1024, description="LoRA rank r")
    alpha: float = Field(default=32.0, gt=0, description="LoRA alpha (scaling = alpha / r)")
    dropout: float = Field(default=0.05, ge=0, lt=1, description="LoRA dropout")
    target_modules: tuple[str, ...] = Field(
        default=("q_proj", "k_proj", "v_proj", "o_proj"),
        min_length=1,
        description="Module names to adapt; checked against the base model before training",
    )


class DistillSettings(Contract):
    teacher: Name = Field(
        description="Teacher model: a built-in name, artifact:<key> or HF directory; it must share the "
        "student's tokenizer (soft labels are compared token by token)"
    )
    temperature: float = Field(default=2.0, gt=0, description="Softmax temperature of soft labels")
    alpha: float = Field(default=0.5, ge=0, le=1, description="Weight of the soft-label loss")


class ReplayAnchorSettings(Contract):
    alpha: float = Field(
        default=1.0,
        ge=0,
        le=1,
        description="Weight of the KL term on self-replay rows; 1 - alpha goes to cross-entropy on the "
        "base's greedy answer",
    )
    task_alpha: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="Weight of the same KL term on every other row (0: the task keeps plain cross-entropy)",
    )
    temperature: float = Field(default=1.0, gt=0, description="Softmax temperature of the base's soft labels")
    prompt_alpha: float = Field(
        default=0.0,
        ge=0,
        description="Weight of the same KL term at the prompt positions of every row (the text the model "
        "reads but is not trained to write), summed and divided by the answer-token count like the rest "
        "of the loss: holds the adapter's reading of any text, task prompts included, to the base's",
    )


class TrainingRecipe(Contract):
    """What to train and how. Every field has a documented default."""

    method: TrainingMethod = Field(default="sft-lora", description="Training algorithm")
    base_model: Name = Field(description="Base model: HF directory, artifact key or s3:// URI")
    lora: LoraSettings = Field(default_factory=LoraSettings, description="Ignored for sft-full")
    learning_rate: float = Field(default=2e-4, gt=0, lt=1)
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "cosine"
    warmup_ratio: float = Field(default=0.03, ge=0, lt=1)
    epochs: float = Field(default=1.0, gt=0)
    max_steps: int = Field(default=-1, ge=-1, description="-1: run `epochs` epochs")
    batch_size: int = Field(default=4, ge=1)
    gradient_accumulation: int = Field(default=1, ge=1)
    max_seq_len: int = Field(default=512, ge=16)
    packing: bool = Field(default=False, description="Pack several short rows into each sequence")
    gradient_checkpointing: bool = Field(
        default=False,
        description="Recompute activations in the backward pass: less memory, about a third slower",
    )
    precision: Literal["auto", "bf16", "fp32"] = Field(
        default="auto",
        description="auto: bf16 weights on a CUDA GPU that supports them, fp32 on CPU. bf16: the same on "
        "CUDA; on CPU the weights stay fp32 and the forward and backward passes run under bf16 autocast "
        "(about 1.5x faster on CPUs with native bf16, such as AVX512-BF16 or AMX). fp32: fp32 throughout",
    )
    eval_steps: int = Field(default=50, ge=1, description="Evaluate every N optimiser steps")
    early_stopping_patience: int | None = Field(
        default=None, ge=1, description="Stop after N evaluations without a lower eval loss (None: never)"
    )
    checkpoint_steps: int = Field(
        default=50,
        ge=1,
        description="Save a resumable checkpoint to the artifact store every N optimiser steps",
    )
    beta: float = Field(
        default=0.1, gt=0, description="DPO/KTO preference strength; for IPO the regulariser tau"
    )
    seed: int = 42
    distill: DistillSettings | None = None
    replay_anchor: ReplayAnchorSettings | None = Field(
        default=None,
        description="On self-replay rows (mix `answers: base-model`), train toward the base model's whole "
        "next-token distribution (KL against the base, which is the same model with the adapter switched "
        "off) rather than only its greedy answer; other rows keep cross-entropy. sft-lora and sft-qlora "
        "only, without packing",
    )

    checkpoint_selection: CheckpointSelection | None = Field(
        default=None,
        description="Screen every checkpoint on small capability and harmful-prompt samples against the "
        "base and release the one with the lowest validation loss among those that show no harm (the "
        "task peak is not always the release). Checkpoints are then saved at every evaluation",
    )

    @model_validator(mode="after")
    def _method_settings(self) -> Self:
        if self.method == "distill" and self.distill is None:
            raise ValueError("method 'distill' needs a `distill` block naming the teacher model")
        if self.replay_anchor is not None:
            if self.method not in ("sft-lora", "sft-qlora"):
                raise ValueError(
                    f"replay_anchor needs method sft-lora or sft-qlora (the base is the model with its "
                    f"adapter switched off), not {self.method!r}: drop replay_anchor or change the method"
                )
            if self.packing:
                raise ValueError(
                    "replay_anchor weights each row by whether it is self-replay, and packing merges rows: "
                    "set packing: false or drop replay_anchor"
                )
        return self
