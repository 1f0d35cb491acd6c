"""Merging settings (`TUNELINE_MERGING_*`)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.core.settings import CoreSettings


class MergingSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TUNELINE_MERGING_", extra="ignore")

    work_dir: str = Field(default=".tuneline/merging", description="Fetched inputs and merge outputs")
    tolerance: float = Field(
        default=1e-3,
        gt=0,
        description="Largest merged-vs-unmerged logit difference accepted (merge-into-base)",
    )
    trial_timeout_s: float = Field(
        default=1800.0, gt=0, description="How long a greedy-soup trial may take to score (evaluation RPC)"
    )
    ack_wait_s: float = Field(
        default=60.0, gt=0, description="AckWait of merge.requested (heartbeats every third)"
    )
    core: CoreSettings = Field(default_factory=CoreSettings)
