"""The registry's tables: the event log (append-only, unique ce-id) and its projections."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Float, Integer, String, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

JsonType = JSON().with_variant(JSONB(), "postgresql")
Id = BigInteger().with_variant(Integer(), "sqlite")  # SQLite autoincrements INTEGER only


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JsonType, list[Any]: JsonType}


class EventRecord(Base):
    """Every event ever seen, once. Never updated, never deleted."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    ce_id: Mapped[str] = mapped_column(String(200), unique=True)
    type: Mapped[str] = mapped_column(String(200), index=True)
    source: Mapped[str] = mapped_column(String(200))
    subject: Mapped[str] = mapped_column(String(500), index=True)
    time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    correlation_id: Mapped[str] = mapped_column(String(200), index=True)
    causation_id: Mapped[str | None] = mapped_column(String(200))
    tenant: Mapped[str] = mapped_column(String(63), index=True)
    traceparent: Mapped[str | None] = mapped_column(String(100))
    stream_seq: Mapped[int | None] = mapped_column(BigInteger)
    payload: Mapped[dict[str, Any]]
    outcome: Mapped[str] = mapped_column(String(40), default="projected")
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class DatasetRow(Base):
    __tablename__ = "datasets"

    submission_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(63), index=True)
    task: Mapped[str] = mapped_column(String(200))
    route: Mapped[str | None] = mapped_column(String(63))
    status: Mapped[str] = mapped_column(String(20))
    dataset_id: Mapped[str | None] = mapped_column(String(64), index=True)
    manifest: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    splits: Mapped[list[Any] | None] = mapped_column(JsonType)
    audit: Mapped[list[Any] | None] = mapped_column(JsonType)
    findings: Mapped[list[Any] | None] = mapped_column(JsonType)
    report: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    details: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    correlation_id: Mapped[str] = mapped_column(String(200), index=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class TrainingRunRow(Base):
    __tablename__ = "training_runs"

    run_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(63), index=True)
    dataset_id: Mapped[str | None] = mapped_column(String(64))
    method: Mapped[str | None] = mapped_column(String(20))
    base_name: Mapped[str | None] = mapped_column(String(200))
    base_sha256: Mapped[str | None] = mapped_column(String(64))
    recipe_sha256: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(20))
    step: Mapped[int | None] = mapped_column(Integer)
    total_steps: Mapped[int | None] = mapped_column(Integer)
    loss: Mapped[float | None] = mapped_column(Float)
    eval_loss: Mapped[float | None] = mapped_column(Float)
    tokens_per_second: Mapped[float | None] = mapped_column(Float)
    eta_seconds: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    version_id: Mapped[str | None] = mapped_column(String(40))
    correlation_id: Mapped[str] = mapped_column(String(200), index=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ModelVersionRow(Base):
    __tablename__ = "model_versions"

    version_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(63), index=True)
    route: Mapped[str | None] = mapped_column(String(63), index=True)
    status: Mapped[str] = mapped_column(String(20))
    produced_by: Mapped[str] = mapped_column(String(20))
    base_name: Mapped[str] = mapped_column(String(200))
    base_sha256: Mapped[str] = mapped_column(String(64), index=True)
    adapter_sha256: Mapped[str | None] = mapped_column(String(64))
    weights_sha256: Mapped[str | None] = mapped_column(String(64))
    method: Mapped[str | None] = mapped_column(String(20))
    quantization: Mapped[str] = mapped_column(String(20))
    dataset_id: Mapped[str | None] = mapped_column(String(64))
    run_id: Mapped[str | None] = mapped_column(String(200), index=True)
    model_ref: Mapped[dict[str, Any]]
    lineage: Mapped[dict[str, Any]]
    correlation_id: Mapped[str] = mapped_column(String(200), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class EvalReportRow(Base):
    __tablename__ = "eval_reports"

    ce_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    version_id: Mapped[str] = mapped_column(String(40), index=True)
    suites: Mapped[list[Any]]
    report: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class GateDecisionRow(Base):
    __tablename__ = "gate_decisions"

    ce_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    version_id: Mapped[str] = mapped_column(String(40), index=True)
    passed: Mapped[bool] = mapped_column(Boolean)
    gates: Mapped[list[Any]]
    policy: Mapped[dict[str, Any]]
    card: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class DeploymentRow(Base):
    """One row per rollout event: the history of what served on each route."""

    __tablename__ = "deployments"

    ce_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    route: Mapped[str] = mapped_column(String(63), index=True)
    tenant: Mapped[str] = mapped_column(String(63))
    rollout_id: Mapped[str | None] = mapped_column(String(200))
    event: Mapped[str] = mapped_column(String(40))
    candidate_version: Mapped[str] = mapped_column(String(40))
    stable_version: Mapped[str | None] = mapped_column(String(40))
    phase: Mapped[str | None] = mapped_column(String(20))
    traffic_percent: Mapped[float | None] = mapped_column(Float)
    detail: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class DeadLetterRow(Base):
    __tablename__ = "dead_letters"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    dlq_stream_seq: Mapped[int | None] = mapped_column(BigInteger, unique=True)
    original_subject: Mapped[str] = mapped_column(String(300), index=True)
    service: Mapped[str] = mapped_column(String(63))
    kind: Mapped[str] = mapped_column(String(40))
    reason: Mapped[str] = mapped_column(Text)
    ce_id: Mapped[str | None] = mapped_column(String(200))
    correlation_id: Mapped[str | None] = mapped_column(String(200), index=True)
    headers: Mapped[dict[str, Any]]
    body: Mapped[str] = mapped_column(Text)
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
