"""Rollout settings (`TUNELINE_ROLLOUT_*`; policy fields as `TUNELINE_ROLLOUT_POLICY__<FIELD>`)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.rollout import RolloutPolicy
from services.core.settings import CoreSettings


class RolloutSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TUNELINE_ROLLOUT_", env_nested_delimiter="__", extra="ignore"
    )

    policy: RolloutPolicy = Field(default_factory=RolloutPolicy, description="Steps, holds and breach limits")
    core: CoreSettings = Field(default_factory=CoreSettings)
