"""The job a training worker runs, and the messages it reports back (JSON lines on stdout)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from schemas.recipe import TrainingRecipe
from schemas.refs import ArtifactRef

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

RESUMABLE_STATE = (
    "optimizer.safetensors",
    "scheduler.json",
    "rng_state.safetensors",
    "scaler.json",
    "trainer_state.json",
)
"""What a checkpoint holds beyond the model: needed to resume, not to serve (see checkpoints.py)."""


def portable_adapter_config(folder: Path, base_model: str) -> None:
    """The adapter names its base by the recipe's name, not this machine's cache path."""
    path = folder / "adapter_config.json"
    config = json.loads(path.read_text())
    config["base_model_name_or_path"] = base_model
    path.write_text(json.dumps(config, indent=2, sort_keys=True))


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


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def line(self) -> str:
        return self.model_dump_json(exclude_none=True) + "\n"


class Started(_Message):
    kind: Literal["started"] = "started"
    total_steps: int
    resumed_from_step: int | None = None


class Progress(_Message):
    """A training log (loss) or an evaluation (eval_loss) at a step."""

    kind: Literal["progress"] = "progress"
    step: int
    total_steps: int
    epoch: float = 0.0
    loss: float | None = None
    eval_loss: float | None = None
    learning_rate: float | None = None
    tokens_per_second: float | None = None
    eta_seconds: float | None = None


class Checkpoint(_Message):
    """A checkpoint already uploaded to the artifact store (the named ref points at it)."""

    kind: Literal["checkpoint"] = "checkpoint"
    step: int
    tree: ArtifactRef


class Done(_Message):
    kind: Literal["done"] = "done"
    model_dir: str
    steps: int
    first_loss: float | None = None
    last_loss: float | None = None
    train_loss: float | None = None
    final_eval_loss: float | None = Field(default=None, description="Validation loss at the last step")
    best_at_end: bool = Field(
        default=False, description="The final model is the best checkpoint's (early stopping)"
    )
    runtime_s: float
    tokens: float = 0.0
    tokens_per_second: float | None = None
    peak_memory_mb: float | None = None

    def summary(self) -> dict[str, float | int | None]:
        """What the run control records beside the candidate."""
        return self.model_dump(
            include={
                "steps",
                "first_loss",
                "last_loss",
                "runtime_s",
                "tokens",
                "tokens_per_second",
                "peak_memory_mb",
            }
        )


class Cancelled(_Message):
    kind: Literal["cancelled"] = "cancelled"
    step: int | None = None


class Failed(_Message):
    kind: Literal["error"] = "error"
    reason: str = "training-error"
    message: str = "training failed"


WorkerMessage = Annotated[
    Started | Progress | Checkpoint | Done | Cancelled | Failed, Field(discriminator="kind")
]
"""One line the worker prints, tagged by `kind`; `done`, `cancelled` and `error` are final."""
WORKER_MESSAGES: TypeAdapter[WorkerMessage] = TypeAdapter(WorkerMessage)
FINAL = (Done, Cancelled, Failed)


def parse(line: str) -> WorkerMessage | None:
    """A worker line as its message, or None for a line that is not one (logged by the runner)."""
    try:
        return WORKER_MESSAGES.validate_json(line)
    except ValueError:
        return None
