"""Training settings (`TUNELINE_TRAINING_*`)."""

from __future__ import annotations

import sys
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.core.settings import CoreSettings


class TrainingSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TUNELINE_TRAINING_", extra="ignore")

    work_dir: str = Field(
        default=".tuneline/training", description="Per-run scratch space: data, checkpoints, worker logs"
    )
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="auto: CUDA when present")
    progress_interval_s: float = Field(
        default=1.0, ge=0, description="At most one training.progress per interval (evaluations always)"
    )
    cancel_poll_s: float = Field(default=0.5, gt=0, description="How often a run checks for a cancel")
    stop_grace_s: float = Field(
        default=15.0, gt=0, description="After a cancel, how long the worker may take to stop before SIGKILL"
    )
    ack_wait_s: float = Field(
        default=60.0, gt=0, description="AckWait of the dataset.approved consumer (heartbeats every third)"
    )
    python: str = Field(default=sys.executable, description="Interpreter that runs training workers")
    screen_timeout_s: float = Field(
        default=1800.0,
        gt=0,
        description="How long a run waits for evaluation to screen its checkpoints (checkpoint_selection)",
    )
    keep_work: bool = Field(default=False, description="Keep a finished run's scratch directory")
    core: CoreSettings = Field(default_factory=CoreSettings)
