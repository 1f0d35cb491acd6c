"""Serving settings (`TUNELINE_SERVING_*`)."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.core.ml.models import InferenceDtype
from services.core.settings import CoreSettings


class Fault(BaseSettings):
    """Injected trouble for rollout drills: added latency and a share of failed requests."""

    delay_ms: float = Field(default=0.0, ge=0)
    error_rate: float = Field(default=0.0, ge=0, le=1)


class ServingSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TUNELINE_SERVING_", extra="ignore")

    host: str = Field(default="127.0.0.1", description="HTTP bind address (0.0.0.0 in containers)")
    port: int = Field(default=8000, ge=0, le=65535, description="HTTP port (0: any free port)")
    backend: Literal["transformers", "vllm"] = "transformers"
    device: str = Field(default="cpu", description="transformers backend: cpu or cuda")
    dtype: InferenceDtype = Field(
        default="auto",
        description="transformers backend weights' dtype: auto is bf16 on CUDA, fp32 on CPU; match the "
        "evaluation service's setting, so what is served is what was evaluated",
    )
    max_batch_size: int = Field(default=8, ge=1, description="Requests decoded in one generate call")
    batch_wait_ms: float = Field(default=10.0, ge=0, description="How long a batch waits to fill")
    max_resident_adapters: int = Field(default=4, ge=1, description="Adapters kept loaded per base (LRU)")
    max_resident_models: int = Field(default=2, ge=1, description="Full-weight versions kept loaded (LRU)")
    max_tokens_limit: int = Field(default=512, ge=1, description="Largest max_tokens a request may ask for")
    max_body_bytes: int = Field(
        default=4 * 1024 * 1024, ge=1024, description="Largest request body accepted (413 above it)"
    )
    window_s: float = Field(default=5.0, gt=0, description="serving.window period")
    work_dir: str = Field(default=".tuneline/serving", description="Fetched adapters and weights")
    replica: str = Field(
        default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}", description="This replica's name"
    )
    api_keys: dict[str, str] = Field(
        default_factory=dict, description='API key → tenant, as JSON: {"sk-…": "acme"}'
    )
    api_keys_file: Path | None = Field(default=None, description="The same mapping in a JSON file")
    allow_anonymous: bool = Field(
        default=False,
        description="Requests without a key act as the default tenant (a private single-tenant server "
        "only); off by default: without keys and without this, every request is refused",
    )
    faults: dict[str, Fault] = Field(
        default_factory=dict,
        description='Fault injection for drills: {"<route>/<role>" or "<version id>": {"delay_ms": …}}',
    )
    core: CoreSettings = Field(default_factory=CoreSettings)

    @field_validator("faults")
    @classmethod
    def _fault_keys(cls, value: dict[str, Fault]) -> dict[str, Fault]:
        for key in value:
            if not key.startswith("mv-") and key.rsplit("/", 1)[-1] not in ("stable", "candidate", "shadow"):
                raise ValueError(
                    f"fault key {key!r}: use <route>/<role> (stable|candidate|shadow) or a version id"
                )
        return value

    def tenants_by_key(self) -> dict[str, str]:
        keys = dict(self.api_keys)
        if self.api_keys_file is not None:
            import json

            keys.update(json.loads(self.api_keys_file.read_text(encoding="utf-8")))
        return keys
