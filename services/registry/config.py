"""Registry settings (`TUNELINE_REGISTRY_*`)."""

from __future__ import annotations

import json
from pathlib import Path

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
    http_host: str = Field(default="127.0.0.1", description="Dashboard bind address (0.0.0.0 in containers)")
    http_port: int = Field(default=0, ge=0, le=65535, description="Read-only dashboard and JSON API; 0: off")
    dashboard_keys: dict[str, str] = Field(
        default_factory=dict,
        description='Dashboard key → tenant, as JSON ({"dk-…": "acme"}); tenant "*" is an admin who '
        "sees every tenant. Without keys the dashboard answers 401 to everyone",
    )
    dashboard_keys_file: Path | None = Field(default=None, description="The same mapping in a JSON file")
    core: CoreSettings = Field(default_factory=CoreSettings)

    def dashboard_keys_all(self) -> dict[str, str]:
        keys = dict(self.dashboard_keys)
        if self.dashboard_keys_file is not None:
            keys.update(json.loads(self.dashboard_keys_file.read_text(encoding="utf-8")))
        return keys
