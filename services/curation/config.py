"""Curation settings (`TUNELINE_CURATION_*`)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.core.settings import CoreSettings
from services.curation.sources import SourceLimits


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
    max_source_bytes: int = Field(
        default=2 * 1024**3, ge=1, description="Largest source file (or unpacked directory) read"
    )
    max_rows: int = Field(default=1_000_000, ge=1, description="Most rows read from one source")
    max_row_bytes: int = Field(
        default=1024 * 1024, ge=1, description="Largest row; a larger one is a finding, never parsed"
    )
    max_expansion: float = Field(
        default=20.0, gt=1, description="Parquet: most bytes of rows per byte on disk (decompression bombs)"
    )
    core: CoreSettings = Field(default_factory=CoreSettings)

    def source_limits(self) -> SourceLimits:
        return SourceLimits(
            max_source_bytes=self.max_source_bytes,
            max_rows=self.max_rows,
            max_row_bytes=self.max_row_bytes,
            max_expansion=self.max_expansion,
        )
