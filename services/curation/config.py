"""Curation settings (`TUNELINE_CURATION_*`)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.core.settings import CoreSettings


class CurationSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TUNELINE_CURATION_", extra="ignore")

    work_dir: str = Field(
        default=".tuneline/curation", description="Scratch space for fetched sources (cleaned per job)"
    )
    local_roots: tuple[str, ...] = Field(
        default=(),
        description="Directories a submission may name local paths under (default none: use "
        "`tuneline submit`, which uploads, or artifact:/s3:// URIs)",
    )
    remote_prefixes: tuple[str, ...] = Field(
        default=(),
        description="URL prefixes (e.g. s3://datasets/) a submission may read from with this "
        "service's credentials; default none",
    )
    core: CoreSettings = Field(default_factory=CoreSettings)
