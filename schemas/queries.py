"""Request/reply contracts of the registry's queries (`tuneline.rpc.registry.<query>`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from schemas.events import Contract
from schemas.gate_policy import GatePolicy
from schemas.refs import ModelRef


class TimelineQuery(Contract):
    correlation_id: str = Field(min_length=1)


class TimelineEntry(Contract):
    position: int
    ce_id: str
    type: str
    source: str
    subject: str
    time: datetime
    recorded_at: datetime
    causation_id: str | None
    tenant: str
    summary: str


class Timeline(Contract):
    correlation_id: str
    entries: tuple[TimelineEntry, ...]


class ModelVersionsQuery(Contract):
    tenant: str | None = None
    route: str | None = None
    status: str | None = Field(
        default=None, description="candidate | evaluated | gates-passed | gates-failed | production | …"
    )
    limit: int = Field(default=100, ge=1, le=1000)


class ModelVersionSummary(Contract):
    version_id: str
    tenant: str
    route: str | None
    status: str
    produced_by: str
    base_name: str
    base_sha256: str
    adapter_sha256: str | None
    method: str | None
    quantization: str
    dataset_id: str | None
    run_id: str | None
    created_at: datetime


class ModelVersionList(Contract):
    versions: tuple[ModelVersionSummary, ...]


class ModelVersionQuery(Contract):
    version_id: str = Field(min_length=1)


class ModelVersionDetail(Contract):
    summary: ModelVersionSummary
    model_ref: dict[str, Any]
    lineage: dict[str, Any]
    history: tuple[TimelineEntry, ...]


class DatasetsQuery(Contract):
    tenant: str | None = None
    status: str | None = Field(default=None, description="submitted | approved | rejected")
    limit: int = Field(default=100, ge=1, le=1000)


class DatasetSummary(Contract):
    submission_id: str
    dataset_id: str | None
    tenant: str
    task: str
    route: str | None
    status: str
    correlation_id: str
    updated_at: datetime


class DatasetList(Contract):
    datasets: tuple[DatasetSummary, ...]


class DatasetQuery(Contract):
    id: str = Field(min_length=4, description="Dataset id (or a unique prefix of it) or submission id")


class DatasetDetail(Contract):
    summary: DatasetSummary
    manifest: dict[str, Any] | None
    report: dict[str, Any] | None
    splits: list[Any] | None
    audit: list[Any] | None
    findings: list[Any] | None
    details: dict[str, Any] | None


class RunsQuery(Contract):
    tenant: str | None = None
    status: str | None = Field(default=None, description="started | running | completed | failed | cancelled")
    limit: int = Field(default=100, ge=1, le=1000)


class RunSummary(Contract):
    run_id: str
    tenant: str
    dataset_id: str | None
    method: str | None
    base_name: str | None
    status: str
    step: int | None
    total_steps: int | None
    loss: float | None
    eval_loss: float | None
    tokens_per_second: float | None
    eta_seconds: float | None
    attempts: int
    version_id: str | None
    error: str | None
    correlation_id: str
    updated_at: datetime


class RunList(Contract):
    runs: tuple[RunSummary, ...]


class RunQuery(Contract):
    run_id: str = Field(min_length=4, description="Run id or a unique prefix of it")


class RunDetail(Contract):
    summary: RunSummary
    base_sha256: str | None
    recipe_sha256: str | None
    history: tuple[TimelineEntry, ...] = Field(description="The run's own events, progress excluded")


class EvalsQuery(Contract):
    version_id: str = Field(min_length=4, description="Model version id (or a unique prefix of it)")


class EvalRecord(Contract):
    ce_id: str
    suites: list[Any]
    report: dict[str, Any] | None
    created_at: datetime
    source: str | None = Field(default=None, description="ce-source of the eval.completed event")


class GateRecord(Contract):
    ce_id: str
    passed: bool
    source: str | None = Field(default=None, description="ce-source of the verdict event")
    gates: list[Any]
    policy: dict[str, Any]
    created_at: datetime
    notes: tuple[str, ...] = Field(default=(), description="Gates that did not apply, and why")


class EvalDetail(Contract):
    version_id: str
    evaluations: tuple[EvalRecord, ...] = Field(
        description="Oldest first: the first is the release evaluation"
    )
    decisions: tuple[GateRecord, ...]
    failures: tuple[dict[str, Any], ...] = Field(default=(), description="eval.failed payloads")


class CardQuery(Contract):
    version_id: str = Field(min_length=4)


class AdaptationCard(Contract):
    version_id: str
    card: dict[str, Any] = Field(description="The card as data (tuneline.adaptation-card/v1)")
    markdown: str


class SuiteInfo(Contract):
    name: str
    kind: str
    scorer: str
    origin: str
    sha256: str
    items: int


class SuiteList(Contract):
    suites: tuple[SuiteInfo, ...]


class SuiteRegistration(Contract):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    upload: str = Field(description="upload:<sha256>/<name> of the JSONL file (sent by the CLI)")
    scorer: str
    kind: str = "custom"


class SuiteScoreRequest(Contract):
    """Score one version on one suite, as evaluation scores it (merging's greedy-soup trials)."""

    candidate: ModelRef
    suite: str = Field(
        min_length=1, description="A catalogue suite, or target (the dataset's held-out split)"
    )
    policy: GatePolicy = Field(default_factory=GatePolicy, description="How the target suite is scored")


class SuiteScore(Contract):
    suite: str
    score: float = Field(description="The candidate's score in points (0-100)")


class QueryError(Contract):
    error: str
    code: str = Field(description="not-found | bad-request | internal")
