"""Training-run events: start, progress, failure, cancellation."""

from __future__ import annotations

from pydantic import Field

from schemas.events import Event
from schemas.refs import BaseModelRef, Name, Sha256, TrainingMethod


class TrainingStarted(Event):
    event_type = "training.started"

    run_id: str = Field(min_length=1)
    dataset_id: Sha256
    method: TrainingMethod
    base: BaseModelRef
    recipe_sha256: Sha256
    attempt: int = Field(default=1, ge=1, description="Delivery attempt that started this")
    resumed_from_step: int | None = Field(default=None, ge=0)

    def entity_id(self) -> str:
        return self.run_id


class TrainingProgress(Event):
    event_type = "training.progress"

    run_id: str
    step: int = Field(ge=0)
    total_steps: int = Field(ge=0)
    epoch: float = Field(ge=0)
    loss: float | None = None
    eval_loss: float | None = None
    learning_rate: float | None = None
    tokens_per_second: float | None = Field(default=None, ge=0)
    eta_seconds: float | None = Field(default=None, ge=0)

    def entity_id(self) -> str:
        return self.run_id


class TrainingFailed(Event):
    event_type = "training.failed"

    run_id: str
    error: str = Field(min_length=1, description="What went wrong and what to do about it")
    reason: Name = Field(description="Machine-readable cause, e.g. recipe-invalid, cuda-missing")
    step: int | None = Field(default=None, ge=0)

    def entity_id(self) -> str:
        return self.run_id


class TrainingCancelRequested(Event):
    event_type = "training.cancel-requested"

    run_id: str
    requested_by: str = "operator"
    reason: str = ""

    def entity_id(self) -> str:
        return self.run_id


class TrainingCancelled(Event):
    event_type = "training.cancelled"

    run_id: str
    step: int | None = Field(default=None, ge=0)
    reason: str = ""

    def entity_id(self) -> str:
        return self.run_id
