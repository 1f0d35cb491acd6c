"""Evaluation settings (`TUNELINE_EVALUATION_*`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.core.ml.models import InferenceDtype
from services.core.settings import CoreSettings
from services.evaluation.engine import BATCH_SIZE


class EvaluationSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TUNELINE_EVALUATION_", extra="ignore")

    work_dir: str = Field(default=".tuneline/evaluation", description="Fetched adapters and weights")
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="auto: CUDA when present")
    suites: tuple[str, ...] = Field(
        default=(),
        description="Catalogue suites to run (shipped and registered, by name); empty: all of them. "
        "The target suite (the dataset's held-out split) and memorization (its canaries) always run",
    )
    batch_size: int = Field(default=BATCH_SIZE, ge=1, description="Prompts per generate() call")
    dtype: InferenceDtype = Field(
        default="auto",
        description="Weights' dtype: auto is bf16 on CUDA, fp32 on CPU; bf16 on a CPU with native bf16 "
        "generates about 1.5-2x faster. Use the serving service's setting, so what is evaluated is "
        "what is served; cached baselines are kept per dtype",
    )
    max_new_tokens: int = Field(default=128, ge=1, description="Upper bound on any answer's length")
    latency_tokens: int = Field(default=16, ge=1, description="Tokens generated per latency probe")
    latency_items: int = Field(default=8, ge=0, description="Latency probes per arm (0: no latency gate)")
    latency_rounds: int = Field(
        default=3,
        ge=1,
        description="Times each probe is timed per arm; its median is the probe's time, so one stall "
        "of a shared CPU does not become the p95",
    )
    bootstrap_samples: int = Field(default=2000, ge=100, description="Resamples per bootstrap interval")
    cache: bool = Field(default=True, description="Reuse baseline results by (base sha256, suite hash)")
    drift_interval_s: float = Field(
        default=86_400.0,
        ge=0,
        description="Publish drift.check-requested for every production route this often; 0: off",
    )
    ack_wait_s: float = Field(
        default=60.0, gt=0, description="AckWait of candidate.ready (heartbeats every third)"
    )
    core: CoreSettings = Field(default_factory=CoreSettings)

    def resolved_device(self) -> str:
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
