"""The job a training worker runs, and the messages it reports back (JSON lines on stdout)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.recipe import TrainingRecipe

DataFormat = Literal["sft", "preference", "feedback"]
Device = Literal["auto", "cpu", "cuda"]

METHOD_FORMATS: dict[str, tuple[DataFormat, ...]] = {
    "sft-lora": ("sft",),
    "sft-qlora": ("sft",),
    "sft-full": ("sft",),
    "distill": ("sft",),
    "dpo": ("preference",),
    "ipo": ("preference",),
    "kto": ("feedback", "preference"),  # paired preferences are unpaired for KTO
}


ADAPTER_METHODS = ("sft-lora", "sft-qlora", "dpo", "ipo", "kto", "distill")
"""Methods that train a LoRA adapter on a frozen base (the rest, sft-full, trains every weight)."""


class TrainingJob(BaseModel):
    """Everything the worker needs; written to a JSON file by the service, read by the worker."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    run_id: str
    recipe: TrainingRecipe
    data_format: DataFormat
    base_dir: str = Field(description="Local safetensors directory of the base model")
    teacher_dir: str | None = None
    train_file: str
    eval_file: str | None = None
    output_dir: str = Field(description="Trainer output: checkpoints and the final model")
    resume_from: str | None = Field(default=None, description="Local checkpoint directory to resume")
    artifact_root: str = Field(description="Artifact store the worker uploads checkpoints to")
    checkpoint_ref_key: str = Field(description="Named ref that points at the latest checkpoint")
    device: Device = "auto"


class WorkerMessage(BaseModel):
    """One line the worker prints: `kind` says which fields are set."""

    model_config = ConfigDict(extra="allow")

    kind: Literal["started", "progress", "checkpoint", "done", "cancelled", "error"]

    def line(self) -> str:
        return self.model_dump_json(exclude_none=True) + "\n"


def message(kind: str, **fields: Any) -> WorkerMessage:
    return WorkerMessage.model_validate({"kind": kind, **fields})
