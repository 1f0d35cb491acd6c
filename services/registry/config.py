"""Registry settings (`TUNELINE_REGISTRY_*`)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.core.settings import CoreSettings


class RegistrySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TUNELINE_REGISTRY_", extra="ignore")

    database_url: str = Field(
        default="sqlite:///.tuneline/registry.db",
        description="SQLAlchemy URL: sqlite:///path or postgresql+psycopg://user:pw@host/db",
    )
    db_pool_size: int = Field(default=5, ge=1)
    core: CoreSettings = Field(default_factory=CoreSettings)
