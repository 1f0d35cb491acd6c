"""Settings shared by every service (`TUNELINE_*` environment variables)."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class NatsSettings(BaseSettings):
    """How to reach NATS: URL, credentials (one kind at most) and TLS."""

    model_config = SettingsConfigDict(env_prefix="TUNELINE_NATS_", extra="ignore")

    url: str = Field(default="nats://127.0.0.1:4222", description="Comma-separated server URLs")
    user: str | None = None
    password: SecretStr | None = None
    token: SecretStr | None = None
    creds_file: Path | None = Field(default=None, description="JWT .creds file")
    nkey_seed_file: Path | None = Field(default=None, description="NKey seed file")
    tls_ca_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_hostname: str | None = None
    connect_timeout_s: int = Field(default=5, ge=1)
    inbox_prefix: str | None = Field(
        default=None,
        description="Reply subjects of this client; default `_INBOX.<user>` (or `.<service>`), "
        "the only inbox its NATS permissions let it read",
    )

    @model_validator(mode="after")
    def _one_credential_kind(self) -> NatsSettings:
        kinds = [
            name
            for name, present in (
                ("user/password", self.user is not None),
                ("token", self.token is not None),
                ("creds_file", self.creds_file is not None),
                ("nkey_seed_file", self.nkey_seed_file is not None),
            )
            if present
        ]
        if len(kinds) > 1:
            raise ValueError(
                f"NATS credentials: set one of user/password, token, creds_file or "
                f"nkey_seed_file, not {' and '.join(kinds)}"
            )
        if (self.user is None) != (self.password is None):
            raise ValueError("NATS credentials: TUNELINE_NATS_USER and _PASSWORD go together")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("NATS TLS: TUNELINE_NATS_TLS_CERT_FILE and _KEY_FILE go together")
        return self

    @property
    def servers(self) -> list[str]:
        return [u.strip() for u in self.url.split(",") if u.strip()]

    @property
    def per_user(self) -> bool:
        """Connected as one NATS identity of the access table (user, .creds or NKey), not a shared
        token or no auth: then subject permissions say who may have published each event."""
        return self.user is not None or self.creds_file is not None or self.nkey_seed_file is not None

    @property
    def uses_tls(self) -> bool:
        return bool(self.tls_ca_file or self.tls_cert_file) or any(
            s.startswith("tls://") for s in self.servers
        )


class DeliverySettings(BaseSettings):
    """At-least-once delivery knobs shared by every subscriber."""

    model_config = SettingsConfigDict(env_prefix="TUNELINE_DELIVERY_", extra="ignore")

    max_deliver: int = Field(default=5, ge=1, description="Attempts before dead-lettering")
    ack_wait_s: float = Field(default=30.0, gt=0, description="JetStream AckWait")
    backoff_s: tuple[float, ...] = Field(
        default=(1.0, 5.0, 15.0, 30.0), description="Nak delays for attempts 1, 2, … (last repeats)"
    )
    fetch_batch: int = Field(default=16, ge=1)
    fetch_timeout_s: float = Field(default=5.0, gt=0)
    consumer_check_s: float = Field(
        default=10.0, gt=0, description="How often a service checks and restores its durable consumers"
    )

    def for_long_work(self, ack_wait_s: float) -> DeliverySettings:
        """One message per fetch with its own AckWait, kept alive by heartbeats: a second fetched
        message would otherwise wait unheartbeated behind hours of work and be redelivered."""
        return self.model_copy(update={"fetch_batch": 1, "ack_wait_s": ack_wait_s})

    def backoff_for(self, attempt: int) -> float:
        if not self.backoff_s:
            return 0.0
        return self.backoff_s[min(attempt - 1, len(self.backoff_s) - 1)]


class StreamSettings(BaseSettings):
    """Limits of the TUNELINE stream (file storage, limits retention)."""

    model_config = SettingsConfigDict(env_prefix="TUNELINE_STREAM_", extra="ignore")

    max_age_days: float = Field(default=30.0, gt=0)
    max_bytes: int = Field(default=10 * 1024**3, gt=0)
    duplicate_window_s: float = Field(default=600.0, gt=0)
    replicas: int = Field(default=1, ge=1, le=5, description="3 on a NATS cluster")
    dlq_max_age_days: float = Field(default=90.0, gt=0)
    manage: bool = Field(
        default=True,
        description="Bring existing streams' limits up to date at startup; false: only create missing "
        "ones (every service but the registry under NATS permissions)",
    )


class TelemetrySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TUNELINE_", extra="ignore")

    otlp_endpoint: str | None = Field(
        default=None, description="OTLP/HTTP traces endpoint, e.g. http://collector:4318"
    )
    metrics_port: int = Field(default=0, ge=0, le=65535, description="0: no /metrics server")
    log_level: str = "INFO"


class CoreSettings(BaseSettings):
    """What every service needs: NATS, delivery, stream limits, telemetry, artifacts."""

    model_config = SettingsConfigDict(env_prefix="TUNELINE_", extra="ignore")

    nats: NatsSettings = Field(default_factory=NatsSettings)
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)
    stream: StreamSettings = Field(default_factory=StreamSettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    artifact_root: str = Field(
        default=".tuneline/artifacts", description="Local directory or s3://bucket/prefix"
    )
    tenant: str = Field(default="default", description="Tenant of events this process publishes")
    model_cache: str = Field(
        default_factory=lambda: str(
            Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tuneline" / "models"
        ),
        description="Where base models are converted/built once and kept (shared by every data dir)",
    )
    model_local_roots: tuple[str, ...] = Field(
        default=(),
        description="Directories under which a submission may name a base model by local path "
        "(default none: built-in names and artifact:<key> only)",
    )
